// RMSNorm (Llama): y[t, i] = x[in_row0 + t, i] / sqrt(mean_i(x^2) + EPS) * w[i],
// statistics in f32. One workgroup per output row t. A row is H values: a token's hidden
// state (x: the residual stream, f32 in both variants) or one head of q or k (Qwen3's
// q_norm / k_norm; x: an activation, IN = act).
// bindings: 0 uniform, 1 x IN[*, H], 2 y act[*, H], 8 w f32[H]
// workgroups: (rows, 1, 1)
{{PRELUDE}}
const H: u32 = {{H}}u;
const EPS: f32 = {{EPS}};
const WG: u32 = {{WG}}u;

struct Params { in_row0: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{IN}}>;
@group(0) @binding(2) var<storage, read_write> y: array<act>;
@group(0) @binding(8) var<storage, read> w: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let src = (p.in_row0 + wid.x) * H;
  let dst = wid.x * H;
  var s = 0.0;
  for (var i = tid; i < H; i += WG) {
    let v = f32(x[src + i]);
    s += v * v;
  }
  red[tid] = s;
  workgroupBarrier();
  for (var st = WG / 2u; st > 0u; st >>= 1u) {
    if (tid < st) { red[tid] += red[tid + st]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / f32(H) + EPS);
  for (var i = tid; i < H; i += WG) {
    y[dst + i] = act(f32(x[src + i]) * inv * w[i]);
  }
}
