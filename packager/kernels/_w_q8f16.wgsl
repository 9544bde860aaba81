// Weight fragment, format q8f16: qweight u32[rows, K/4] (4 codes per word, first code in
// the low bits), scales f16[rows, K/32]; value = (q - 128) * scale.
@group(0) @binding(8) var<storage, read> w_q: array<vec2<u32>>;
@group(0) @binding(9) var<storage, read> w_scales: array<u32>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

fn wload8(row: u32, k8: u32) -> W8 {
  let w = w_q[row * (K / 8u) + k8];
  let si = row * (K / 32u) + k8 / 4u;
  let s = unpack2x16float(w_scales[si >> 1u])[si & 1u];
  let sh = vec4<u32>(0u, 8u, 16u, 24u);
  let lo = vec4<f32>((vec4<u32>(w.x) >> sh) & vec4<u32>(255u)) - 128.0;
  let hi = vec4<f32>((vec4<u32>(w.y) >> sh) & vec4<u32>(255u)) - 128.0;
  return W8(lo * s, hi * s);
}
