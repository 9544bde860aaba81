// Greedy next token on the device, per row r = workgroup_id.y of x (rows of n values):
// out[2 r] = the id of the largest of x[r n..(r + 1) n), ties to the lowest id, NaN never
// chosen; out[2 r + 1] = that value's f32 bits. As the CPU sampler's argmax: id 0 when no
// value is above -inf, or when the row's first value is NaN. One workgroup per row: each
// thread scans a strided slice, then a tree reduction; the runtime reads back 8 bytes a
// row, not the vocabulary.
// bindings: 0 uniform, 1 x f32[rows * n] (the logits), 2 out u32[2 rows]
// workgroups: (1, rows, 1) (the "argmax" entry: one row; "verify_argmax": seq_len rows)
{{PRELUDE}}
const WG: u32 = {{WG}}u;
const NONE: u32 = 0xffffffffu;

struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;  // bit test: compilers may fold v != v
}

// (v, i) beats (bv, bi): larger, or equal at a lower id (NONE: no candidate yet)
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != NONE && (bi == NONE || v > bv || (v == bv && i < bi));
}

@compute @workgroup_size({{WG}})
fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let row = wid.y;
  let base = row * p.n;
  var bv = 0.0;
  var bi = NONE;
  for (var i = tid; i < p.n; i += WG) {
    let v = x[base + i];
    if (!is_nan(v) && beats(v, i, bv, bi)) { bv = v; bi = i; }
  }
  best_v[tid] = bv;
  best_i[tid] = bi;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (tid < st && beats(best_v[tid + st], best_i[tid + st], best_v[tid], best_i[tid])) {
      best_v[tid] = best_v[tid + st];
      best_i[tid] = best_i[tid + st];
    }
    workgroupBarrier();
  }
  if (tid == 0u) {
    // no value above -inf (all masked or NaN), or a NaN at id 0: id 0, as the CPU sampler
    var id = best_i[0];
    if (id == NONE || bitcast<u32>(best_v[0]) == 0xff800000u || is_nan(x[base])) { id = 0u; }
    out[2u * row] = id;
    out[2u * row + 1u] = bitcast<u32>(x[base + id]);
  }
}
