/**
 * The Wasm backend: runs the bundle's plan.json on the CPU with the bundle's Wasm
 * kernels (kernels/llmpack.wasm, SIMD128; docs/wasm.md). Same plan as WebGPU, same
 * engine API; chosen by `backend: "wasm"`, or by "auto" where WebGPU cannot run the
 * bundle.
 *
 * Load: read plan.json and the kernel table, lay out one linear memory for the whole
 * model (refusing bundles above the 4 GiB wasm32 ceiling before anything is fetched),
 * start the threads, then stream the weights shard by shard straight into that memory
 * (nothing runs before every shard verified). Run: PlanCalls' prefill (in chunks of
 * the plan's prefill_chunk) and decode over the executor (executor.ts), which writes
 * each run's command list and reads the logits back from memory.
 *
 * Threads: `threads: "auto"` (default) uses min(CPUs, 4) workers when the threaded
 * module can run (SharedArrayBuffer: a cross-origin isolated page, a worker of one,
 * or Node), else one thread on the calling thread.
 */
import { BackendUnsupportedError, type Backend, type BackendLoadOptions } from "../backend.js";
import type { BundleLoader, LoadStats } from "../loader.js";
import type { Manifest } from "../manifest.js";
import { type Plan, parsePlan } from "../plan.js";
import { PlanCalls } from "../plan_calls.js";
import { WasmExecutor } from "./executor.js";
import { ceilingProblem, type MemoryLayout, partAddress, planLayout } from "./layout.js";
import { WASM_TABLE_FILE, type WasmTable, parseWasmTable } from "./table.js";
import { cpuCount, threadsAvailable } from "./threads.js";

export interface WasmBackendOptions {
  /** worker threads: a count, or "auto" (default): min(CPUs, 4) where threads can run, else 1 */
  threads?: number | "auto";
  /** shards streamed at once (default 2) */
  concurrency?: number;
}

export const DEFAULT_MAX_THREADS = 4;

/** Whether this JS engine validates a small SIMD128 module. */
function simdSupported(): boolean {
  // (module (func (result v128) i32.const 0 i8x16.splat))
  const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 8, 1, 6, 0, 65, 0, 253, 15, 11]);
  try {
    return typeof WebAssembly === "object" && WebAssembly.validate(bytes);
  } catch {
    return false;
  }
}

export class WasmBackend implements Backend {
  readonly name = "wasm";
  plan: Plan | null = null;
  table: WasmTable | null = null;
  layout: MemoryLayout | null = null;
  loadStats: LoadStats | null = null;
  /** threads in use, once loaded */
  threads = 0;
  /** why threads are not used, when they are not */
  singleThreadReason = "";
  private executor: WasmExecutor | null = null;
  private bundle: { manifest: Manifest; loader: BundleLoader } | null = null;
  /** set once prepared */
  private calls: PlanCalls | null = null;
  private weightsLoaded = false;

  constructor(private readonly opts: WasmBackendOptions = {}) {}

  get label(): string {
    if (!this.threads) return "Wasm";
    return `Wasm SIMD, ${this.threads} thread${this.threads > 1 ? "s" : ""}`;
  }

  get contextWindow(): number | undefined {
    return this.plan?.context_window;
  }

  get kvRewindLimit(): number | undefined {
    return this.plan?.kv_rewind_limit;
  }

  /** How many threads to use here (before loading). */
  async chooseThreads(): Promise<{ threads: number; reason: string }> {
    const want = this.opts.threads ?? "auto";
    if (want !== "auto" && (!Number.isInteger(want) || want < 1)) throw new RangeError(`threads must be a positive integer or "auto", got ${want}`);
    const can = threadsAvailable();
    if (want === 1) return { threads: 1, reason: "one thread was asked for" };
    if (!can) {
      const reason =
        typeof SharedArrayBuffer === "undefined"
          ? "SharedArrayBuffer is unavailable (the page is not cross-origin isolated: serve it with COOP/COEP headers)"
          : "Web Workers are unavailable";
      return { threads: 1, reason };
    }
    if (want === "auto") {
      const n = Math.max(1, Math.min(await cpuCount(), DEFAULT_MAX_THREADS));
      return { threads: n, reason: n === 1 ? "one CPU" : "" };
    }
    return { threads: want, reason: "" };
  }

  get deviceKey(): string {
    return this.threads ? `${this.threads} threads` : "";
  }

  async load(manifest: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    await this.prepare(manifest, loader, opts);
    await this.loadWeights(opts);
  }

