// Weight fragment, format q4f32: qweight u32[rows, K/8] (8 codes per word, first code in
// the low bits), scales f32[rows, K/32]; value = (q - 8) * scale.
@group(0) @binding(8) var<storage, read> w_q: array<u32>;
@group(0) @binding(9) var<storage, read> w_scales: array<f32>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

fn wload8(row: u32, k8: u32) -> W8 {
  let w = vec4<u32>(w_q[row * (K / 8u) + k8]);
  let s = w_scales[row * (K / 32u) + k8 / 4u];
  let lo = vec4<f32>((w >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) - 8.0;
  let hi = vec4<f32>((w >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) - 8.0;
  return W8(lo * s, hi * s);
}
