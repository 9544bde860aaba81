// Decode matmul (matrix-vector): y[t, row0 + n] = sum_k x[t, k] * W[n, k]
// (+ bias[n] for matvec_bias: a linear layer's bias, f32, added to the sum before it is
// stored; Qwen2's v projection) for n < rows (rows of the bound weight block), t = workgroup_id.y.
// A {{WG}}-thread workgroup computes RPW = {{ROWS}} output rows, TPR = {{THREADS_PER_ROW}} threads per row: x is
// staged in workgroup memory (f32, in chunks of up to {{X_CHUNK}} values), the {{THREADS_PER_ROW}} threads of a
// row take turns over its quantization groups (adjacent memory), and their partial sums
// are reduced in workgroup memory.
// bindings: 0 uniform, 1 x act[*, K], 2 y OUT[*, N], (matvec_bias: 3 bias f32[rows]), 8.. weight parts
// workgroups: (cdiv(rows, {{ROWS}}), seq_len, 1)
{{PRELUDE}}
const K: u32 = {{K}}u;
const N: u32 = {{N}}u;            // row stride of y: all rows of the weight
const TPR: u32 = {{THREADS_PER_ROW}}u;              // threads per row
const RPW: u32 = {{ROWS}}u;             // rows per workgroup
const XC: u32 = min(K, {{X_CHUNK}}u);    // x chunk staged in workgroup memory (multiple of GK)

struct Params { seq_len: u32, row0: u32, rows: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(2) var<storage, read_write> y: array<{{OUT}}>;
{{BIAS}}
{{WEIGHTS}}

var<workgroup> xs: array<vec4<f32>, XC / 4u>;
var<workgroup> red: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  let r = wid.x * RPW + tid / TPR;
  let j = tid % TPR;
  let row = min(r, p.rows - 1u);   // rows past the end compute a copy, never stored
  var acc = 0.0;
  for (var k0 = 0u; k0 < K; k0 += XC) {
    workgroupBarrier();
    for (var i = tid; i < XC / 4u; i += {{WG}}u) {
      if (k0 / 4u + i < K / 4u) { xs[i] = vec4<f32>(x[(t * K + k0) / 4u + i]); }
    }
    workgroupBarrier();
    let groups = min(XC, K - k0) / GK;
    for (var g = j; g < groups; g += TPR) {
      acc += wdot(row, k0 / GK + g, g * (GK / 4u));
    }
  }
  red[tid] = acc;
  workgroupBarrier();
  if (j == 0u && r < p.rows && t < p.seq_len) {
    y[t * N + p.row0 + r] = {{OUT}}(red[tid] + red[tid + 1u] + red[tid + 2u] + red[tid + 3u] + bias_of(r));
  }
}
