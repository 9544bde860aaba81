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
 *
 * With a module that reads them (the kernel table's `sync_flags`), op words carry
 * CMD_NOSYNC where a dispatch touches nothing that the dispatches since the last
 * barrier wrote and writes nothing they read (the plan's binding types say which
 * buffers a kernel writes): the threads then go on without meeting, e.g. between the
 * q, k and v projections, which all read one input.
 */
import { EntryProgram, type Plan, PlanError } from "../plan.js";
import { type MemoryLayout, bufferAddress } from "./layout.js";
import { type WasmTable, wasmKernel } from "./table.js";

export const OP_NOP = 0xffffffff;
/** op-word flag: the threads need no barrier before this dispatch (packager/wasm/runner.c) */
export const CMD_NOSYNC = 0x80000000;

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
  /** CMD_NOSYNC or 0 */
  flags: number;
  /** the op word when the dispatch is skipped (its barrier, if any, stays due) */
  nop: number;
}

/**
 * Per dispatch, whether it needs no barrier before it: it reads and writes nothing
 * written since the last barrier and writes nothing read since then ("storage"
 * bindings count as read and written). The first dispatch needs none.
 */
export function independentOfPrevious(plan: Plan, dispatches: Plan["entries"][string]["dispatches"]): boolean[] {
  const written = new Set<string>();
  const read = new Set<string>();
  return dispatches.map((d, i) => {
    const types = new Map(plan.kernels[d.kernel]!.bindings.map((b) => [b.binding, b.type]));
    const writes = d.bindings.filter(([b]) => types.get(b) === "storage").map(([, buf]) => buf);
    const reads = d.bindings.map(([, buf]) => buf);
    const free = i === 0 || (!reads.some((b) => written.has(b)) && !writes.some((b) => read.has(b)));
    if (!free) {
      written.clear();
      read.clear();
    }
    for (const b of reads) read.add(b);
    for (const b of writes) written.add(b);
    return free;
  });
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
    const free = table.sync_flags ? independentOfPrevious(plan, entry.dispatches) : entry.dispatches.map(() => false);
    this.words = entry.dispatches.map((d, i) => {
      const k = wasmKernel(table, d.kernel);
      const bindings = [...d.bindings].sort((a, b) => a[0] - b[0]);
      const opAt = w;
      const flags = free[i] ? CMD_NOSYNC : 0;
      mem[w] = (k.op | flags) >>> 0;
      mem[w + 1] = k.consts.length + d.uniforms.length + 3 + bindings.length;
      w += 2;
      for (const c of k.consts) mem[w++] = c;
      const uniformAt = w;
      w += d.uniforms.length;
      const workgroupAt = w;
      w += 3;
      for (const [, buf] of bindings) mem[w++] = bufferAddress(layout, buf);
      const uniformExprs = ep.slots[ep.slotOf[i]!]!; // slotOf has one entry per dispatch, an index into slots
      const nop = table.sync_flags && !free[i] ? (OP_NOP & ~CMD_NOSYNC) >>> 0 : OP_NOP;
      return { op: k.op, opAt, uniformAt, uniformExprs, workgroupAt, flags, nop };
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
      mem[d.opAt] = x && y && z ? (d.op | d.flags) >>> 0 : d.nop;
    });
  }
}
