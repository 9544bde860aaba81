/**
 * The execution plan (docs/plan.md, version 1): types, validation, and the helpers
 * every plan executor needs whatever it runs on (WebGPU here, Wasm elsewhere): buffer
 * sizes per variant, the variant a device can run, where each weight buffer's bytes
 * live in the tensors, and a compiled form of an entry point whose uniforms and
 * workgroup counts are evaluated per call without allocating.
 */
import { ExprError, checkExpr, evalExpr } from "./expr.js";
import { type Manifest, isSafeBundlePath } from "./manifest.js";

export const PLAN_FORMAT = "llmpack-plan";
export const PLAN_VERSION = 1;

export type BindingType = "uniform" | "storage" | "read-only-storage";

export interface PlanKernel {
  template: string;
  /** variant name -> kernel file path in the bundle */
  files: Record<string, string>;
  bindings: { binding: number; type: BindingType }[];
  uniforms: string[];
  workgroup_size: [number, number, number];
  workgroup_storage_bytes: number;
}

export interface WeightBuffer {
  kind: "weight";
  tensor: string;
  part: string;
  /** byte offset inside the part */
  offset: number;
  bytes: number;
}

export interface ArrayPlanBuffer {
  kind: "activation" | "kv_cache" | "input" | "output";
  dtype: "act" | "f32" | "u32";
  elements: number;
}

export type PlanBuffer = WeightBuffer | ArrayPlanBuffer;

export interface PlanDispatch {
  kernel: string;
  label?: string;
  /** [binding, buffer name] for every binding but 0 */
  bindings: [number, string][];
  uniforms: (string | number)[];
  workgroups: [string | number, string | number, string | number];
}

export interface PlanEntry {
  max_seq_len: number;
  dispatches: PlanDispatch[];
  /** the "topk" entry: how many candidates it lists */
  k?: number;
}

export interface PlanVariant {
  features: string[];
  limits: Record<string, number>;
  memory: { weights_bytes: number; kv_cache_bytes: number; activation_bytes: number };
}

export interface Plan {
  format: typeof PLAN_FORMAT;
  version: number;
  architecture: string;
  context_window: number;
  prefill_chunk: number;
  /**
   * Most recent KV cache positions a call may roll back (a sliding-window model's ring
   * buffer keeps no more); absent: unlimited. Backend.kvRewindLimit.
   */
  kv_rewind_limit?: number;
  dims: string[];
  variant_order: string[];
  variants: Record<string, PlanVariant>;
  requirements?: { features: string[]; optional_features: string[]; limits: Record<string, number> };
  /** inv_temperature: f32 [1] that the optional "topk" entry reads (docs/plan.md) */
  inputs: { tokens: string; inv_temperature?: string };
  /**
   * next_token: [id, f32 bits] that the optional "argmax" entry writes; logits_rows: f32
   * [max_seq_len × vocab], the logits of every token of the optional "verify" entry; topk:
   * u32 [2 k + 2] that the optional "topk" entry writes; verify_tokens: u32 [2 × verify
   * max_seq_len], [id, f32 bits] per row that the optional "verify_argmax" entry writes (docs/plan.md)
   */
  outputs: { logits: string; next_token?: string; logits_rows?: string; topk?: string; verify_tokens?: string };
  kernels: Record<string, PlanKernel>;
  buffers: Record<string, PlanBuffer>;
  /** every runtime needs `prefill` and `decode` (parsePlan checks they are there) */
  entries: Record<string, PlanEntry> & { prefill: PlanEntry; decode: PlanEntry };
}

/**
 * The entry points every plan has and every runtime runs; the others (argmax, topk, verify)
 * are optional, and a runtime may prepare them at their first run.
 */
export const REQUIRED_ENTRIES = ["prefill", "decode"] as const;

export class PlanError extends Error {
  override name = "PlanError";
}

/** The dynamic dimensions of one call of an entry point. */
export interface Dims {
  seq_len: number;
  past_len: number;
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);
/** `obj[key]` when it is obj's own (never a name every object has, like "constructor"). */
const own = (obj: Record<string, unknown>, key: unknown): unknown =>
  typeof key === "string" && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
const BINDING_TYPES: readonly unknown[] = ["uniform", "storage", "read-only-storage"];
const ARRAY_KINDS: readonly unknown[] = ["activation", "kv_cache", "input", "output"];

