// Embedding gather: y[t, :] = E[tokens[t], :] * SCALE for t < seq_len, E in any weight
// format (SCALE: Gemma's sqrt(hidden_size), 1 elsewhere).
// A table split into row blocks runs once per block; each run writes only the tokens
// whose id falls into its block [row0, row0 + rows).
// The residual stream y is f32 in both variants.
// bindings: 0 uniform, 1 tokens u32[], 2 y f32[seq, K], 8.. weight parts
// workgroups: (cdiv(K / 8, {{WG}}), seq_len, 1)
{{PRELUDE}}
const K: u32 = {{K}}u;
const SCALE: f32 = {{SCALE}};

struct Params { seq_len: u32, row0: u32, rows: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;

{{WEIGHTS}}

var<workgroup> xs: array<vec4<f32>, 1>;   // (the weight fragment's wdot needs it; unused)

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  let k8 = wid.x * {{WG}}u + tid;
  if (t >= p.seq_len || k8 >= K / 8u) { return; }
  let tok = tokens[t];
  if (tok < p.row0 || tok - p.row0 >= p.rows) { return; }
  let w = wload8(tok - p.row0, k8);
  y[t * (K / 4u) + k8 * 2u] = w.a * SCALE;
  y[t * (K / 4u) + k8 * 2u + 1u] = w.b * SCALE;
}
