/**
 * The model executor interface. The engine (tokenizer, sampling, streaming, the
 * OpenAI-shaped API) knows nothing about how a forward pass runs; a Backend runs it.
 * The WebGPU and Wasm executors interpret the bundle's plan behind this interface.
 */
import { type BackendChoiceStore, type RememberedChoice, defaultChoiceStore } from "./backend_choice.js";
import type { BundleLoader, ProgressCallback } from "./loader.js";
import type { Manifest } from "./manifest.js";
import type { TopCandidates } from "./sampler.js";

export interface BackendLoadOptions {
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
  /**
   * Reject a software (fallback) device, such as a WebGPU adapter that is SwiftShader or
   * llvmpipe, with a {@link SoftwareDeviceError} ("auto" asks this first, while another
   * backend may run the bundle faster on the CPU)
   */
  refuseSoftware?: boolean;
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

  /**
   * Most recent KV cache positions a call may roll back: a prefill or decode at `pastLen` when the
   * cache holds `cached` positions needs `cached - pastLen <= kvRewindLimit` (a sliding
   * window's ring buffer has overwritten older ones). Absent: any rollback works. From
   * plan.json's `kv_rewind_limit`.
   */
  readonly kvRewindLimit?: number;

  /**
   * Runs one token at position `pos`; resolves to its logits. `pos` is the tokens in the
   * cache, or fewer (a rollback, within kvRewindLimit, as prefill's): the step overwrites
   * the positions from `pos`.
   */
  decode(token: number, pos: number): Promise<Float32Array>;

  /**
   * Optional greedy step on the device: true when `decodeArgmax` can run (a WebGPU
   * backend whose plan has the "argmax" entry). The session uses it for greedy requests
   * that need no logits on the CPU (no processors, penalties, logit_bias or logprobs).
   */
  readonly argmaxOnDevice?: boolean;
  /** `decode`, then resolves to the largest logit's id (lowest id on ties) instead of the logits. */
  decodeArgmax?(token: number, pos: number): Promise<number>;

  /** Most tokens one `verify` call takes (plan.json's "verify" entry max_seq_len); absent: the backend has no verify. */
  readonly verifyMaxTokens?: number;
  /**
   * Runs `tokens` at positions pastLen .. pastLen + tokens.length - 1 like `prefill` (writing their
   * KV rows; positions below pastLen kept), in one batched step, and resolves to the logits of EVERY token:
   * tokens.length × vocab floats, row i = the logits after tokens[i]. The array may be reused by the next call.
   */
  verify?(tokens: Int32Array, pastLen: number): Promise<Float32Array>;
  /**
   * Optional greedy verify on the device: true when `verifyArgmax` can run (a WebGPU backend
   * whose plan has the "verify_argmax" entry). The session uses it for speculative steps of
   * the requests that take the `decodeArgmax` path.
   */
  readonly verifyArgmaxOnDevice?: boolean;
  /** `verify`, then resolves to every row's largest logit's id (lowest id on ties) instead of the rows. */
  verifyArgmax?(tokens: Int32Array, pastLen: number): Promise<Int32Array>;
  /**
   * Optional top-k candidates on the device: K of `decodeTopK` (a WebGPU backend whose plan
   * has the "topk" entry); absent or 0: none. The session uses it for top-k / top-p requests
   * that the K largest logits can answer (Sampler.topCandidates).
   */
  readonly topKOnDevice?: number;
  /**
   * `decode`, then resolves to the K largest logits and the softmax sum at 1 / invTemperature
   * over the vocabulary instead of the logits (which stay on the device).
   */
  decodeTopK?(token: number, pos: number, invTemperature: number): Promise<TopCandidates>;
  /** After `decodeTopK`: that step's logits, when its candidates could not decide the token. */
  readLastLogits?(): Promise<Float32Array>;

  /** Forgets the KV cache. */
  reset(): void;

  /** Frees device memory. The backend is not used afterwards. */
  unload(): void | Promise<void>;