function shown(v: unknown): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    s = undefined;
  }
  s ??= typeof v;
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Validates plan.json against the manifest and returns it typed: known format and
 * version, every binding names a buffer, every dispatch a kernel, every weight buffer
 * a byte range inside a manifest tensor part, every expression parses, every kernel
 * file a path inside the bundle. Any JSON value gives a Plan or a PlanError.
 */
export function parsePlan(json: unknown, manifest?: Manifest): Plan {
  if (!isObject(json)) throw new PlanError("plan.json is not a JSON object");
  const p = json as unknown as Plan;
  if (p.format !== PLAN_FORMAT) throw new PlanError(`plan.json: format is ${shown(p.format)}, expected "${PLAN_FORMAT}"`);
  if (p.version !== PLAN_VERSION) {
    throw new PlanError(`plan.json version ${shown(p.version)} is not supported by this runtime (it reads version ${PLAN_VERSION})`);
  }
  for (const key of ["variants", "kernels", "buffers", "entries", "inputs", "outputs"] as const) {
    if (!isObject(p[key])) throw new PlanError(`plan.json has no "${key}" object`);
  }
  if (!isCount(p.context_window) || p.context_window < 1) throw new PlanError("plan.json: bad context_window");
  if (!isCount(p.prefill_chunk) || p.prefill_chunk < 1) throw new PlanError("plan.json: bad prefill_chunk");
  if (p.kv_rewind_limit !== undefined && !isCount(p.kv_rewind_limit)) throw new PlanError("plan.json: kv_rewind_limit must be a non-negative integer");
  const variants = p.variants as unknown as Record<string, unknown>;
  if (!Array.isArray(p.variant_order) || !p.variant_order.every((v) => own(variants, v) !== undefined)) {
    throw new PlanError("plan.json: variant_order names a variant the plan does not have");
  }
  for (const [name, v] of Object.entries(variants)) {
    if (!isObject(v) || !Array.isArray(v.features) || !v.features.every((f) => typeof f === "string") || !isObject(v.limits) ||
        !Object.values(v.limits).every(isCount) || !isObject(v.memory)) {
      throw new PlanError(`plan variant ${name.slice(0, 80)} is malformed (it needs features, limits and memory)`);
    }
  }
  const entries = p.entries as unknown as Record<string, unknown>;
  for (const name of REQUIRED_ENTRIES) {
    if (own(entries, name) === undefined) throw new PlanError(`plan.json has no "${name}" entry point (a runtime needs prefill and decode)`);
  }
  const parts = new Map<string, number>();
  for (const t of manifest?.tensors ?? []) for (const part of t.parts) parts.set(`${t.name}:${part.name}`, part.bytes);
  const buffers = p.buffers as unknown as Record<string, unknown>;
  for (const [name, b] of Object.entries(buffers)) {
    if (!isObject(b)) throw new PlanError(`plan buffer ${name.slice(0, 80)} is malformed`);
    if (b.kind === "weight") {
      if (typeof b.tensor !== "string" || typeof b.part !== "string" || !isCount(b.offset) || !isCount(b.bytes)) {
        throw new PlanError(`plan buffer ${name.slice(0, 80)}: malformed weight range`);
      }
      if (manifest) {
        const size = parts.get(`${b.tensor}:${b.part}`);
        if (size === undefined) throw new PlanError(`plan buffer ${name}: the manifest has no part ${b.part} of tensor ${b.tensor}`);
        if (b.offset + b.bytes > size) throw new PlanError(`plan buffer ${name}: bytes ${b.offset}..${b.offset + b.bytes} lie outside the part (${size} bytes)`);
      }
    } else if (!ARRAY_KINDS.includes(b.kind) || !isCount(b.elements) || !["act", "f32", "u32"].includes(b.dtype as string)) {
      throw new PlanError(`plan buffer ${name.slice(0, 80)}: malformed ${shown(b)}`);
    }
  }
  const check = (e: unknown, where: string) => {
    if (typeof e === "number") {
      if (!isCount(e)) throw new PlanError(`${where}: ${e} is not a non-negative integer`);
      return;
    }
    if (typeof e !== "string") throw new PlanError(`${where}: ${shown(e)} is not an expression`);
    try {
      checkExpr(e);
    } catch (err) {
      if (!(err instanceof ExprError)) throw err;
      throw new PlanError(`${where}: ${err.message}`);
    }
  };
  const kernels = p.kernels as unknown as Record<string, unknown>;
  for (const [name, k] of Object.entries(kernels)) {
    const ok =
      isObject(k) &&
      Array.isArray(k.bindings) &&
      k.bindings.every((b) => isObject(b) && isCount(b.binding) && BINDING_TYPES.includes(b.type)) &&
      Array.isArray(k.uniforms) &&
      k.uniforms.every((u) => typeof u === "string") &&
      isObject(k.files) &&
      Object.values(k.files).every(isSafeBundlePath);
    if (!ok) throw new PlanError(`plan kernel ${name.slice(0, 80)} is malformed (it needs bindings, uniforms and files inside the bundle)`);
  }
  let longest = 0;
  for (const [ename, entry] of Object.entries(entries)) {
    if (!isObject(entry) || !isCount(entry.max_seq_len) || entry.max_seq_len < 1 || !Array.isArray(entry.dispatches)) {
      throw new PlanError(`plan entry ${ename.slice(0, 80)} is malformed`);
    }
    longest = Math.max(longest, entry.max_seq_len);
    entry.dispatches.forEach((d: unknown, i: number) => {
      const label = isObject(d) ? (typeof d.label === "string" ? d.label : d.kernel) : undefined;
      const where = `plan entry ${ename}, dispatch ${i} (${typeof label === "string" ? label.slice(0, 80) : shown(label)})`;
      if (!isObject(d) || !Array.isArray(d.bindings) || !Array.isArray(d.uniforms)) throw new PlanError(`${where} is malformed`);
      const k = own(kernels, d.kernel) as PlanKernel | undefined;
      if (!k) throw new PlanError(`${where}: unknown kernel ${shown(d.kernel)}`);
      if (d.uniforms.length !== k.uniforms.length) {
        throw new PlanError(`${where}: ${d.uniforms.length} uniform values for kernel fields [${k.uniforms.join(", ")}]`);
      }
      if (!Array.isArray(d.workgroups) || d.workgroups.length !== 3) throw new PlanError(`${where}: workgroups must have 3 entries`);
      const declared = new Set(k.bindings.filter((b) => b.type !== "uniform").map((b) => b.binding));
      for (const pair of d.bindings as unknown[]) {
        if (!Array.isArray(pair) || pair.length !== 2) throw new PlanError(`${where}: a binding is not a [binding, buffer] pair`);
        const [n, buf] = pair;
        if (own(buffers, buf) === undefined) throw new PlanError(`${where}: binding ${shown(n)} names unknown buffer ${shown(buf)}`);
        if (!declared.delete(n)) throw new PlanError(`${where}: binding ${shown(n)} is not a storage binding of the kernel`);
      }
      if (declared.size) throw new PlanError(`${where}: bindings ${[...declared].join(", ")} are not bound`);
      d.uniforms.forEach((u) => check(u, where));
      d.workgroups.forEach((w) => check(w, where));
    });
  }
  const tokens = own(buffers, p.inputs.tokens) as PlanBuffer | undefined;
  if (!tokens || tokens.kind === "weight" || tokens.dtype !== "u32" || tokens.elements < longest) {
    throw new PlanError(`plan.json: the tokens buffer ${shown(p.inputs.tokens)} must be a u32 array of at least ${longest} elements`);
  }
  const logits = own(buffers, p.outputs.logits) as PlanBuffer | undefined;
  if (!logits || logits.kind === "weight" || logits.dtype !== "f32") {
    throw new PlanError(`plan.json: the logits buffer ${shown(p.outputs.logits)} must be an f32 array`);
  }
  if (own(entries, ARGMAX_ENTRY) !== undefined) {
    const next = typeof p.outputs.next_token === "string" ? (own(buffers, p.outputs.next_token) as PlanBuffer | undefined) : undefined;
    if (!next || next.kind === "weight" || next.dtype !== "u32" || next.elements < 1) {
      throw new PlanError(`plan.json: the "${ARGMAX_ENTRY}" entry needs outputs.next_token, a u32 array (package the model again)`);
    }
  }
  if (own(entries, VERIFY_ENTRY) !== undefined) {
    const rows = typeof p.outputs.logits_rows === "string" ? (own(buffers, p.outputs.logits_rows) as PlanBuffer | undefined) : undefined;
    const want = (entries[VERIFY_ENTRY] as PlanEntry).max_seq_len * logits.elements;
    if (!rows || rows.kind === "weight" || rows.dtype !== "f32" || rows.elements < want) {
      throw new PlanError(
        `plan.json: the "${VERIFY_ENTRY}" entry needs outputs.logits_rows, an f32 array of max_seq_len × vocab (${want}) elements (package the model again)`,
      );
    }
  }
  const verifyArgmax = own(entries, VERIFY_ARGMAX_ENTRY) as PlanEntry | undefined;
  if (verifyArgmax !== undefined) {
    const out = typeof p.outputs.verify_tokens === "string" ? (own(buffers, p.outputs.verify_tokens) as PlanBuffer | undefined) : undefined;
    if (!out || out.kind === "weight" || out.dtype !== "u32" || out.elements < 2 * verifyArgmax.max_seq_len) {
      throw new PlanError(
        `plan.json: the "${VERIFY_ARGMAX_ENTRY}" entry needs outputs.verify_tokens, a u32 array of 2 × its max_seq_len elements (package the model again)`,
      );
    }
  }
  const topk = own(entries, TOPK_ENTRY) as PlanEntry | undefined;
  if (topk !== undefined) {
    const k = topk.k;
    const out = typeof p.outputs.topk === "string" ? (own(buffers, p.outputs.topk) as PlanBuffer | undefined) : undefined;
    const inv = typeof p.inputs.inv_temperature === "string" ? (own(buffers, p.inputs.inv_temperature) as PlanBuffer | undefined) : undefined;
    if (!isCount(k) || k < 1 || !out || out.kind === "weight" || out.dtype !== "u32" || out.elements < 2 * k + 2 ||
        !inv || inv.kind === "weight" || inv.dtype !== "f32" || inv.elements < 1) {
      throw new PlanError(`plan.json: the "${TOPK_ENTRY}" entry needs a count k, outputs.topk (u32 [2 k + 2]) and inputs.inv_temperature (f32) (package the model again)`);
    }
  }
  return p;
}

