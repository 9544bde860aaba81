// Decode matmul (matrix-vector): y[t, row0 + n] = sum_k x[t, k] * W[n, k]
// for n < rows (rows of the bound weight block), t = workgroup_id.y.
// Each workgroup computes ROWS output rows; its 64 threads stride over the 8-wide
// column chunks and the partial sums are reduced in workgroup memory.
// bindings: 0 uniform, 1 x act[*, K], 2 y OUT[*, N], 8.. weight parts
// workgroups: (cdiv(rows, ROWS), seq_len, 1)
{{PRELUDE}}
const K: u32 = {{K}}u;
const N: u32 = {{N}}u;       // row stride of y: all rows of the weight
const ROWS: u32 = 4u;
const WG: u32 = 64u;

struct Params { seq_len: u32, row0: u32, rows: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(2) var<storage, read_write> y: array<{{OUT}}>;

{{WEIGHTS}}

var<workgroup> red: array<f32, 256>;   // ROWS * WG

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let n0 = wid.x * ROWS;
  let t = wid.y;
  let xb = t * (K / 4u);
  var acc = vec4<f32>(0.0);
  for (var k8 = tid; k8 < K / 8u; k8 += WG) {
    let xa = vec4<f32>(x[xb + k8 * 2u]);
    let xc = vec4<f32>(x[xb + k8 * 2u + 1u]);
    for (var r = 0u; r < ROWS; r++) {
      if (n0 + r < p.rows) {
        let w = wload8(n0 + r, k8);
        acc[r] += dot(xa, w.a) + dot(xc, w.b);
      }
    }
  }
  for (var r = 0u; r < ROWS; r++) { red[r * WG + tid] = acc[r]; }
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (tid < st) {
      for (var r = 0u; r < ROWS; r++) { red[r * WG + tid] += red[r * WG + tid + st]; }
    }
    workgroupBarrier();
  }
  if (tid < ROWS && n0 + tid < p.rows && t < p.seq_len) {
    y[t * N + p.row0 + n0 + tid] = {{OUT}}(red[tid * WG]);
  }
}
