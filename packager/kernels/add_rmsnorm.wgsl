// Residual add fused with the next RMSNorm (docs/plan.md, "Fused dispatches"), per row r =
// in_row0 + t: x[r, i] += y[r, i], then out[t, i] = x[r, i] / sqrt(mean_i(x[r]^2) + EPS) * w[i].
// x is the residual stream (f32 in both variants); y is an activation (Y = act) or f32 (Gemma's
// `o`). The same arithmetic, in the same order, as `add` then `rmsnorm`. One workgroup per row;
// each thread reads and writes the same elements i in both passes. y and out must be different
// buffers (WebGPU forbids binding one buffer as read and read_write in a dispatch): when the
// norm writes y itself, the plan uses `add_rmsnorm_inplace`.
// bindings: 0 uniform, 1 x f32[*, H] (in/out), 2 y Y[*, H], 3 out act[*, H], 8 w f32[H]
// workgroups: (rows, 1, 1)
{{PRELUDE}}
const H: u32 = {{H}}u;
const EPS: f32 = {{EPS}};
const WG: u32 = {{WG}}u;

struct Params { in_row0: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<{{Y}}>;
@group(0) @binding(3) var<storage, read_write> out: array<act>;
@group(0) @binding(8) var<storage, read> w: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let src = (p.in_row0 + wid.x) * H;
  let dst = wid.x * H;
  var s = 0.0;
  for (var i = tid; i < H; i += WG) {
    let v = x[src + i] + f32(y[src + i]);
    x[src + i] = v;
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
    out[dst + i] = act(x[src + i] * inv * w[i]);
  }
}
