// Decode, gated MLP (the gate and up projections and their activation in one kernel):
// y[t, row0 + n] = act(x[t] . Wg[n]) * (x[t] . Wu[n]) for n < rows, t = workgroup_id.y,
// act = SiLU (ACT 0: x / (1 + e^-x)) or GELU-tanh (ACT 1, Gemma), in f32, stored once.
// matvec.wgsl's reduction, done for both weights: RPW = {{ROWS}} rows per workgroup, TPR = {{THREADS_PER_ROW}}
// threads per row taking turns over the quantization groups, x staged in workgroup memory
// in chunks of up to {{X_CHUNK}} values; so g and u are the values the two mat-vecs compute.
// bindings: 0 uniform, 1 x act[*, K], 2 y act[*, N], 8.. Wg's parts, then Wu's (the w2_ fragment)
// workgroups: (cdiv(rows, {{ROWS}}), seq_len, 1)
{{PRELUDE}}
const K: u32 = {{K}}u;
const N: u32 = {{N}}u;            // row stride of y
const ACT: u32 = {{ACT}}u;        // 0 SiLU, 1 GELU-tanh
const TPR: u32 = {{THREADS_PER_ROW}}u;
const RPW: u32 = {{ROWS}}u;
const XC: u32 = min(K, {{X_CHUNK}}u);

struct Params { seq_len: u32, row0: u32, rows: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;

{{WEIGHTS}}

{{WEIGHTS2}}

var<workgroup> xs: array<vec4<f32>, XC / 4u>;
var<workgroup> red_g: array<f32, {{WG}}>;
var<workgroup> red_u: array<f32, {{WG}}>;

// act(g) * u as silu_mul.wgsl and gelu_tanh_mul.wgsl compute it
fn gated(g: f32, u: f32) -> f32 {
  if (ACT == 1u) {
    let z = 0.7978845608028654 * (g + 0.044715 * g * g * g);
    let e = exp(-2.0 * abs(z));
    let th = select(-1.0, 1.0, z >= 0.0) * (1.0 - e) / (1.0 + e);
    return 0.5 * g * (1.0 + th) * u;
  }
  return g / (1.0 + exp(-g)) * u;
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  let r = wid.x * RPW + tid / TPR;
  let j = tid % TPR;
  let row = min(r, p.rows - 1u);   // rows past the end compute a copy, never stored
  var acc_g = 0.0;
  var acc_u = 0.0;
  for (var k0 = 0u; k0 < K; k0 += XC) {
    workgroupBarrier();
    for (var i = tid; i < XC / 4u; i += {{WG}}u) {
      if (k0 / 4u + i < K / 4u) { xs[i] = vec4<f32>(x[(t * K + k0) / 4u + i]); }
    }
    workgroupBarrier();
    let groups = min(XC, K - k0) / GK;
    for (var g = j; g < groups; g += TPR) {
      acc_g += wdot(row, k0 / GK + g, g * (GK / 4u));
      acc_u += w2_wdot(row, k0 / GK + g, g * (GK / 4u));
    }
  }
  red_g[tid] = acc_g;
  red_u[tid] = acc_u;
  workgroupBarrier();
  if (j == 0u && r < p.rows && t < p.seq_len) {
    let g = red_g[tid] + red_g[tid + 1u] + red_g[tid + 2u] + red_g[tid + 3u];
    let u = red_u[tid] + red_u[tid + 1u] + red_u[tid + 2u] + red_u[tid + 3u];
    y[t * N + p.row0 + r] = act(gated(g, u));
  }
}
