/**
 * Runs a plan's entry points in one Wasm linear memory (layout.ts) with the bundle's
 * module, on the calling thread or a pool of workers (threads.ts). At start: the
 * memory, the threads and one command list per entry point (program.ts). Per run of
 * an entry point: write the token ids into memory, rewrite the program's uniform and
 * workgroup words, run it; the logits are read from memory. The loop around the runs
 * (chunks, window, one call at a time) is PlanCalls'.
 */
import { BackendUnsupportedError } from "../backend.js";
import { type ArrayPlanBuffer, type Dims, type Plan, PlanError, VERIFY_ENTRY, logitsBuffer } from "../plan.js";
import type { PlanDevice } from "../plan_calls.js";
import { type MemoryLayout, PAGE, allocationProblem, bufferAddress } from "./layout.js";
import { WasmProgram } from "./program.js";
import { type WasmTable, wasmEntries } from "./table.js";
import { InlineRunner, type Runner, WorkerPool } from "./threads.js";

/**
 * After an allocation of `pages` failed: the most pages that can be had (a bisection of
 * trial allocations, each dropped at once), or null when not even one page can.
 */
function largestAllocatable(pages: number, create: (pages: number) => WebAssembly.Memory): number | null {
  let lo = 0; // known to work (0: nothing known)
  let hi = pages; // known to fail
  while (hi - lo > Math.max(1, pages >> 7)) {
    const mid = Math.floor((lo + hi) / 2);
    try {
      create(mid);
      lo = mid;
    } catch {
      hi = mid;
    }
  }
  return lo > 0 ? lo : null;
}

export class WasmExecutor implements PlanDevice {
  private readonly programs = new Map<string, WasmProgram>();
  private readonly tokensAt: number;
  private readonly logitsAt: number;
  private readonly logits: Float32Array;
  /** where the verify entry writes the logits of every token, when this executor runs it */
  private readonly rowsAt: number | null = null;
  private readonly rows: Float32Array | null = null;
  /** PlanDevice.readLogitsRows, present only when the verify entry has a program */
  readonly readLogitsRows?: (rows: number) => Promise<Float32Array>;

  private constructor(
    readonly memory: WebAssembly.Memory,
    private readonly runner: Runner,
    plan: Plan,
    table: WasmTable,
    layout: MemoryLayout,
  ) {
    const mem32 = new Uint32Array(memory.buffer);
    const entries = wasmEntries(plan, table);
    for (const name of entries) this.programs.set(name, new WasmProgram(name, plan, table, layout, mem32));
    this.tokensAt = bufferAddress(layout, plan.inputs.tokens);
    this.logitsAt = bufferAddress(layout, plan.outputs.logits);
    this.logits = new Float32Array(logitsBuffer(plan).elements);
    const rowsName = plan.outputs.logits_rows;
    if (entries.includes(VERIFY_ENTRY) && rowsName !== undefined) {
      this.rowsAt = bufferAddress(layout, rowsName);
      this.rows = new Float32Array((plan.buffers[rowsName] as ArrayPlanBuffer).elements); // parsePlan: an f32 array
      this.readLogitsRows = (rows) => this.copyRows(rows);
    }
  }

  /**
   * Creates the memory at its final size (a BackendUnsupportedError when the engine
   * refuses it), starts `threads` threads on `module` and writes the programs.
   */
  static async start(module: WebAssembly.Module, plan: Plan, table: WasmTable, layout: MemoryLayout, threads: number): Promise<WasmExecutor> {
    const create = (pages: number) =>
      threads > 1 ? new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }) : new WebAssembly.Memory({ initial: pages });
    let memory: WebAssembly.Memory;
    try {
      memory = create(layout.pages);
    } catch (e) {
      const most = largestAllocatable(layout.pages, create);
      throw new BackendUnsupportedError(allocationProblem(layout, plan.context_window, most === null ? null : most * PAGE, (e as Error).message));
    }
    const stackTop = (tid: number) => layout.stacks + (tid + 1) * layout.stackBytes;
    const runner = threads > 1 ? await WorkerPool.start(module, memory, threads, stackTop) : await InlineRunner.start(module, memory, stackTop(0));
    try {
      return new WasmExecutor(memory, runner, plan, table, layout);
    } catch (e) {
      runner.close();
      throw e;
    }
  }

  /** PlanDevice: the token ids into the plan's tokens buffer. */
  writeTokens(tokens: Int32Array): void {
    new Int32Array(this.memory.buffer, this.tokensAt, tokens.length).set(tokens);
  }

  /** PlanDevice: the entry's command list for `dims`, run to the end. */
  async runEntry(entry: string, dims: Dims): Promise<void> {
    const prog = this.programs.get(entry);
    if (!prog) throw new PlanError(`entry ${entry} has no Wasm program`);
    prog.prepare(dims.seq_len, dims.past_len, new Uint32Array(this.memory.buffer));
    await this.runner.run(prog.addr, prog.dispatches);
  }

  /** PlanDevice: a copy of the logits (reused by the next read). */
  async readLogits(): Promise<Float32Array> {
    this.logits.set(new Float32Array(this.memory.buffer, this.logitsAt, this.logits.length));
    return this.logits;
  }

  /** The first `rows` rows (× vocab floats) of the verify entry's output (a view of an array reused by the next read). */
  private async copyRows(rows: number): Promise<Float32Array> {
    const n = rows * this.logits.length;
    if (!this.rows || this.rowsAt === null || !(rows >= 1 && n <= this.rows.length)) {
      throw new RangeError(`the Wasm executor holds no ${rows} rows of verify logits`);
    }
    this.rows.set(new Float32Array(this.memory.buffer, this.rowsAt, n));
    return this.rows.subarray(0, n);
  }

  close(): void {
    this.runner.close();
    this.programs.clear();
  }
}
