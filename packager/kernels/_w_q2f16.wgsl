// Weight fragment, format q2f16: qweight u32[rows, K/16] (16 codes per word, first code
// in the low bits), scales and mins f16[rows, K/64]; value = q * scale + min.
@group(0) @binding(8) var<storage, read> w_q: array<u32>;
@group(0) @binding(9) var<storage, read> w_scales: array<u32>;
@group(0) @binding(10) var<storage, read> w_mins: array<u32>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

fn wload8(row: u32, k8: u32) -> W8 {
  let w = vec4<u32>(w_q[row * (K / 16u) + k8 / 2u] >> ((k8 & 1u) * 16u));
  let gi = row * (K / 64u) + k8 / 8u;
  let s = unpack2x16float(w_scales[gi >> 1u])[gi & 1u];
  let m = unpack2x16float(w_mins[gi >> 1u])[gi & 1u];
  let lo = vec4<f32>((w >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u));
  let hi = vec4<f32>((w >> vec4<u32>(8u, 10u, 12u, 14u)) & vec4<u32>(3u));
  return W8(lo * s + m, hi * s + m);
}
