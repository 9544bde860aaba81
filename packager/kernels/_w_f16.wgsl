// Weight fragment, format f16: part `weight` f16[rows, K], read as u32 pairs so the
// f32 variant needs no shader-f16.
@group(0) @binding(8) var<storage, read> w_weight: array<vec4<u32>>;

struct W8 { a: vec4<f32>, b: vec4<f32> }

fn wload8(row: u32, k8: u32) -> W8 {
  let v = w_weight[row * (K / 8u) + k8];
  return W8(vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)),
            vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)));
}
