/**
 * The Wasm backend: runs the bundle's plan.json on the CPU with the bundle's Wasm
 * kernels (kernels/llmpack.wasm, SIMD128; docs/wasm.md). Same plan as WebGPU, same
 * engine API; chosen by `backend: "wasm"`, or by "auto" where WebGPU cannot run the
 * bundle.
 *
 * Load: read plan.json and the kernel table, lay out one linear memory for the whole
 * model (refusing bundles above the 4 GiB wasm32 ceiling before anything is fetched),
 * start the threads, then stream the weights shard by shard straight into that memory
 * (nothing runs before every shard verified). Run: each call evaluates the entry
 * point's expressions into its command list and runs it; prefill goes in chunks of the
 * plan's prefill_chunk; logits are read back from memory.
 *
 * Threads: `threads: "auto"` (default) uses min(CPUs, 4) workers when the threaded
 * module can run (SharedArrayBuffer: a cross-origin isolated page, a worker of one,
 * or Node), else one thread on the calling thread.
 */
import { BackendUnsupportedError, CallGuard, type Backend, type BackendLoadOptions } from "../backend.js";
import type { BundleLoader, LoadStats } from "../loader.js";
import type { Manifest } from "../manifest.js";
import { type Plan, checkCall, logitsBuffer, parsePlan } from "../plan.js";
import { ceilingProblem, type MemoryLayout, planLayout } from "./layout.js";
import { WasmProgram } from "./program.js";
import { WASM_TABLE_FILE, type WasmTable, parseWasmTable } from "./table.js";
import { InlineRunner, type Runner, WorkerPool, cpuCount, threadsAvailable } from "./threads.js";

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
  private memory: WebAssembly.Memory | null = null;
  private runner: Runner | null = null;
  private programs = new Map<string, WasmProgram>();
  private vocab = 0;
  private logits: Float32Array | null = null;
  private readonly guard = new CallGuard("Wasm");

  constructor(private readonly opts: WasmBackendOptions = {}) {}

  get label(): string {
    if (!this.threads) return "Wasm";
    return `Wasm SIMD, ${this.threads} thread${this.threads > 1 ? "s" : ""}`;
  }

  get contextWindow(): number | undefined {
    return this.plan?.context_window;
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

  async load(manifest: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
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
    const info = threads > 1 ? table.modules.threads! : table.modules.single;
    const layout = planLayout(manifest, plan, table, info.heap_base, threads);
    const problem = ceilingProblem(layout, plan.context_window);
    if (problem) throw new BackendUnsupportedError(problem);
    this.plan = plan;
    this.table = table;
    this.layout = layout;
    this.vocab = Number(manifest.model.config.vocab_size);
    const report = (text: string) => onProgress?.({ phase: "backend", bytesDone: 0, bytesTotal: 0, shard: -1, shards: manifest.shards.length, text });

    report(`Wasm: ${(layout.bytes / 2 ** 20).toFixed(0)} MiB of memory, ${threads} thread${threads > 1 ? "s" : ""}`);
    try {
      await this.start(loader, info.file, threads, reason, opts);
    } catch (e) {
      this.unload();
      throw e;
    }
    report(`${this.label}: ready`);
  }

  private async start(loader: BundleLoader, file: string, threads: number, reason: string, opts: BackendLoadOptions): Promise<void> {
    const { signal, onProgress } = opts;
    const plan = this.plan!;
    const table = this.table!;
    const layout = this.layout!;
    const module = await WebAssembly.compile((await loader.fetchFile(file, signal)) as Uint8Array<ArrayBuffer>);
    try {
      this.memory = threads > 1
        ? new WebAssembly.Memory({ initial: layout.pages, maximum: layout.pages, shared: true })
        : new WebAssembly.Memory({ initial: layout.pages });
    } catch (e) {
      throw new BackendUnsupportedError(`cannot allocate ${(layout.bytes / 2 ** 20).toFixed(0)} MiB of Wasm memory here: ${(e as Error).message}`);
    }
    const stackTop = (tid: number) => layout.stacks + (tid + 1) * layout.stackBytes;
    this.runner = threads > 1
      ? await WorkerPool.start(module, this.memory, threads, stackTop)
      : await InlineRunner.start(module, this.memory, stackTop(0));
    this.threads = threads;
    this.singleThreadReason = threads > 1 ? "" : reason;
    const mem32 = new Uint32Array(this.memory.buffer);
    for (const name of Object.keys(plan.entries)) this.programs.set(name, new WasmProgram(name, plan, table, layout, mem32));

    // weights: write-through into their place in memory (used only after all shards verified)
    const bytes = new Uint8Array(this.memory.buffer);
    const parts = layout.parts;
    this.loadStats = await loader.loadShards(
      {
        write: (shard, offset, chunk) =>
          loader.layout.route(shard, offset, chunk, (t, p, offInPart, piece) => bytes.set(piece, parts[t][p] + offInPart)),
        commit: () => {},
      },
      { signal, onProgress, concurrency: this.opts.concurrency },
    );
    this.logits = new Float32Array(logitsBuffer(plan).elements);
  }

  private async step(entry: string, tokens: Int32Array, pastLen: number): Promise<void> {
    const plan = this.plan!;
    const layout = this.layout!;
    checkCall(plan, entry, tokens.length, pastLen);
    const buf = this.memory!.buffer;
    new Int32Array(buf, layout.buffers.get(plan.inputs.tokens)!, tokens.length).set(tokens);
    const prog = this.programs.get(entry)!;
    prog.prepare(tokens.length, pastLen, new Uint32Array(buf));
    await this.runner!.run(prog.addr, prog.dispatches);
  }

  private readLogits(): Float32Array {
    const plan = this.plan!;
    const out = this.logits!;
    out.set(new Float32Array(this.memory!.buffer, this.layout!.buffers.get(plan.outputs.logits)!, out.length));
    return out;
  }

  async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    if (tokens.length === 0) throw new RangeError("prefill needs at least one token");
    return this.exclusive(tokens, async () => {
      const chunk = Math.min(this.plan!.prefill_chunk, this.plan!.entries.prefill.max_seq_len);
      for (let i = 0; i < tokens.length; i += chunk) {
        await this.step("prefill", tokens.subarray(i, Math.min(tokens.length, i + chunk)), pastLen + i);
      }
      return this.readLogits();
    });
  }

  async decode(token: number, pos: number): Promise<Float32Array> {
    const one = Int32Array.of(token);
    return this.exclusive(one, async () => {
      await this.step("decode", one, pos);
      return this.readLogits();
    });
  }

  reset(): void {
    // A call overwrites the cache from its past_len on: nothing to clear.
  }

  unload(): void {
    this.runner?.close();
    this.runner = null;
    this.memory = null;
    this.programs.clear();
  }

  private async exclusive<T>(tokens: Int32Array, fn: () => Promise<T>): Promise<T> {
    if (!this.runner) throw new Error("the Wasm backend is not loaded");
    return this.guard.run(tokens, this.vocab, fn);
  }
}
