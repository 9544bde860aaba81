// GELU-gated MLP activation (Gemma), in place: g[i] = gelu_tanh(g[i]) * u[i] for i < n
// (n = seq_len * intermediate_size), with PyTorch's tanh approximation
//   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
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
  let z = 0.7978845608028654 * (x + 0.044715 * x * x * x);
  let e = exp(-2.0 * abs(z));   // tanh from e^-2|z|, which cannot overflow
  let th = select(-1.0, 1.0, z >= 0.0) * (1.0 - e) / (1.0 + e);
  g[i] = act(0.5 * x * (1.0 + th) * f32(u[i]));
}
