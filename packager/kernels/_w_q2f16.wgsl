// Weight fragment, format q2f16: qweight u32[rows, K/16] (16 codes per word, first code
// in the low bits), scales and mins f16[rows, K/64]; value = q * scale + min.
// Every weight fragment declares its parts at bindings 8.. and provides, for a row of
// the bound row block: wload8(row, k8) -> W8, the 8 dequantized values of columns
// [8 k8, 8 k8 + 8); and wdot(row, g, x4), the dot product of the GK columns of group g
// with x staged in the including kernel's workgroup array `xs` (vec4<f32>) from xs[x4].
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

// wdot(row, g, x4): sum over the GK = 64 columns of group g of W[row, c] * x[c], with x
// read from the including kernel's workgroup array `xs` (vec4<f32>) at xs[x4 ..]:
// s * sum q x + m * sum x.
const GK: u32 = 64u;

fn wdot(row: u32, g: u32, x4: u32) -> f32 {
  let gi = row * (K / 64u) + g;
  let s = unpack2x16float(w_scales[gi >> 1u])[gi & 1u];
  let m = unpack2x16float(w_mins[gi >> 1u])[gi & 1u];
  let b = row * (K / 16u) + g * 4u;
  var d = 0.0;
  var sx = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let w = vec4<u32>(w_q[b + i]);
    let x0 = xs[x4 + 4u * i];
    let x1 = xs[x4 + 4u * i + 1u];
    let x2 = xs[x4 + 4u * i + 2u];
    let x3 = xs[x4 + 4u * i + 3u];
    d += dot(x0, vec4<f32>((w >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u)))
       + dot(x1, vec4<f32>((w >> vec4<u32>(8u, 10u, 12u, 14u)) & vec4<u32>(3u)))
       + dot(x2, vec4<f32>((w >> vec4<u32>(16u, 18u, 20u, 22u)) & vec4<u32>(3u)))
       + dot(x3, vec4<f32>((w >> vec4<u32>(24u, 26u, 28u, 30u)) & vec4<u32>(3u)));
    sx += x0 + x1 + x2 + x3;
  }
  return s * d + m * (sx.x + sx.y + sx.z + sx.w);
}
