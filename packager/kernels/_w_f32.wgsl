// Weight fragment, format f32 (docs/formats.md): part `weight` f32[rows, K].
// Provides wload8(row, k8): the 8 values of columns [8*k8, 8*k8 + 8) of `row`
// (row relative to the bound row block).
@group(0) @binding(8) var<storage, read> w_weight: array<vec4<f32>>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

fn wload8(row: u32, k8: u32) -> W8 {
  let i = row * (K / 4u) + k8 * 2u;
  return W8(w_weight[i], w_weight[i + 1u]);
}