/**
 * The optional entry point that lists the K largest logits of the last run, with the softmax
 * sum at the temperature in inputs.inv_temperature, into outputs.topk (docs/plan.md).
 */
export const TOPK_ENTRY = "topk";

/** K of the plan's "topk" entry (parsePlan checked its buffers), or 0 without one. */
export function topKOf(plan: Plan): number {
  const e = plan.entries[TOPK_ENTRY];
  return e !== undefined && plan.outputs.topk !== undefined && plan.inputs.inv_temperature !== undefined ? (e.k ?? 0) : 0;
}

/** The plan's tokens buffer (parsePlan checked it is a u32 array). */
export function tokensBuffer(plan: Plan): ArrayPlanBuffer {
  return plan.buffers[plan.inputs.tokens] as ArrayPlanBuffer;
}

/**
 * The optional entry point that writes the greedy next token of the last run's logits
 * into outputs.next_token (bundles before it lack it: the runtime reads the logits).
 */
export const ARGMAX_ENTRY = "argmax";

/** Whether the plan can pick the greedy next token on the device (parsePlan checked its output). */
export function hasArgmax(plan: Plan): boolean {
  return plan.entries[ARGMAX_ENTRY] !== undefined && plan.outputs.next_token !== undefined;
}

/**
 * The optional entry point that runs up to its max_seq_len tokens like prefill and writes the
 * logits of every one of them into outputs.logits_rows (speculative decoding's verify step).
 */
