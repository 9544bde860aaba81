/* The gated-MLP activations, y = act(g) * u, shared by silu_mul.c, gelu_tanh_mul.c and
 * matvec_glu.c (one formula, so the fused op equals the separate ones):
 *   silu(x) = x / (1 + e^-x)
 *   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), PyTorch's tanh approximation,
 *   with tanh(z) = sign(z) (1 - e^-2|z|) / (1 + e^-2|z|) (no overflow). */
#ifndef GLU_H
#define GLU_H

#include "llmpack.h"

#define SQRT_2_OVER_PI 0.7978845608028654f

INLINE v128_t silu_mul_f32x4(v128_t x, v128_t u) {
  v128_t sx = wasm_f32x4_div(x, wasm_f32x4_add(wasm_f32x4_splat(1.0f), exp_f32x4(wasm_f32x4_neg(x))));
  return wasm_f32x4_mul(sx, u);
}

INLINE float silu_mul_f32(float x, float u) { return x / (1.0f + exp_f32(-x)) * u; }

INLINE v128_t gelu_tanh_mul_f32x4(v128_t x, v128_t u) {
  const v128_t one = wasm_f32x4_splat(1.0f), half = wasm_f32x4_splat(0.5f);
  const v128_t c = wasm_f32x4_splat(SQRT_2_OVER_PI), k = wasm_f32x4_splat(0.044715f);
  const v128_t sign = wasm_i32x4_splat((int32_t)0x80000000);
  v128_t z = wasm_f32x4_mul(c, wasm_f32x4_add(x, wasm_f32x4_mul(k, wasm_f32x4_mul(x, wasm_f32x4_mul(x, x)))));
  v128_t ez = exp_f32x4(wasm_f32x4_mul(wasm_f32x4_splat(-2.0f), wasm_f32x4_abs(z)));
  v128_t th = wasm_f32x4_div(wasm_f32x4_sub(one, ez), wasm_f32x4_add(one, ez));
  th = wasm_v128_or(th, wasm_v128_and(z, sign));
  v128_t y = wasm_f32x4_mul(wasm_f32x4_mul(half, x), wasm_f32x4_add(one, th));
  return wasm_f32x4_mul(y, u);
}

INLINE float gelu_tanh_mul_f32(float x, float u) {
  float z = SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
  float ez = exp_f32(-2.0f * __builtin_fabsf(z));
  float th = (1.0f - ez) / (1.0f + ez);
  if (z < 0.0f) th = -th;
  return 0.5f * x * (1.0f + th) * u;
}

#endif
