/**
 * Runs a plan's entry points in one Wasm linear memory (layout.ts) with the bundle's
 * module, on the calling thread or a pool of workers (threads.ts). At start: the
 * memory, the threads and one command list per entry point (program.ts). Per run of
 * an entry point: write the token ids into memory, rewrite the program's uniform and
 * workgroup words, run it; the logits are read from memory. The loop around the runs
 * (chunks, window, one call at a time) is PlanCalls'.
 */
import { BackendUnsupportedError } from "../backend.js";
import { type Dims, type Plan, PlanError, logitsBuffer } from "../plan.js";
import type { PlanDevice } from "../plan_calls.js";
import { type MemoryLayout, bufferAddress } from "./layout.js";
import { WasmProgram } from "./program.js";
import type { WasmTable } from "./table.js";
import { InlineRunner, type Runner, WorkerPool } from "./threads.js";

export class WasmExecutor implements PlanDevice {
  private readonly programs = new Map<string, WasmProgram>();
  private readonly tokensAt: number;
  private readonly logitsAt: number;
  private readonly logits: Float32Array;

  private constructor(
    readonly memory: WebAssembly.Memory,
    private readonly runner: Runner,
    plan: Plan,
    table: WasmTable,
    layout: MemoryLayout,
  ) {
    const mem32 = new Uint32Array(memory.buffer);
    for (const name of Object.keys(plan.entries)) this.programs.set(name, new WasmProgram(name, plan, table, layout, mem32));
    this.tokensAt = bufferAddress(layout, plan.inputs.tokens);
    this.logitsAt = bufferAddress(layout, plan.outputs.logits);
    this.logits = new Float32Array(logitsBuffer(plan).elements);
  }

  /**
   * Creates the memory at its final size (a BackendUnsupportedError when the engine
   * refuses it), starts `threads` threads on `module` and writes the programs.
   */
  static async start(module: WebAssembly.Module, plan: Plan, table: WasmTable, layout: MemoryLayout, threads: number): Promise<WasmExecutor> {
    let memory: WebAssembly.Memory;
    try {
      memory = threads > 1
        ? new WebAssembly.Memory({ initial: layout.pages, maximum: layout.pages, shared: true })
        : new WebAssembly.Memory({ initial: layout.pages });
    } catch (e) {
      throw new BackendUnsupportedError(`cannot allocate ${(layout.bytes / 2 ** 20).toFixed(0)} MiB of Wasm memory here: ${(e as Error).message}`);
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

  close(): void {
    this.runner.close();
    this.programs.clear();
  }
}
