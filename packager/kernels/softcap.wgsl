// Soft-capping, in place: x[i] = tanh(x[i] / CAP) * CAP for i < n (Gemma 2's final-logit
// soft-capping; x: f32 logits).
// bindings: 0 uniform, 1 x f32[] (in/out)
// workgroups: grid over n threads (x, y; {{WG}} per workgroup)
{{PRELUDE}}
const CAP: f32 = {{CAP}};

struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * {{WG}}u + tid;
  if (i >= p.n) { return; }
  let v = x[i];
  let e = exp(-2.0 * abs(v) / CAP);   // tanh from e^-2|x|, which cannot overflow
  x[i] = select(-1.0, 1.0, v >= 0.0) * (1.0 - e) / (1.0 + e) * CAP;
}
