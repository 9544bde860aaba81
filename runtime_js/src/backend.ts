/**
 * The model executor interface. The engine (tokenizer, sampling, streaming, the
 * OpenAI-shaped API) knows nothing about how a forward pass runs; a Backend runs it.
 * The WebGPU and Wasm executors interpret the bundle's plan behind this interface.
 */
import type { BundleLoader, ProgressCallback } from "./loader.js";
import type { Manifest } from "./manifest.js";

export interface BackendLoadOptions {
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface Backend {
  readonly name: string;

  /** What to show a user once loaded, e.g. "WebGPU f16" (the demo's badge). */
  readonly label?: string;

  /**
   * Sets up the device (rejecting with a {@link BackendUnsupportedError} when this
   * environment cannot run this bundle, before any weight is fetched), then streams the weights with `loader.loadShards(sink)` and prepares
   * the kernels. Must not run anything on weights before `loadShards` resolved (see
   * ShardSink), and must free what it allocated if it rejects.
   */
  load(manifest: Manifest, loader: BundleLoader, opts?: BackendLoadOptions): Promise<void>;

  /**
   * Most positions the KV cache holds; defaults to the manifest's
   * `memory.context_window` when absent.
   */
  readonly contextWindow?: number;

  /**
   * Runs `tokens` at positions `pastLen .. pastLen + tokens.length - 1`. KV cache
   * positions below `pastLen` are kept (they hold an earlier prefix of the same
   * sequence); those at or above it are overwritten. Chunking long prompts is the
   * backend's business. Resolves to the logits of the last token (vocab_size floats);
   * the array may be reused by the next call, so read it before calling again.
   */
  prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array>;

  /** Runs one token at position `pos` (= tokens in the cache); resolves to its logits. */
  decode(token: number, pos: number): Promise<Float32Array>;

  /** Forgets the KV cache. */
  reset(): void;

  /** Frees device memory. The backend is not used afterwards. */
  unload(): void | Promise<void>;
}

export type BackendFactory = () => Backend | Promise<Backend>;

const registry = new Map<string, BackendFactory>();

/** Makes a backend available by name to `createEngine(url, {backend: name})`. */
export function registerBackend(name: string, factory: BackendFactory): void {
  registry.set(name, factory);
}

/**
 * Thrown by `Backend.load` when this environment cannot run the bundle at all (no
 * WebGPU, a device below the bundle's limits, a missing feature). It is thrown before
 * any weight is fetched, so automatic selection moves on to the next backend.
 */
export class BackendUnsupportedError extends Error {
  override name = "BackendUnsupportedError";
}

/** Preference when no backend is named (or "auto"). */
const DEFAULT_ORDER = ["webgpu", "wasm"];

export type BackendChoice = Backend | BackendFactory | string | undefined;

/** The backends to try for a choice, in order: one, or every registered one for "auto". */
export function backendCandidates(choice: BackendChoice): BackendFactory[] {
  if (choice && typeof choice === "object") return [() => choice];
  if (typeof choice === "function") return [choice];
  if (choice && choice !== "auto") {
    const factory = registry.get(choice);
    if (!factory) {
      const known = [...registry.keys()];
      throw new Error(`no backend named "${choice}" (available: ${known.join(", ") || "none"})`);
    }
    return [factory];
  }
  const names = [...new Set([...DEFAULT_ORDER.filter((n) => registry.has(n)), ...registry.keys()])];
  if (!names.length) throw new Error("no backend is available; pass {backend} to createEngine");
  return names.map((name) => registry.get(name)!);
}

/**
 * Creates and loads the backend of a choice. With "auto" (or nothing), each registered
 * backend is tried in preference order and the first whose `load` does not reject
 * with {@link BackendUnsupportedError} is kept; if none can run the bundle, the error
 * names every backend's reason. Other load errors (a broken shard, an abort) reject
 * at once. A backend that rejects is unloaded.
 */
export async function loadBackend(
  choice: BackendChoice,
  manifest: Manifest,
  loader: BundleLoader,
  opts: BackendLoadOptions & { onTry?: (name: string) => void } = {},
): Promise<Backend> {
  const candidates = backendCandidates(choice);
  const reasons: string[] = [];
  for (const create of candidates) {
    opts.signal?.throwIfAborted();
    const backend = await create();
    opts.onTry?.(backend.name);
    try {
      await backend.load(manifest, loader, { signal: opts.signal, onProgress: opts.onProgress });
      return backend;
    } catch (e) {
      await Promise.resolve(backend.unload()).catch(() => {});
      if (!(e instanceof BackendUnsupportedError) || candidates.length === 1) throw e;
      reasons.push(`${backend.name}: ${e.message}`);
    }
  }
  throw new BackendUnsupportedError(`no backend is available that can run this bundle here (${reasons.join("; ")})`);
}
