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
import { EntryProgram, type Plan, PlanError } from "../plan.js";
import { type MemoryLayout, bufferAddress } from "./layout.js";
import { type WasmTable, wasmKernel } from "./table.js";

export const OP_NOP = 0xffffffff;

/** Where a dispatch's words are, and what goes into them per call. */
interface DispatchWords {
  op: number;
  /** word index of the op */
  opAt: number;
  /** word index of the first uniform, and the uniforms' indices into the entry's expression values */
  uniformAt: number;
  uniformExprs: readonly number[];
  /** word index of wg_x */
  workgroupAt: number;
}

export class WasmProgram {
  readonly expressions: EntryProgram;
  /** address of the first word */
  readonly addr: number;
  readonly dispatches: number;
  private readonly words: DispatchWords[];

  constructor(name: string, plan: Plan, table: WasmTable, layout: MemoryLayout, mem: Uint32Array) {
    const entry = plan.entries[name];
    const place = layout.programs.get(name);
    if (!entry || !place) throw new PlanError(`the plan and the Wasm layout have no entry point ${JSON.stringify(name)}`);
    const ep = new EntryProgram(name, entry);
    this.expressions = ep;
    this.addr = place.addr;
    this.dispatches = entry.dispatches.length;
    let w = place.addr / 4;
    this.words = entry.dispatches.map((d, i) => {
      const k = wasmKernel(table, d.kernel);
      const bindings = [...d.bindings].sort((a, b) => a[0] - b[0]);
      const opAt = w;
      mem[w] = k.op;
      mem[w + 1] = k.consts.length + d.uniforms.length + 3 + bindings.length;
      w += 2;
      for (const c of k.consts) mem[w++] = c;
      const uniformAt = w;
      w += d.uniforms.length;
      const workgroupAt = w;
      w += 3;
      for (const [, buf] of bindings) mem[w++] = bufferAddress(layout, buf);
      const uniformExprs = ep.slots[ep.slotOf[i]!]!; // slotOf has one entry per dispatch, an index into slots
      return { op: k.op, opAt, uniformAt, uniformExprs, workgroupAt };
    });
    if (w !== place.addr / 4 + place.words) throw new Error(`program ${name}: ${w - place.addr / 4} words, layout says ${place.words}`);
  }

  /** Writes this call's uniform and workgroup words. */
  prepare(seqLen: number, pastLen: number, mem: Uint32Array): void {
    const ep = this.expressions;
    ep.evaluate(seqLen, pastLen);
    const { values, counts } = ep;
    this.words.forEach((d, i) => {
      let u = d.uniformAt;
      for (const e of d.uniformExprs) mem[u++] = values[e]!; // uniformExprs index values
      // counts holds 3 per dispatch
      const x = counts[3 * i]!;
      const y = counts[3 * i + 1]!;
      const z = counts[3 * i + 2]!;
      mem[d.workgroupAt] = x;
      mem[d.workgroupAt + 1] = y;
      mem[d.workgroupAt + 2] = z;
      mem[d.opAt] = x && y && z ? d.op : OP_NOP;
    });
  }
}
