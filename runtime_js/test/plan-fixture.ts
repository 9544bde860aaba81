/**
 * A synthetic bundle with a hand-written plan, for testing a plan executor without a
 * real model. Its one weight, `table` (VOCAB rows of VOCAB u32), is split into two
 * row-block buffers and spans several small shards. The kernel `pick` writes
 *
 *   logits[c] = (table[t, c] & 0xffff) + 65536 * past_len     (t = the call's last token)
 *
 * from the block that holds row t, so the logits show that the weights arrived in the
 * right buffers, that the uniforms and the chunked prefill positions are right, and
 * (with a `poison` dispatch whose workgroup count evaluates to 0) that empty
 * dispatches are skipped.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { type FakeBundle, byteTokenizerFiles, makeBundle, tmpDir } from "./fixtures.js";

export const VOCAB = 64;
export const CHUNK = 4;
export const WINDOW = 32;
const ROW_BYTES = VOCAB * 4;
const BLOCK_ROWS = 32;

const PICK = `
struct P { seq_len: u32, past_len: u32, row0: u32, rows: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(8) var<storage, read> w: array<u32>;
const V: u32 = ${VOCAB}u;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  let c = g.x;
  let t = tokens[p.seq_len - 1u];
  if (c >= V || t < p.row0 || t >= p.row0 + p.rows) { return; }
  logits[c] = f32(w[(t - p.row0) * V + c] & 0xffffu) + 65536.0 * f32(p.past_len);
}
`;

const POISON = `
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < p.n) { logits[g.x] = -1.0; }
}
`;

export interface PlanBundle extends FakeBundle {
  plan: any;
  /** the table as u32 words, row-major */
  table: Uint32Array;
}

/** Expected logits after a call whose last token is `token` at past_len `past`. */
export function expectedLogits(b: PlanBundle, token: number, past: number): Float32Array {
  const out = new Float32Array(VOCAB);
  const row = b.table.subarray(token * VOCAB, (token + 1) * VOCAB);
  row.forEach((w, c) => (out[c] = (w & 0xffff) + 65536 * past));
  return out;
}

/**
 * `overrides` are merged into the plan (e.g. other limits or variants); `extraFiles` (path ->
 * text) join the bundle (e.g. more kernels).
 */
export function makePlanBundle(overrides: Record<string, unknown> = {}, shardSize = 4096, extraFiles: Record<string, string> = {}): PlanBundle {
  const limits = {
    maxStorageBufferBindingSize: BLOCK_ROWS * ROW_BYTES,
    maxBufferSize: BLOCK_ROWS * ROW_BYTES,
    maxComputeWorkgroupStorageSize: 0,
    maxComputeInvocationsPerWorkgroup: 64,
    maxComputeWorkgroupSizeX: 64,
    maxStorageBuffersPerShaderStage: 3,
    maxBindingsPerBindGroup: 9,
    maxComputeWorkgroupsPerDimension: 1,
  };
  const kernel = (file: string, bindings: [number, string][], uniforms: string[]) => ({
    template: file,
    files: { f32: `kernels/${file}.f32.wgsl` },
    bindings: bindings.map(([binding, type]) => ({ binding, type })),
    uniforms,
    workgroup_size: [64, 1, 1],
    workgroup_storage_bytes: 0,
  });
  const dispatches = [
    { kernel: "pick", label: "block 0", bindings: [[1, "tokens"], [2, "logits"], [8, "table:p0:0"]], uniforms: ["seq_len", "past_len", "0", String(BLOCK_ROWS)], workgroups: ["1", "1", "1"] },
    { kernel: "pick", label: "block 1", bindings: [[1, "tokens"], [2, "logits"], [8, "table:p0:1"]], uniforms: ["seq_len", "past_len", String(BLOCK_ROWS), String(BLOCK_ROWS)], workgroups: ["1", "1", "1"] },
    { kernel: "poison", label: "never runs", bindings: [[2, "logits"]], uniforms: ["64"], workgroups: ["seq_len - seq_len", "1", "1"] },
  ];
  const plan = {
    format: "llmpack-plan",
    version: 1,
    architecture: "test",
    context_window: WINDOW,
    prefill_chunk: CHUNK,
    dims: ["seq_len", "past_len"],
    variant_order: ["f32"],
    variants: { f32: { features: [], limits, memory: { weights_bytes: VOCAB * ROW_BYTES, kv_cache_bytes: 0, activation_bytes: 0 } } },
    inputs: { tokens: "tokens" },
    outputs: { logits: "logits" },
    kernels: {
      pick: kernel("pick", [[0, "uniform"], [1, "read-only-storage"], [2, "storage"], [8, "read-only-storage"]], ["seq_len", "past_len", "row0", "rows"]),
      poison: kernel("poison", [[0, "uniform"], [2, "storage"]], ["n"]),
    },
    buffers: {
      tokens: { kind: "input", dtype: "u32", elements: CHUNK },
      logits: { kind: "output", dtype: "f32", elements: VOCAB },
      "table:p0:0": { kind: "weight", tensor: "table", part: "p0", offset: 0, bytes: BLOCK_ROWS * ROW_BYTES },
      "table:p0:1": { kind: "weight", tensor: "table", part: "p0", offset: BLOCK_ROWS * ROW_BYTES, bytes: BLOCK_ROWS * ROW_BYTES },
    },
    entries: { prefill: { max_seq_len: CHUNK, dispatches }, decode: { max_seq_len: 1, dispatches } },
    ...overrides,
  };
  const files = {
    ...byteTokenizerFiles(),
    "plan.json": JSON.stringify(plan),
    "kernels/pick.f32.wgsl": PICK,
    "kernels/poison.f32.wgsl": POISON,
    ...extraFiles,
  };
  const dir = tmpDir("llmpack-plan-");
  mkdirSync(path.join(dir, "kernels"), { recursive: true });
  // A small tensor first, so that the table starts on a fresh shard and spans several.
  const b = makeBundle([{ name: "small", parts: [1000] }, { name: "table", parts: [VOCAB * ROW_BYTES] }], shardSize, dir, {
    files,
    manifest: {
      model: { name: "plan-test", architecture: "test", config: { vocab_size: VOCAB, hidden_size: 4, num_hidden_layers: 1, max_position_embeddings: WINDOW } },
      tokenizer: { file: "tokenizer.json", config_file: "tokenizer_config.json", chat_template: null, bos_token: null, eos_token: null, add_bos_token: false },
      memory: { weights_bytes: VOCAB * ROW_BYTES, kv_cache_bytes_per_token: 0, context_window: WINDOW, estimate_bytes: 0 },
    },
  });
  const bytes = b.parts[1]?.[0];
  if (!bytes) throw new Error("the table's part is missing");
  return { ...b, plan, table: new Uint32Array(Uint8Array.from(bytes).buffer) };
}