  /** Plan, kernel table, the memory, the threads and the programs (Backend.prepare). */
  async prepare(manifest: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    const { signal, onProgress } = opts;
    signal?.throwIfAborted();
    if (!simdSupported()) throw new BackendUnsupportedError("this JavaScript engine lacks WebAssembly SIMD128");
    const has = (p: string) => manifest.files.some((f) => f.path === p);
    if (!has("plan.json") || !has(WASM_TABLE_FILE)) {
      throw new BackendUnsupportedError(
        `the bundle has no Wasm kernels (${WASM_TABLE_FILE}); package it again, or add them with \`python -m packager.wasm_build BUNDLE\``,
      );
    }
    const plan = parsePlan(await loader.fetchJson("plan.json", signal), manifest);
    const table = parseWasmTable(await loader.fetchJson(WASM_TABLE_FILE, signal), plan);
    let { threads, reason } = await this.chooseThreads();
    if (threads > 1 && !table.modules.threads) {
      threads = 1;
      reason = "the bundle has no threaded module";
    }
    const info = (threads > 1 && table.modules.threads) || table.modules.single;
    const layout = planLayout(manifest, plan, table, info.heap_base, threads);
    const problem = ceilingProblem(layout, plan.context_window);
    if (problem) throw new BackendUnsupportedError(problem);
    this.plan = plan;
    this.table = table;
    this.layout = layout;
    const report = (text: string) => onProgress?.({ phase: "backend", bytesDone: 0, bytesTotal: 0, shard: -1, shards: manifest.shards.length, text });

    report(`Wasm: ${(layout.bytes / 2 ** 20).toFixed(0)} MiB of memory, ${threads} thread${threads > 1 ? "s" : ""}`);
    try {
      const module = await WebAssembly.compile((await loader.fetchFile(info.file, signal)) as Uint8Array<ArrayBuffer>);
      const ex = await WasmExecutor.start(module, plan, table, layout, threads);
      this.executor = ex;
      this.threads = threads;
      this.singleThreadReason = threads > 1 ? "" : reason;
      this.bundle = { manifest, loader };
      this.calls = new PlanCalls("Wasm", plan, manifest.model.config.vocab_size, ex);
    } catch (e) {
      this.unload();
      throw e;
    }
  }

  /** Streams the weights straight into their place in the memory (Backend.loadWeights). */
  async loadWeights(opts: BackendLoadOptions = {}): Promise<void> {
    const { executor, layout, bundle } = this;
    if (!executor || !layout || !bundle) throw new Error("the Wasm backend was not prepared");
    const { loader, manifest } = bundle;
    // write-through (used only after all shards verified)
    const bytes = new Uint8Array(executor.memory.buffer);
    try {
      this.loadStats = await loader.loadShards(
        {
          write: (shard, offset, chunk) =>
            loader.layout.route(shard, offset, chunk, (t, p, offInPart, piece) => bytes.set(piece, partAddress(layout, t, p) + offInPart)),
          commit: () => {},
        },
        { signal: opts.signal, onProgress: opts.onProgress, concurrency: this.opts.concurrency },
      );
      this.weightsLoaded = true;
    } catch (e) {
      this.unload();
      throw e;
    }
    opts.onProgress?.({ phase: "backend", bytesDone: 0, bytesTotal: 0, shard: -1, shards: manifest.shards.length, text: `${this.label}: ready` });
  }

  /** Median ms of a decode step, on whatever the memory holds (Backend.timeDecode). */
  async timeDecode(steps: number): Promise<number> {
    if (!this.calls) throw new Error("the Wasm backend was not prepared");
    return this.calls.timeDecode(steps);
  }

  async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    return this.loaded().prefill(tokens, pastLen);
  }

  async decode(token: number, pos: number): Promise<Float32Array> {
    return this.loaded().decode(token, pos);
  }

  /** Backend.verifyMaxTokens: the plan's verify entry's max_seq_len when it runs here; undefined without it. */
  get verifyMaxTokens(): number | undefined {
    return this.calls?.verifyMaxTokens;
  }

  /** Backend.verify: one run of the plan's verify entry; the logits of every token, read from memory. */
  async verify(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    return this.loaded().verify(tokens, pastLen);
  }

  reset(): void {
    // A call overwrites the cache from its past_len on: nothing to clear.
  }

  unload(): void {
    this.calls = null;
    this.weightsLoaded = false;
    this.executor?.close();
    this.executor = null;
  }

  private loaded(): PlanCalls {
    if (!this.calls || !this.weightsLoaded) throw new Error("the Wasm backend is not loaded");
    return this.calls;
  }
}
