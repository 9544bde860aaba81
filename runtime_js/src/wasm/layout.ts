/**
 * Where everything lives in the one Wasm linear memory (docs/wasm.md):
 *
 *   [0, heap_base)            the module's static data and its own small stack
 *   stacks                    one per thread (table.stack_bytes each; grows down)
 *   arrays                    activations, KV cache, tokens, logits: f32 / u32 (the
 *                             plan's f32 variant: Wasm computes and stores f32)
 *   programs                  one command list per entry point (program.ts)
 *   weights                   every tensor part of the manifest, as stored in the shards
 *
 * A plan weight buffer (a row block of a part) is an address inside its part, so split
 * weights cost nothing. wasm32 addresses are 32-bit: the total must stay below 4 GiB
 * (65535 pages of 64 KiB; the largest memory the modules declare), else the backend
 * refuses the bundle with the numbers.
 */
import type { Manifest } from "../manifest.js";
import { type Plan, PlanError } from "../plan.js";
import { type WasmTable, wasmEntries, wasmKernel } from "./table.js";

export const PAGE = 65536;
export const MAX_PAGES = 65535;
const ALIGN = 64;

const up = (n: number, a = ALIGN) => Math.ceil(n / a) * a;

export interface MemoryLayout {
  /** bytes of linear memory to create */
  bytes: number;
  pages: number;
  /** stack top of thread i is stacks + (i + 1) * stackBytes */
  stacks: number;
  stackBytes: number;
  /** plan buffer name -> address */
  buffers: Map<string, number>;
  /** manifest tensor index -> part index -> address */
  parts: number[][];
  /** entry point -> address of its program, and its size in words */
  programs: Map<string, { addr: number; words: number }>;
  /** the pieces, for messages */
  weightsBytes: number;
  kvBytes: number;
  activationBytes: number;
}

/** Words of an entry point's program: per dispatch [op, n, consts, uniforms, wg x3, pointers]. */
export function programWords(plan: Plan, table: WasmTable, entry: string): number {
  const e = plan.entries[entry];
  if (!e) throw new PlanError(`the plan has no entry point ${JSON.stringify(entry)}`);
  let n = 0;
  for (const d of e.dispatches) {
    n += 2 + wasmKernel(table, d.kernel).consts.length + d.uniforms.length + 3 + d.bindings.length;
  }
  return n;
}

export function planLayout(manifest: Manifest, plan: Plan, table: WasmTable, heapBase: number, threads: number): MemoryLayout {
  let pos = up(heapBase);
  const stacks = pos;
  const stackBytes = table.stack_bytes;
  pos += threads * stackBytes;
  const buffers = new Map<string, number>();
  let kvBytes = 0;
  let activationBytes = 0;
  for (const [name, b] of Object.entries(plan.buffers)) {
    if (b.kind === "weight") continue;
    buffers.set(name, pos);
    const bytes = up(4 * b.elements);
    if (b.kind === "kv_cache") kvBytes += bytes;
    else activationBytes += bytes;
    pos += bytes;
  }
  const programs = new Map<string, { addr: number; words: number }>();
  for (const name of wasmEntries(plan, table)) {
    const words = programWords(plan, table, name);
    programs.set(name, { addr: pos, words });
    pos += up(4 * words);
  }
  const weightsStart = pos;
  const partAt = new Map<string, number>(); // "tensor:part" -> address
  const parts = manifest.tensors.map((t) =>
    t.parts.map((p) => {
      const at = pos;
      partAt.set(`${t.name}:${p.name}`, at);
      pos += up(p.bytes);
      return at;
    }),
  );
  for (const [name, b] of Object.entries(plan.buffers)) {
    if (b.kind !== "weight") continue;
    const at = partAt.get(`${b.tensor}:${b.part}`);
    if (at === undefined) throw new PlanError(`plan buffer ${name}: no part ${b.part} of tensor ${b.tensor} in the manifest`);
    buffers.set(name, at + b.offset);
  }
  const bytes = pos;
  return {
    bytes,
    pages: Math.ceil(bytes / PAGE),
    stacks,
    stackBytes,
    buffers,
    parts,
    programs,
    weightsBytes: bytes - weightsStart,
    kvBytes,
    activationBytes: activationBytes + threads * stackBytes,
  };
}

/** The address of a plan buffer in the layout (every array and weight buffer has one). */
export function bufferAddress(layout: MemoryLayout, name: string): number {
  const addr = layout.buffers.get(name);
  if (addr === undefined) throw new PlanError(`plan buffer ${name} has no place in the Wasm memory`);
  return addr;
}

/** The address of part `part` of manifest tensor `tensor`. */
export function partAddress(layout: MemoryLayout, tensor: number, part: number): number {
  const at = layout.parts[tensor]?.[part];
  if (at === undefined) throw new RangeError(`the Wasm layout has no part ${part} of tensor ${tensor}`);
  return at;
}

const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

/** null when the layout fits wasm32, else why not (with the bundle's numbers). */
export function ceilingProblem(layout: MemoryLayout, contextWindow: number): string | null {
  if (layout.pages <= MAX_PAGES) return null;
  return (
    `the bundle needs ${gib(layout.bytes)} of Wasm memory (weights ${gib(layout.weightsBytes)} + KV cache ` +
    `${gib(layout.kvBytes)} for ${contextWindow} tokens + activations and stacks ${gib(layout.activationBytes)}), ` +
    `over the 4 GiB that a wasm32 module can address; use the WebGPU backend, a smaller quantization, ` +
    `or package with a smaller --context-window`
  );
}

/**
 * The context window whose KV cache would fit in `availableBytes` of memory next to the
 * rest of the layout (which does not depend on the window), or 0 when even the rest
 * does not fit.
 */
export function windowThatFits(layout: MemoryLayout, contextWindow: number, availableBytes: number): number {
  const kvPerToken = layout.kvBytes / contextWindow;
  const rest = layout.bytes - layout.kvBytes;
  if (availableBytes <= rest || kvPerToken <= 0) return 0;
  return Math.min(contextWindow, Math.floor((availableBytes - rest) / kvPerToken));
}

/** Why `layout.bytes` of memory could not be had, with what would fit (`availableBytes`: the most that could). */
export function allocationProblem(layout: MemoryLayout, contextWindow: number, availableBytes: number | null, reason: string): string {
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  let text =
    `cannot allocate ${mib(layout.bytes)} of Wasm memory here (weights ${mib(layout.weightsBytes)} + KV cache ` +
    `${mib(layout.kvBytes)} for ${contextWindow} tokens + activations and stacks ${mib(layout.activationBytes)}): ${reason}`;
  if (availableBytes === null) return text;
  const fits = windowThatFits(layout, contextWindow, availableBytes);
  text += `; at most ${mib(availableBytes)} could be allocated`;
  if (fits >= 1) text += `, which holds a context window of ${fits} tokens: package the model with --context-window ${fits} (or less)`;
  else text += `, less than the weights alone: use a smaller quantization or a smaller model`;
  return text;
}
