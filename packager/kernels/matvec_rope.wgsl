// Decode q or k projection with RoPE fused (one token, at position past_len):
// v[n] = sum_k x[k] * W[n, k] for the N = heads * HD rows of the bound weight (+ bias[n] for
// matvec_rope_bias: a linear layer's bias, f32, added before the rounding to act and the
// rotation, as a biased Linear then rope; Qwen2's q and k), then, per head
// and i < HALF (a = past_len * inv_freq[i], c = SCALE cos a, s = SCALE sin a, as rope.wgsl):
//   y[dst + i] = v[i] c - v[i + HALF] s,   y[dst + i + HALF] = v[i + HALF] c + v[i] s
// (head offsets omitted); values past 2 HALF in a head pass (partial rotary). dst: where the
// output starts: 0 for q, the cache row (past_len % rows) * N for k, written straight into
// the KV cache.
// The matvec of matvec.wgsl with its rows in pair order: slot 2 i of a head computes row i,
// slot 2 i + 1 row i + HALF, so that the pair sits in one workgroup ({{ROWS}} slots, {{THREADS_PER_ROW}} threads
// each, x staged in chunks of up to {{X_CHUNK}} values) and rotates from workgroup memory.
// bindings: 0 uniform, 1 x act[K], 2 y act[], (matvec_rope_bias: 3 bias f32[N]), 8.. weight parts
// workgroups: (cdiv(N, {{ROWS}}), 1, 1)
{{PRELUDE}}
const K: u32 = {{K}}u;
const N: u32 = {{N}}u;
const HD: u32 = {{HD}}u;
const HALF: u32 = {{HALF}}u;
const SCALE: f32 = {{SCALE}};
const TPR: u32 = {{THREADS_PER_ROW}}u;
const RPW: u32 = {{ROWS}}u;
const XC: u32 = min(K, {{X_CHUNK}}u);

var<private> inv_freq: array<f32, HALF> = array<f32, HALF>({{INV_FREQ}});

struct Params { past_len: u32, dst: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
{{BIAS}}
{{WEIGHTS}}

var<workgroup> xs: array<vec4<f32>, XC / 4u>;
var<workgroup> red: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let slot = wid.x * RPW + tid / TPR;
  let j = tid % TPR;
  let s = slot % HD;
  let pair = s < 2u * HALF;
  let in_head = select(s, s / 2u + (s % 2u) * HALF, pair);
  let r = slot - s + in_head;       // the weight row of this slot
  let row = min(r, N - 1u);         // slots past the end compute a copy, never stored
  var acc = 0.0;
  for (var k0 = 0u; k0 < K; k0 += XC) {
    workgroupBarrier();
    for (var i = tid; i < XC / 4u; i += {{WG}}u) {
      if (k0 / 4u + i < K / 4u) { xs[i] = vec4<f32>(x[k0 / 4u + i]); }
    }
    workgroupBarrier();
    let groups = min(XC, K - k0) / GK;
    for (var g = j; g < groups; g += TPR) {
      acc += wdot(row, k0 / GK + g, g * (GK / 4u));
    }
  }
  red[tid] = acc;
  workgroupBarrier();
  if (j == 0u && slot < N) {
    // the value as matvec stores it, before rope.wgsl reads it back
    var v = red[tid] + red[tid + 1u] + red[tid + 2u] + red[tid + 3u] + bias_of(r);
    if (pair) {
      let o = tid ^ TPR;            // the pair's other slot (slots 2 i, 2 i + 1: tid / TPR differs in bit 0)
      let ro = select(r - HALF, r + HALF, s % 2u == 0u);   // its row
      let w = red[o] + red[o + 1u] + red[o + 2u] + red[o + 3u] + bias_of(ro);
      let a = f32(p.past_len) * inv_freq[s / 2u];
      // Cody-Waite reduction of rope.wgsl
      let n = round(a * 0.15915494309189535);
      let rr = (a - n * 6.28125) - n * 1.9353071795864769e-3;
      let c = cos(rr) * SCALE;
      let sn = sin(rr) * SCALE;
      let x1 = f32(act(select(w, v, s % 2u == 0u)));   // row i
      let x2 = f32(act(select(v, w, s % 2u == 0u)));   // row i + HALF
      v = select(x2 * c + x1 * sn, x1 * c - x2 * sn, s % 2u == 0u);
    }
    y[p.dst + r] = act(v);
  }
}