  /**
   * Optional two-step load, which "auto" uses to time backends before any weight is
   * fetched: `prepare` does what `load` does up to the weights (device or memory,
   * buffers, kernels; a BackendUnsupportedError when it cannot run the bundle),
   * `loadWeights` the rest. `load` = `prepare` + `loadWeights`.
   */
  prepare?(manifest: Manifest, loader: BundleLoader, opts?: BackendLoadOptions): Promise<void>;
  loadWeights?(opts?: BackendLoadOptions): Promise<void>;

  /**
   * After `prepare`, before `loadWeights`: the median time of `steps` decode steps, in
   * ms, run on the zero-filled weights (the same work as with the real ones).
   */
  timeDecode?(steps: number): Promise<number>;

  /** What this backend runs on, for remembering measurements (e.g. the GPU adapter's name). */
  readonly deviceKey?: string;
}

/** Which backend runs a model, and why it was chosen (`engine.backendInfo`). */
export interface BackendInfo {
  name: string;
  /** e.g. "WebGPU f16", "Wasm SIMD, 4 threads" */
  label: string;
  reason: string;
  /** ms per decode step, per backend name, when the choice was measured (now or at an earlier load) */
  decodeMs?: Record<string, number>;
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

/** The device is a software renderer (refused when {@link BackendLoadOptions.refuseSoftware} is set). */
export class SoftwareDeviceError extends BackendUnsupportedError {
  override name = "SoftwareDeviceError";
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

/** Decode steps timed per backend (after one untimed step) when "auto" measures. */
export const TIMED_DECODE_STEPS = 3;

export interface ChooseOptions extends BackendLoadOptions {
  onTry?: (name: string) => void;
  /** where measured choices are remembered (default: localStorage in pages, else memory) */
  choices?: BackendChoiceStore;
}

/** Creates and loads the backend of a choice; see {@link chooseBackend}. */
export async function loadBackend(choice: BackendChoice, manifest: Manifest, loader: BundleLoader, opts: ChooseOptions = {}): Promise<Backend> {
  return (await chooseBackend(choice, manifest, loader, opts)).backend;
}

/**
 * Creates and loads the backend of a choice, and says why it runs.
 *
 * A named backend (or object, or factory) is loaded as asked. With "auto" (or nothing),
 * every registered backend is prepared in preference order (WebGPU, Wasm, others), a
 * software device (SwiftShader, llvmpipe) refused while another backend may run:
 * - none can run the bundle: a software device if there was one, else a
 *   BackendUnsupportedError naming every backend's reason;
 * - one can: that one;
 * - several can: the one that ran a decode step fastest, timed on zero weights. The
 *   choice is remembered for this bundle (manifest sha256) under the first backend that
 *   can run it and its device: a later load prepares that one, then only the one chosen.
 * Only then are the weights fetched, into the chosen backend alone; the others are
 * unloaded. Backends without `prepare` are loaded whole when nothing before them could
 * run the bundle (the old first-that-loads rule). Other errors (a broken shard, an
 * abort) reject at once; a backend that rejects is unloaded.
 */
export async function chooseBackend(
  choice: BackendChoice,
  manifest: Manifest,
  loader: BundleLoader,
  opts: ChooseOptions = {},
): Promise<{ backend: Backend; info: BackendInfo }> {
  const loadOpts: BackendLoadOptions = { signal: opts.signal, onProgress: opts.onProgress };
  const candidates = backendCandidates(choice);
  const info = (backend: Backend, reason: string, decodeMs?: Record<string, number>): BackendInfo => ({
    name: backend.name,
    label: backend.label ?? backend.name,
    reason,
    ...(decodeMs ? { decodeMs } : {}),
  });
  if (choice !== undefined && choice !== "auto") {
    const backend = await candidates[0]!();
    opts.onTry?.(backend.name);
    await loadOrUnload(backend, () => backend.load(manifest, loader, loadOpts));
    return { backend, info: info(backend, typeof choice === "string" ? `"${choice}" was asked for` : "a backend was passed to createEngine") };
  }

  const store = opts.choices ?? defaultChoiceStore();
  // (measurements are kept under the first backend that can run the bundle and its device)
  const keyOf = (b: Backend) => `${loader.manifestSha256}|${b.name}:${b.deviceKey ?? ""}`;
  /** what an earlier load measured: then only the backend it chose is prepared */
  let known: RememberedChoice | null = null;
  const prepared: Backend[] = [];
  const reasons: string[] = [];
  const software: Backend[] = [];
  try {
    for (const create of candidates) {
      opts.signal?.throwIfAborted();
      const backend = await create();
      if (!backend.prepare && prepared.length) continue; // (it would be loaded whole: only as a first choice)
      if (known && backend.name !== known.name) continue;
      opts.onTry?.(backend.name);
      try {
        if (backend.prepare) {
          await backend.prepare(manifest, loader, { ...loadOpts, refuseSoftware: true });
          if (!prepared.length && !known) {
            known = store.get(keyOf(backend));
            if (known && known.name !== backend.name) {
              await Promise.resolve(backend.unload()).catch(() => {});
              continue; // on to the one it chose
            }
          }
          prepared.push(backend);
          if (known) break;
          continue;
        }
        await backend.load(manifest, loader, loadOpts);
        return { backend, info: info(backend, reasonOf(reasons, "the first backend here that can run the bundle")) };
      } catch (e) {
        await Promise.resolve(backend.unload()).catch(() => {});
        if (!(e instanceof BackendUnsupportedError)) throw e;
        reasons.push(`${backend.name}: ${e.message}`);
        if (e instanceof SoftwareDeviceError) software.push(backend);
      }
    }
    if (known && !prepared.length) {
      // the backend chosen at an earlier load cannot run here any more: choose afresh
      const forgetful: BackendChoiceStore = { get: () => null, set: (k, v) => store.set(k, v) };
      return chooseBackend(choice, manifest, loader, { ...opts, choices: forgetful });
    }
    if (!prepared.length) {
      const backend = software[0];
      if (!backend) throw new BackendUnsupportedError(`no backend is available that can run this bundle here (${reasons.join("; ")})`);
      opts.onTry?.(backend.name);
      await loadOrUnload(backend, () => backend.load(manifest, loader, loadOpts));
      return { backend, info: info(backend, reasonOf(reasons, "")) };
    }
    let chosen = prepared[0]!;
    let reason = reasonOf(reasons, "the only backend here that can run the bundle");
    let decodeMs: Record<string, number> | undefined;
    if (known) {
      decodeMs = known.decodeMs;
      reason = `the fastest decode step when measured at an earlier load (${formatTimes(known.decodeMs)})`;
    } else if (prepared.length > 1) {
      decodeMs = {};
      for (const b of prepared) {
        opts.signal?.throwIfAborted();
        opts.onProgress?.({ phase: "backend", bytesDone: 0, bytesTotal: 0, shard: -1, shards: manifest.shards.length, text: `timing a decode step on ${b.label ?? b.name}` });
        decodeMs[b.name] = b.timeDecode ? await b.timeDecode(TIMED_DECODE_STEPS) : Infinity;
      }
      chosen = prepared.reduce((best, b) => ((decodeMs![b.name] ?? Infinity) < (decodeMs![best.name] ?? Infinity) ? b : best));
      store.set(keyOf(prepared[0]!), { name: chosen.name, decodeMs });
      reason = `the fastest decode step, measured at this first load (${formatTimes(decodeMs)})`;
    }
    for (const b of prepared) if (b !== chosen) await Promise.resolve(b.unload()).catch(() => {});
    prepared.length = 0;
    await loadOrUnload(chosen, () => chosen.loadWeights!(loadOpts));
    return { backend: chosen, info: info(chosen, reason, decodeMs) };
  } finally {
    for (const b of prepared) await Promise.resolve(b.unload()).catch(() => {});
  }
}

async function loadOrUnload(backend: Backend, load: () => Promise<void>): Promise<void> {
  try {
    await load();
  } catch (e) {
    await Promise.resolve(backend.unload()).catch(() => {});
    throw e;
  }
}

/** Why the others were passed over, or `alone` when nothing else was tried. */
function reasonOf(reasons: string[], alone: string): string {
  return reasons.length ? reasons.join("; ") : alone;
}

function formatTimes(ms: Record<string, number>): string {
  return Object.entries(ms)
    .map(([name, t]) => `${name} ${Number.isFinite(t) ? `${t.toFixed(1)} ms` : "not timed"}`)
    .join(", ");
}
