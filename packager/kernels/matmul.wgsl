// Prefill matmul (tiled): y[m, row0 + n] = sum_k x[m, k] * W[n, k]
// for m < seq_len, n < rows (rows of the bound weight block).
// A {{WG}}-thread ({{WG_X}} x {{WG_Y}}) workgroup computes a {{TILE_M}} (tokens) x {{TILE_N}} (rows) output tile, 4 x 8
// outputs per thread, stepping through K in tiles of {{TILE_K}} staged (dequantized, f32) in
// workgroup memory.
// bindings: 0 uniform, 1 x act[seq, K], 2 y OUT[seq, N], 8.. weight parts
// workgroups: (cdiv(rows, {{TILE_N}}), cdiv(seq_len, {{TILE_M}}), 1)
{{PRELUDE}}
const K: u32 = {{K}}u;
const N: u32 = {{N}}u;       // row stride of y: all rows of the weight
const TM: u32 = {{TILE_M}}u;         // tile rows (tokens)
const TN: u32 = {{TILE_N}}u;         // tile columns (weight rows)
const TK: u32 = {{TILE_K}}u;         // K step
const T4: u32 = TK / 4u;     // vec4s per K step
const KC: u32 = K / 8u;      // 8-wide column chunks per weight row

struct Params { seq_len: u32, row0: u32, rows: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act4>;
@group(0) @binding(2) var<storage, read_write> y: array<{{OUT}}>;

{{WEIGHTS}}

var<workgroup> xs: array<vec4<f32>, TM * T4>;   // [m][k / 4]
var<workgroup> ws: array<vec4<f32>, TN * T4>;   // [n][k / 4]

@compute @workgroup_size({{WG_X}}, {{WG_Y}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let n0 = wid.x * TN;
  let m0 = wid.y * TM;
  // thread (lid.x, lid.y) owns rows m0 + lid.y + 8i (i < 4) and columns n0 + lid.x + 8j
  // (j < 8): acc[i][j] for j < 4, acc2[i][j - 4] for the others
  var acc: array<vec4<f32>, 4>;
  var acc2: array<vec4<f32>, 4>;
  for (var kc0 = 0u; kc0 < KC; kc0 += TK / 8u) {
    for (var e = tid; e < TM * T4; e += {{WG}}u) {
      let m = m0 + e / T4;
      let k4 = kc0 * 2u + e % T4;
      var v = vec4<f32>(0.0);
      if (m < p.seq_len && k4 < K / 4u) { v = vec4<f32>(x[m * (K / 4u) + k4]); }
      xs[e] = v;
    }
    for (var e = tid; e < TN * T4 / 2u; e += {{WG}}u) {
      let n = e / (TK / 8u);
      let c = e % (TK / 8u);
      var w = W8(vec4<f32>(0.0), vec4<f32>(0.0));
      if (n0 + n < p.rows && kc0 + c < KC) { w = wload8(n0 + n, kc0 + c); }
      ws[n * T4 + c * 2u] = w.a;
      ws[n * T4 + c * 2u + 1u] = w.b;
    }
    workgroupBarrier();
    for (var c4 = 0u; c4 < T4; c4++) {
      let b0 = ws[lid.x * T4 + c4];
      let b1 = ws[(lid.x + 8u) * T4 + c4];
      let b2 = ws[(lid.x + 16u) * T4 + c4];
      let b3 = ws[(lid.x + 24u) * T4 + c4];
      let b4 = ws[(lid.x + 32u) * T4 + c4];
      let b5 = ws[(lid.x + 40u) * T4 + c4];
      let b6 = ws[(lid.x + 48u) * T4 + c4];
      let b7 = ws[(lid.x + 56u) * T4 + c4];
      for (var i = 0u; i < 4u; i++) {
        let a = xs[(lid.y + 8u * i) * T4 + c4];
        acc[i] += vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
        acc2[i] += vec4<f32>(dot(a, b4), dot(a, b5), dot(a, b6), dot(a, b7));
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y + 8u * i;
    if (m >= p.seq_len) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x + 8u * j;
      if (n < p.rows) { y[m * N + p.row0 + n] = {{OUT}}(acc[i][j]); }
      if (n + 32u < p.rows) { y[m * N + p.row0 + n + 32u] = {{OUT}}(acc2[i][j]); }
    }
  }
}
