// Verify matmul (a few tokens): y[t, row0 + n] = sum_k x[t, k] * W[n, k] for t < seq_len,
// n < rows (rows of the bound weight block).
// matvec's layout, RPW = {{ROWS}} rows per {{WG}}-thread workgroup and TPR = {{THREADS_PER_ROW}} threads per row, over
// the tokens in passes of 8: each weight is loaded and dequantized (wload8) once per pass
// for all its tokens, where matvec loads it once per token and matmul computes whole
// tiles of tokens however few there are. A thread's sums of a pass stay in two vec4s
// (tokens 0-3, and 4-7 while the pass has more than 4; a pass of fewer tokens repeats its
// last one, computed and not stored). x is read from storage, not staged: staging 8
// tokens' x in workgroup memory cost more than the dot products (SwiftShader).
// bindings: 0 uniform, 1 x act[seq, K], 2 y OUT[seq, N], 8.. weight parts
// workgroups: (cdiv(rows, {{ROWS}}), 1, 1)
{{PRELUDE}}
const K: u32 = {{K}}u;
const N: u32 = {{N}}u;            // row stride of y: all rows of the weight
const TPR: u32 = {{THREADS_PER_ROW}}u;              // threads per row
const RPW: u32 = {{ROWS}}u;             // rows per workgroup

struct Params { seq_len: u32, row0: u32, rows: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(2) var<storage, read_write> y: array<{{OUT}}>;

{{WEIGHTS}}

var<workgroup> red: array<vec4<f32>, 2u * {{WG}}u>;
var<private> xs: array<vec4<f32>, 1>;   // only named by the fragment's wdot, which this kernel does not call

// the dot product of the 8 weights w (columns [8 k8, 8 k8 + 8)) with those of token t's x
fn dot8(w: W8, t: u32, k8: u32) -> f32 {
  let i = t * (K / 4u) + 2u * k8;
  return dot(w.a, vec4<f32>(x[i])) + dot(w.b, vec4<f32>(x[i + 1u]));
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r = wid.x * RPW + tid / TPR;
  let j = tid % TPR;
  let row = min(r, p.rows - 1u);   // rows past the end compute a copy, never stored
  for (var t0 = 0u; t0 < p.seq_len; t0 += 8u) {
    let n = min(p.seq_len - t0, 8u);
    let last = t0 + n - 1u;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var k8 = j; k8 < K / 8u; k8 += TPR) {
      let w = wload8(row, k8);
      lo += vec4<f32>(dot8(w, t0, k8), dot8(w, min(t0 + 1u, last), k8), dot8(w, min(t0 + 2u, last), k8),
                      dot8(w, min(t0 + 3u, last), k8));
      if (n > 4u) {
        hi += vec4<f32>(dot8(w, t0 + 4u, k8), dot8(w, min(t0 + 5u, last), k8), dot8(w, min(t0 + 6u, last), k8),
                        dot8(w, min(t0 + 7u, last), k8));
      }
    }
    workgroupBarrier();
    red[tid] = lo;
    red[{{WG}}u + tid] = hi;
    workgroupBarrier();
    if (j == 0u && r < p.rows) {
      let s0 = red[tid] + red[tid + 1u] + red[tid + 2u] + red[tid + 3u];
      let s1 = red[{{WG}}u + tid] + red[{{WG}}u + tid + 1u] + red[{{WG}}u + tid + 2u] + red[{{WG}}u + tid + 3u];
      for (var t = 0u; t < n; t++) {
        y[(t0 + t) * N + p.row0 + r] = {{OUT}}(select(s1, s0, t < 4u)[t % 4u]);
      }
    }
  }
}
