// Weight fragment, format q3f16 (asymmetric, groups of 64): 3-bit codes in two bit
// planes: qweight u32[rows, K/16] holds the low 2 bits (16 codes per word), qhigh
// u32[rows, K/32] the high bit (32 codes per word), first code in the low bits; scales
// and mins f16[rows, K/64]; q = low | high << 2, value = q * scale + min.
// Every weight fragment declares its parts at bindings 8.. and provides, for a row of
// the bound row block: wload8(row, k8) -> W8, the 8 dequantized values of columns
// [8 k8, 8 k8 + 8); and wdot(row, g, x4), the dot product of the GK columns of group g
// with x staged in the including kernel's workgroup array `xs` (vec4<f32>) from xs[x4].
@group(0) @binding(8) var<storage, read> w_q: array<u32>;
@group(0) @binding(9) var<storage, read> w_high: array<u32>;
@group(0) @binding(10) var<storage, read> w_scales: array<u32>;
@group(0) @binding(11) var<storage, read> w_mins: array<u32>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

// codes 4j .. 4j + 3 of a 16-code run: lo = 32 bits of 2-bit fields, hi = 16 bits of 1-bit fields
fn codes4(lo: u32, hi: u32, j: u32) -> vec4<f32> {
  let l = (vec4<u32>(lo >> (8u * j)) >> vec4<u32>(0u, 2u, 4u, 6u)) & vec4<u32>(3u);
  let h = (vec4<u32>(hi >> (4u * j)) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
  return vec4<f32>(l | (h << vec4<u32>(2u)));
}

fn wload8(row: u32, k8: u32) -> W8 {
  let lo = w_q[row * (K / 16u) + k8 / 2u] >> ((k8 & 1u) * 16u);
  let hi = w_high[row * (K / 32u) + k8 / 4u] >> ((k8 & 3u) * 8u);
  let gi = row * (K / 64u) + k8 / 8u;
  let s = unpack2x16float(w_scales[gi >> 1u])[gi & 1u];
  let m = unpack2x16float(w_mins[gi >> 1u])[gi & 1u];
  return W8(codes4(lo, hi, 0u) * s + m, codes4(lo, hi, 1u) * s + m);
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
  let hb = row * (K / 32u) + g * 2u;
  var d = 0.0;
  var sx = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) {
    let lo = w_q[b + i];
    let hi = w_high[hb + i / 2u] >> ((i & 1u) * 16u);
    for (var j = 0u; j < 4u; j++) {
      let xv = xs[x4 + 4u * i + j];
      d += dot(xv, codes4(lo, hi, j));
      sx += xv;
    }
  }
  return s * d + m * (sx.x + sx.y + sx.z + sx.w);
}