export const VERIFY_ENTRY = "verify";

/** Whether the plan has the verify entry (parsePlan checked its output). */
export function hasVerify(plan: Plan): boolean {
  return plan.entries[VERIFY_ENTRY] !== undefined && plan.outputs.logits_rows !== undefined;
}

/**
 * The optional entry point, run after verify, that writes the greedy token of every row of
 * outputs.logits_rows ([id, f32 bits] per row) into outputs.verify_tokens (bundles before it
 * lack it: the runtime reads the rows).
 */
export const VERIFY_ARGMAX_ENTRY = "verify_argmax";

/**
 * Whether the plan can pick the greedy token of every verify row on the device: it has both
 * entries, verify_argmax for as many rows as verify runs (parsePlan checked its output).
 */
export function hasVerifyArgmax(plan: Plan): boolean {
  const e = plan.entries[VERIFY_ARGMAX_ENTRY];
  return hasVerify(plan) && e !== undefined && plan.outputs.verify_tokens !== undefined && e.max_seq_len >= plan.entries[VERIFY_ENTRY]!.max_seq_len;
}

/** Most tokens of one verify call, or undefined when the plan has no verify entry. */
export function verifyMaxTokens(plan: Plan): number | undefined {
  return hasVerify(plan) ? plan.entries[VERIFY_ENTRY]!.max_seq_len : undefined;
}

