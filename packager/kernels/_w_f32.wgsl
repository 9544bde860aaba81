// Weight fragment, format f32 (docs/formats.md): part `weight` f32[rows, K].
// Every weight fragment declares its parts at bindings 8.. and provides, for a row of
// the bound row block: wload8(row, k8) -> W8, the 8 dequantized values of columns
// [8 k8, 8 k8 + 8); and wdot(row, g, x4), the dot product of the GK columns of group g
// with x staged in the including kernel's workgroup array `xs` (vec4<f32>) from xs[x4].
@group(0) @binding(8) var<storage, read> w_weight: array<vec4<f32>>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

fn wload8(row: u32, k8: u32) -> W8 {
  let i = row * (K / 4u) + k8 * 2u;
  return W8(w_weight[i], w_weight[i + 1u]);
}

// wdot(row, g, x4): sum over the GK = 8 columns of group g of W[row, c] * x[c], with x
// read from the including kernel's workgroup array `xs` (vec4<f32>) at xs[x4 ..].
const GK: u32 = 8u;

fn wdot(row: u32, g: u32, x4: u32) -> f32 {
  let i = row * (K / 4u) + g * 2u;
  return dot(xs[x4], w_weight[i]) + dot(xs[x4 + 1u], w_weight[i + 1u]);
}
