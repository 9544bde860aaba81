/**
 * Where "auto" remembers which backend ran a bundle fastest on this machine, so that
 * the timing runs once per bundle and device: keyed by the manifest's sha256 and each
 * candidate backend's name and device (e.g. the GPU adapter). Pages keep it in
 * localStorage; workers and Node in memory, for the life of the process.
 */

export interface RememberedChoice {
  name: string;
  /** ms per decode step, per backend name */
  decodeMs: Record<string, number>;
}

export interface BackendChoiceStore {
  get(key: string): RememberedChoice | null;
  set(key: string, choice: RememberedChoice): void;
}

const PREFIX = "llmpack-backend:";

export class MemoryChoiceStore implements BackendChoiceStore {
  private readonly map = new Map<string, RememberedChoice>();
  get(key: string): RememberedChoice | null {
    return this.map.get(key) ?? null;
  }
  set(key: string, choice: RememberedChoice): void {
    this.map.set(key, choice);
  }
}

export class LocalStorageChoiceStore implements BackendChoiceStore {
  constructor(private readonly storage: Storage) {}

  get(key: string): RememberedChoice | null {
    try {
      const v = JSON.parse(this.storage.getItem(PREFIX + key) ?? "null") as RememberedChoice | null;
      return v && typeof v.name === "string" && typeof v.decodeMs === "object" && v.decodeMs ? v : null;
    } catch {
      return null;
    }
  }

  set(key: string, choice: RememberedChoice): void {
    try {
      this.storage.setItem(PREFIX + key, JSON.stringify(choice));
    } catch {
      // (storage full or disabled: measured again next time)
    }
  }
}

let fallbackStore: MemoryChoiceStore | null = null;

/** localStorage where the page has it, else one in-memory store per process. */
export function defaultChoiceStore(): BackendChoiceStore {
  try {
    const storage = (globalThis as { localStorage?: Storage }).localStorage;
    if (storage) return new LocalStorageChoiceStore(storage);
  } catch {
    // (reading localStorage throws where storage is blocked)
  }
  fallbackStore ??= new MemoryChoiceStore();
  return fallbackStore;
}