/** The plan's logits buffer (parsePlan checked it is an f32 array). */
export function logitsBuffer(plan: Plan): ArrayPlanBuffer {
  return plan.buffers[plan.outputs.logits] as ArrayPlanBuffer;
}

export const align = (n: number, a = 16) => Math.ceil(n / a) * a;

/** Bytes of one element of a plan dtype in a variant ("act" is f16 in the f16 variant). */
export function itemBytes(dtype: ArrayPlanBuffer["dtype"], variant: string): number {
  return dtype === "act" && variant === "f16" ? 2 : 4;
}

/** Bytes to allocate for a plan buffer (docs/plan.md, "Buffers"). */
export function bufferBytes(buf: PlanBuffer, variant: string): number {
  const n = buf.kind === "weight" ? buf.bytes : buf.elements * itemBytes(buf.dtype, variant);
  return Math.max(16, align(n));
}

/** Bytes of all buffers of a kind (or all) in a variant. */
export function planBytes(plan: Plan, variant: string, kind?: PlanBuffer["kind"]): number {
  let n = 0;
  for (const b of Object.values(plan.buffers)) if (!kind || b.kind === kind) n += bufferBytes(b, variant);
  return n;
}

/**
 * The first variant of `variant_order` whose features all are in `features`, or
 * null (then the caller says which features are missing).
 */
export function chooseVariant(plan: Plan, features: ReadonlySet<string>, want: string = "auto"): string | null {
  const order = want === "auto" ? plan.variant_order : [want];
  for (const v of order) {
    const spec = plan.variants[v];
    if (spec && spec.features.every((f) => features.has(f))) return v;
  }
  return null;
}

/** A weight buffer's share of one part: bytes [offset, offset + bytes) of the part. */
export interface WeightBlock {
  buffer: string;
  offset: number;
  bytes: number;
}

/**
 * For each "tensor:part" the weight buffers that hold its bytes, by part offset. A
 * loader routes a chunk of a part to the blocks whose range it intersects.
 */
export function weightBlocks(plan: Plan): Map<string, WeightBlock[]> {
  const out = new Map<string, WeightBlock[]>();
  for (const [name, b] of Object.entries(plan.buffers)) {
    if (b.kind !== "weight") continue;
    const key = `${b.tensor}:${b.part}`;
    let list = out.get(key);
    if (!list) out.set(key, (list = []));
    list.push({ buffer: name, offset: b.offset, bytes: b.bytes });
  }
  for (const list of out.values()) list.sort((a, b) => a.offset - b.offset);
  return out;
}

/** Calls fn for every piece of a part range [offset, offset + bytes) that falls into a block. */
export function forEachBlockPiece(
  blocks: readonly WeightBlock[] | undefined,
  offset: number,
  bytes: number,
  fn: (block: WeightBlock, offsetInBlock: number, offsetInRange: number, length: number) => void,
): void {
  if (!blocks) return;
  const end = offset + bytes;
  for (const blk of blocks) {
    const a = Math.max(offset, blk.offset);
    const b = Math.min(end, blk.offset + blk.bytes);
    if (a < b) fn(blk, a - blk.offset, a - offset, b - a);
  }
}

/**
 * An entry point prepared for repeated calls. Every distinct expression of its
 * dispatches is parsed once and evaluated once per call (into `values`); each
 * dispatch's uniforms and workgroup counts are indices into that table. Dispatches
 * with the same uniform list share one "uniform slot" (one buffer in an executor),
 * as docs/plan.md allows. Nothing is allocated per call.
 */
export class EntryProgram {
  /** distinct expressions of the entry */
  readonly exprs: (string | number)[] = [];
  /** values of `exprs` for the last `evaluate` */
  readonly values: Float64Array;
  /** distinct uniform lists: indices into exprs (and values) */
  readonly slots: number[][] = [];
  /** per dispatch: its uniform slot (an index into slots) */
  readonly slotOf: Int32Array;
  /** per dispatch: 3 indices into exprs (and values) */
  readonly workgroupExprs: Int32Array;
  /** per dispatch, after `evaluate`: workgroup counts x, y, z */
  readonly counts: Uint32Array;
  private lastSeq = -1;
  private lastPast = -1;

