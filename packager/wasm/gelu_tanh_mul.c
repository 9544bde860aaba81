/* gelu_tanh_mul: g[i] = gelu_tanh(g[i]) * u[i] for i < n, PyTorch's tanh approximation
 *   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
 * with tanh(z) = sign(z) (1 - e^-2|z|) / (1 + e^-2|z|) (no overflow).
 * args: uniforms [n] | wg[3] | pointers [g, u]
 * Threads take contiguous runs of elements (one thread below SMALL_WORK). */
#include "llmpack.h"

#define SQRT_2_OVER_PI 0.7978845608028654f

void op_gelu_tanh_mul(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t n = a[GELU_TANH_MUL_N];
  float *g = (float *)a[GELU_TANH_MUL_G];
  const float *u = (const float *)a[GELU_TANH_MUL_U];
  uint32_t b, e;
  share_elements(n, 64, tid, nt, &b, &e);
  uint32_t i = b;
  const v128_t one = wasm_f32x4_splat(1.0f), half = wasm_f32x4_splat(0.5f);
  const v128_t c = wasm_f32x4_splat(SQRT_2_OVER_PI), k = wasm_f32x4_splat(0.044715f);
  const v128_t sign = wasm_i32x4_splat((int32_t)0x80000000);
  for (; i + 4 <= e; i += 4) {
    v128_t x = wasm_v128_load(g + i);
    v128_t z = wasm_f32x4_mul(c, wasm_f32x4_add(x, wasm_f32x4_mul(k, wasm_f32x4_mul(x, wasm_f32x4_mul(x, x)))));
    v128_t ez = exp_f32x4(wasm_f32x4_mul(wasm_f32x4_splat(-2.0f), wasm_f32x4_abs(z)));
    v128_t th = wasm_f32x4_div(wasm_f32x4_sub(one, ez), wasm_f32x4_add(one, ez));
    th = wasm_v128_or(th, wasm_v128_and(z, sign));
    v128_t y = wasm_f32x4_mul(wasm_f32x4_mul(half, x), wasm_f32x4_add(one, th));
    wasm_v128_store(g + i, wasm_f32x4_mul(y, wasm_v128_load(u + i)));
  }
  for (; i < e; i++) {
    float x = g[i];
    float z = SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
    float ez = exp_f32(-2.0f * __builtin_fabsf(z));
    float th = (1.0f - ez) / (1.0f + ez);
    if (z < 0.0f) th = -th;
    g[i] = 0.5f * x * (1.0f + th) * u[i];
  }
}
