// Bias of a linear layer, in place: x[t, i] += b[i] for t * W + i < n (n = seq_len * W).
// bindings: 0 uniform, 1 x act[*, W] (in/out), 8 b f32[W]
// workgroups: grid over n threads (x, y; {{WG}} per workgroup)
{{PRELUDE}}
const W: u32 = {{W}}u;

struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<act>;
@group(0) @binding(8) var<storage, read> b: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * {{WG}}u + tid;
  if (i >= p.n) { return; }
  x[i] = act(f32(x[i]) + b[i % W]);
}