  constructor(
    readonly name: string,
    readonly entry: PlanEntry,
  ) {
    const exprIndex = new Map<string, number>();
    const idx = (e: string | number) => {
      const key = typeof e === "number" ? `#${e}` : e.replace(/\s+/g, "");
      let i = exprIndex.get(key);
      if (i === undefined) {
        i = this.exprs.length;
        this.exprs.push(e);
        exprIndex.set(key, i);
      }
      return i;
    };
    const slotIndex = new Map<string, number>();
    const n = entry.dispatches.length;
    this.slotOf = new Int32Array(n);
    this.workgroupExprs = new Int32Array(3 * n);
    this.counts = new Uint32Array(3 * n);
    entry.dispatches.forEach((d, i) => {
      const u = d.uniforms.map(idx);
      const key = u.join(",");
      let s = slotIndex.get(key);
      if (s === undefined) {
        s = this.slots.length;
        this.slots.push(u);
        slotIndex.set(key, s);
      }
      this.slotOf[i] = s;
      const [x, y, z] = d.workgroups;
      this.workgroupExprs.set([idx(x), idx(y), idx(z)], 3 * i);
    });
    this.values = new Float64Array(this.exprs.length);
  }

  /**
   * Evaluates every expression for `dims` (skipped when the dims did not change).
   * Throws PlanError for a value outside u32, naming the expression.
   */
  evaluate(seqLen: number, pastLen: number): void {
    if (seqLen === this.lastSeq && pastLen === this.lastPast) return;
    const env: Dims = { seq_len: seqLen, past_len: pastLen };
    for (let i = 0; i < this.exprs.length; i++) {
      const e = this.exprs[i]!; // i < exprs.length
      let v: number;
      try {
        v = evalExpr(e, env as unknown as Record<string, number>);
      } catch (e) {
        if (e instanceof ExprError) throw new PlanError(`entry ${this.name} at seq_len=${seqLen}, past_len=${pastLen}: ${e.message}`);
        throw e;
      }
      if (v < 0 || v > 0xffffffff) {
        throw new PlanError(`entry ${this.name}: ${JSON.stringify(e)} = ${v} at seq_len=${seqLen}, past_len=${pastLen} is not a u32`);
      }
      this.values[i] = v;
    }
    // workgroupExprs and counts have the same length; their entries index values
    const w = this.workgroupExprs;
    for (let i = 0; i < w.length; i++) this.counts[i] = this.values[w[i]!]!;
    this.lastSeq = seqLen;
    this.lastPast = pastLen;
  }

  /** Writes slot `s`'s uniform values (after `evaluate`) into `out`; true when they changed. */
  fillSlot(s: number, out: Uint32Array): boolean {
    const u = this.slots[s];
    if (!u) throw new RangeError(`entry ${this.name} has no uniform slot ${s}`);
    let changed = false;
    for (let j = 0; j < u.length; j++) {
      const v = this.values[u[j]!]!; // slot entries index values
      if (out[j] !== v) {
        out[j] = v;
        changed = true;
      }
    }
    return changed;
  }
}

/** Checks the call shape an entry point allows, and the context window. */
export function checkCall(plan: Plan, entry: string, seqLen: number, pastLen: number): void {
  const e = plan.entries[entry];
  if (!e) throw new PlanError(`the plan has no entry point ${JSON.stringify(entry)}`);
  if (!Number.isInteger(seqLen) || seqLen < 1 || seqLen > e.max_seq_len) {
    throw new RangeError(`${entry}: seq_len ${seqLen} outside 1..${e.max_seq_len}`);
  }
  checkWindow(plan, entry, pastLen, seqLen);
}

/** Checks that `count` tokens at positions pastLen.. fit the context window (`what` names the call). */
export function checkWindow(plan: Plan, what: string, pastLen: number, count: number): void {
  if (!Number.isInteger(pastLen) || pastLen < 0 || pastLen + count > plan.context_window) {
    throw new RangeError(
      `${what}: positions ${pastLen}..${pastLen + count - 1} do not fit the context window of ${plan.context_window} tokens`,
    );
  }
}
