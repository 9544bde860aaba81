// Weight fragment, format q8f16: qweight u32[rows, K/4] (4 codes per word, first code in
// the low bits), scales f16[rows, K/32]; value = (q - 128) * scale.
// Every weight fragment declares its parts at bindings 8.. and provides, for a row of
// the bound row block: wload8(row, k8) -> W8, the 8 dequantized values of columns
// [8 k8, 8 k8 + 8); and wdot(row, g, x4), the dot product of the GK columns of group g
// with x staged in the including kernel's workgroup array `xs` (vec4<f32>) from xs[x4].
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

// wdot(row, g, x4): sum over the GK = 32 columns of group g of W[row, c] * x[c], with x
// read from the including kernel's workgroup array `xs` (vec4<f32>) at xs[x4 ..];
// the scale is applied once: s * (sum q x - 128 sum x).
const GK: u32 = 32u;

fn wdot(row: u32, g: u32, x4: u32) -> f32 {
  let si = row * (K / 32u) + g;
  let s = unpack2x16float(w_scales[si >> 1u])[si & 1u];
  let b = row * (K / 8u) + g * 4u;
  let sh = vec4<u32>(0u, 8u, 16u, 24u);
  var d = 0.0;
  var sx = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let w = w_q[b + i];
    let a = xs[x4 + 2u * i];
    let c = xs[x4 + 2u * i + 1u];
    d += dot(a, vec4<f32>((vec4<u32>(w.x) >> sh) & vec4<u32>(255u)))
       + dot(c, vec4<f32>((vec4<u32>(w.y) >> sh) & vec4<u32>(255u)));
    sx += a + c;
  }
  return s * (d - 128.0 * (sx.x + sx.y + sx.z + sx.w));
}
