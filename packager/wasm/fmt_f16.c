/* f16: weight f16[rows, K]. */
#include "llmpack.h"

static void prep(const float *x, uint32_t K, float *xp, float *xs) {
  (void)xs;
  __builtin_memcpy(xp, x, K * sizeof(float));
}

INLINE void dot_t(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, float *out,
                  uint32_t T) {
  (void)xs;
  const uint16_t *r = (const uint16_t *)w->p[0] + (size_t)row * w->K;
  v128_t acc[MAXT];
  for (uint32_t t = 0; t < T; t++) acc[t] = wasm_f32x4_splat(0.0f);
  for (uint32_t k = 0; k < w->K; k += 8) {
    v128_t lo, hi;
    f16x8_to_f32(wasm_v128_load(r + k), &lo, &hi);
    for (uint32_t t = 0; t < T; t++)
      acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_add(wasm_f32x4_mul(lo, wasm_v128_load(xp[t] + k)),
                                                     wasm_f32x4_mul(hi, wasm_v128_load(xp[t] + k + 4))));
  }
  for (uint32_t t = 0; t < T; t++) out[t] = hsum(acc[t]);
}

DOT_BY_T(dot_t)

static void row_values(const wmat *w, uint32_t row, float *out) {
  const uint16_t *r = (const uint16_t *)w->p[0] + (size_t)row * w->K;
  for (uint32_t k = 0; k < w->K; k += 8) {
    v128_t lo, hi;
    f16x8_to_f32(wasm_v128_load(r + k), &lo, &hi);
    wasm_v128_store(out + k, lo);
    wasm_v128_store(out + k + 4, hi);
  }
}

const wformat FORMAT_F16 = {8, prep, dot, row_values, row_values};
