// Residual add, in place: x[i] += y[i] for i < n (n = seq_len * hidden_size).
// x is the residual stream, f32 in both variants.
// bindings: 0 uniform, 1 x f32[] (in/out), 2 y act[]
// workgroups: grid over n threads (x, y; {{WG}} per workgroup)
{{PRELUDE}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<act>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * {{WG}}u + tid;
  if (i >= p.n) { return; }
  x[i] = x[i] + f32(y[i]);
}
