// Residual add fused with the next RMSNorm that overwrites the added values (Gemma: the
// post-norms write xn, `x += xn`, then the next norm of x writes xn again; docs/plan.md,
// "Fused dispatches"), per row r = in_row0 + t: x[r, i] += y[r, i], then
// y[r, i] = x[r, i] / sqrt(mean_i(x[r]^2) + EPS) * w[i]. `add_rmsnorm` with out = y, as one
// binding (WebGPU forbids binding one buffer twice when one binding writes it). Each thread
// reads y[r, i] in the first pass and writes it in the last, for the same i: no thread writes
// an element another still has to read. The same arithmetic, in the same order, as `add` then
// `rmsnorm`. One workgroup per row.
// bindings: 0 uniform, 1 x f32[*, H] (in/out), 2 y Y[*, H] (in/out), 8 w f32[H]
// workgroups: (rows, 1, 1)
{{PRELUDE}}
const H: u32 = {{H}}u;
const EPS: f32 = {{EPS}};
const WG: u32 = {{WG}}u;

struct Params { in_row0: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<{{Y}}>;
@group(0) @binding(8) var<storage, read> w: array<f32>;

var<workgroup> red: array<f32, WG>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = (p.in_row0 + wid.x) * H;
  var s = 0.0;
  for (var i = tid; i < H; i += WG) {
    let v = x[row + i] + f32(y[row + i]);
    x[row + i] = v;
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
    y[row + i] = {{Y}}(x[row + i] * inv * w[i]);
  }
}
