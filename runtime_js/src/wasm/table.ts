/**
 * The Wasm kernel table of a bundle, kernels/llmpack.wasm.json (written at package time
 * by packager/wasm_build.py, docs/wasm.md): which op of the module implements each
 * kernel of plan.json, with that op's constant arguments, and the facts about the two
 * modules (single-threaded, threaded) the runtime needs before instantiating them.
 */
import { type Plan, VERIFY_ENTRY, hasVerify } from "../plan.js";

/**
 * The entry points the Wasm backend always runs; "verify" too where the plan has it
 * (wasmEntries). Others (the WebGPU-only "argmax": the logits are in memory already) have
 * no Wasm kernels.
 */
export const WASM_ENTRIES = ["prefill", "decode"] as const;

/**
 * The entry points the Wasm backend runs for a plan and its table: WASM_ENTRIES, and the
 * optional verify entry when the plan has it and the table has an op for each of its
 * kernels (a table made for another plan may lack them: then there is no verify).
 */
export function wasmEntries(plan: Plan, table: WasmTable): string[] {
  const out: string[] = [...WASM_ENTRIES];
  if (hasVerify(plan) && plan.entries[VERIFY_ENTRY]!.dispatches.every((d) => table.kernels?.[d.kernel] !== undefined)) {
    out.push(VERIFY_ENTRY);
  }
  return out;
}

export const WASM_TABLE_FILE = "kernels/llmpack.wasm.json";
export const WASM_TABLE_FORMAT = "llmpack-wasm";
export const WASM_TABLE_VERSION = 1;

export interface WasmModuleInfo {
  file: string;
  /** first byte after the module's static data and its own stack */
  heap_base: number;
  bytes: number;
  sha256: string;
}

export interface WasmKernel {
  /** index into `ops` (the module's op table) */
  op: number;
  /** the op's constant arguments (u32; floats as their f32 bits) */
  consts: number[];
}

export interface WasmTable {
  format: typeof WASM_TABLE_FORMAT;
  version: number;
  ops: string[];
  formats: string[];
  /** stack each thread needs */
  stack_bytes: number;
  kernels: Record<string, WasmKernel>;
  modules: { single: WasmModuleInfo; threads?: WasmModuleInfo };
  /** the modules' runner reads the no-barrier flag of an op word (program.ts); absent in older bundles */
  sync_flags?: boolean;
  plan_sha256?: string;
}

export class WasmTableError extends Error {
  override name = "WasmTableError";
}

const u32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;

/** Validates the table against the plan: every plan kernel has an op. */
export function parseWasmTable(json: unknown, plan: Plan): WasmTable {
  const t = json as WasmTable;
  if (!t || typeof t !== "object" || t.format !== WASM_TABLE_FORMAT) {
    throw new WasmTableError(`${WASM_TABLE_FILE} is not an llmpack Wasm kernel table`);
  }
  if (t.version !== WASM_TABLE_VERSION) {
    throw new WasmTableError(`${WASM_TABLE_FILE} version ${t.version} is not supported (this runtime reads ${WASM_TABLE_VERSION})`);
  }
  const moduleOk = (m: WasmModuleInfo | undefined) => !!m && typeof m.file === "string" && u32(m.heap_base);
  if (!moduleOk(t.modules?.single) || (t.modules.threads && !moduleOk(t.modules.threads)) || !u32(t.stack_bytes) || !Array.isArray(t.ops)) {
    throw new WasmTableError(`${WASM_TABLE_FILE} is malformed`);
  }
  const used = new Set(wasmEntries(plan, t).flatMap((e) => plan.entries[e]!.dispatches.map((d) => d.kernel)));
  for (const name of used) {
    const k = t.kernels?.[name];
    if (!k || !u32(k.op) || k.op >= t.ops.length || !Array.isArray(k.consts) || !k.consts.every(u32)) {
      throw new WasmTableError(`${WASM_TABLE_FILE} has no Wasm op for kernel ${name} of plan.json (package the bundle again)`);
    }
  }
  return t;
}

/** The table's entry for a kernel of the plan (parseWasmTable checked every kernel of wasmEntries has one). */
export function wasmKernel(table: WasmTable, kernel: string): WasmKernel {
  const k = table.kernels[kernel];
  if (!k) throw new WasmTableError(`${WASM_TABLE_FILE} has no Wasm op for kernel ${kernel}`);
  return k;
}
