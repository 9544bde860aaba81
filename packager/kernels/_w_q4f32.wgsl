// Weight fragment, format q4f32: qweight u32[rows, K/8] (8 codes per word, first code in
// the low bits), scales and mins f32[rows, K/32]; value = q * scale + min.
// Every weight fragment declares its parts at bindings 8.. and provides, for a row of
// the bound row block: wload8(row, k8) -> W8, the 8 dequantized values of columns
// [8 k8, 8 k8 + 8); and wdot(row, g, x4), the dot product of the GK columns of group g
// with x staged in the including kernel's workgroup array `xs` (vec4<f32>) from xs[x4].
@group(0) @binding(8) var<storage, read> w_q: array<u32>;
@group(0) @binding(9) var<storage, read> w_scales: array<f32>;
@group(0) @binding(10) var<storage, read> w_mins: array<f32>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

fn wload8(row: u32, k8: u32) -> W8 {
  let w = vec4<u32>(w_q[row * (K / 8u) + k8]);
  let s = w_scales[row * (K / 32u) + k8 / 4u];
  let m = w_mins[row * (K / 32u) + k8 / 4u];
  let lo = vec4<f32>((w >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
  let hi = vec4<f32>((w >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
  return W8(lo * s + m, hi * s + m);
}

// wdot(row, g, x4): sum over the GK = 32 columns of group g of W[row, c] * x[c], with x
// read from the including kernel's workgroup array `xs` (vec4<f32>) at xs[x4 ..];
// scale and min are applied once: s * sum q x + m * sum x.
const GK: u32 = 32u;

fn wdot(row: u32, g: u32, x4: u32) -> f32 {
  let si = row * (K / 32u) + g;
  let s = w_scales[si];
  let m = w_mins[si];
  let b = row * (K / 8u) + g * 4u;
  var d = 0.0;
  var sx = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let w = vec4<u32>(w_q[b + i]);
    let a = xs[x4 + 2u * i];
    let c = xs[x4 + 2u * i + 1u];
    d += dot(a, vec4<f32>((w >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)))
       + dot(c, vec4<f32>((w >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)));
    sx += a + c;
  }
  return s * d + m * (sx.x + sx.y + sx.z + sx.w);
}
