/**
 * An entry point of the plan as a command list in Wasm memory, the form the module's
 * runner executes (packager/wasm/runner.c):
 *
 *   per dispatch: [op, n, consts..., uniforms..., wg_x, wg_y, wg_z, pointers...]   (n words follow op, n)
 *
 * `op` and `consts` come from the kernel table, the pointers are the addresses of the
 * dispatch's bindings in binding order; they are written once. Each call evaluates
 * the plan's expressions for its seq_len and past_len (EntryProgram) and rewrites the
 * uniform and workgroup words; a dispatch with a zero workgroup count becomes a no-op.
 */
import { EntryProgram, type Plan } from "../plan.js";
import type { MemoryLayout } from "./layout.js";
import type { WasmTable } from "./table.js";

export const OP_NOP = 0xffffffff;

export class WasmProgram {
  readonly expressions: EntryProgram;
  /** address of the first word */
  readonly addr: number;
  readonly dispatches: number;
  private readonly opAt: Uint32Array;
  private readonly ops: Uint32Array;
  private readonly uniformAt: Uint32Array;
  private readonly workgroupAt: Uint32Array;

  constructor(name: string, plan: Plan, table: WasmTable, layout: MemoryLayout, mem: Uint32Array) {
    const entry = plan.entries[name];
    this.expressions = new EntryProgram(name, entry);
    const { addr, words } = layout.programs.get(name)!;
    this.addr = addr;
    const n = entry.dispatches.length;
    this.dispatches = n;
    this.opAt = new Uint32Array(n);
    this.ops = new Uint32Array(n);
    this.uniformAt = new Uint32Array(n);
    this.workgroupAt = new Uint32Array(n);
    let w = addr / 4;
    entry.dispatches.forEach((d, i) => {
      const k = table.kernels[d.kernel];
      const bindings = [...d.bindings].sort((a, b) => a[0] - b[0]);
      this.opAt[i] = w;
      this.ops[i] = k.op;
      mem[w] = k.op;
      mem[w + 1] = k.consts.length + d.uniforms.length + 3 + bindings.length;
      w += 2;
      for (const c of k.consts) mem[w++] = c;
      this.uniformAt[i] = w;
      w += d.uniforms.length;
      this.workgroupAt[i] = w;
      w += 3;
      for (const [, buf] of bindings) mem[w++] = layout.buffers.get(buf)!;
    });
    if (w !== addr / 4 + words) throw new Error(`program ${name}: ${w - addr / 4} words, layout says ${words}`);
  }

  /** Writes this call's uniform and workgroup words. */
  prepare(seqLen: number, pastLen: number, mem: Uint32Array): void {
    const ep = this.expressions;
    ep.evaluate(seqLen, pastLen);
    for (let i = 0; i < this.dispatches; i++) {
      const slot = ep.slots[ep.slotOf[i]];
      const u = this.uniformAt[i];
      for (let j = 0; j < slot.length; j++) mem[u + j] = ep.values[slot[j]];
      const x = ep.counts[3 * i], y = ep.counts[3 * i + 1], z = ep.counts[3 * i + 2];
      const g = this.workgroupAt[i];
      mem[g] = x;
      mem[g + 1] = y;
      mem[g + 2] = z;
      mem[this.opAt[i]] = x && y && z ? this.ops[i] : OP_NOP;
    }
  }
}
