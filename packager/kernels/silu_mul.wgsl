// SiLU-gated MLP activation, in place: g[i] = silu(g[i]) * u[i], silu(x) = x / (1 + e^-x),
// for i < n (n = seq_len * intermediate_size).
// bindings: 0 uniform, 1 g act[] (gate in, result out), 2 u act[] (up)
// workgroups: grid over n threads (x, y; {{WG}} per workgroup)
{{PRELUDE}}
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> g: array<act>;
@group(0) @binding(2) var<storage, read> u: array<act>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  let i = (wid.y * nwg.x + wid.x) * {{WG}}u + tid;
  if (i >= p.n) { return; }
  let x = f32(g[i]);
  g[i] = act(x / (1.0 + exp(-x)) * f32(u[i]));
}
