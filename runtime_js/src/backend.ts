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

  /**
   * Sets up the device (rejecting with a clear message when it cannot run this
   * bundle), then streams the weights with `loader.loadShards(sink)` and prepares
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

/** Preference when no backend is named. */
const DEFAULT_ORDER = ["webgpu", "wasm"];

export async function resolveBackend(choice: Backend | BackendFactory | string | undefined): Promise<Backend> {
  if (choice && typeof choice === "object") return choice;
  if (typeof choice === "function") return choice();
  const names = choice ? [choice] : [...DEFAULT_ORDER.filter((n) => registry.has(n)), ...registry.keys()];
  const factory = names.map((n) => registry.get(n)).find((f) => f);
  if (!factory) {
    const known = [...registry.keys()];
    throw new Error(
      choice
        ? `no backend named "${choice}" (available: ${known.join(", ") || "none"})`
        : "no backend is available; pass {backend} to createEngine",
    );
  }
  return factory();
}
