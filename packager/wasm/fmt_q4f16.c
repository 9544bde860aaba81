/* q4f16: qweight u32[rows, K/8], scales f16[rows, K/32], mins f16[rows, K/32]. */
#include "fmt_q4.h"

/* sum_g f16(m[g]) s[g] */
INLINE float dot_f16_mins(const uint16_t *m, const float *s, uint32_t n) {
  v128_t acc = wasm_f32x4_splat(0.0f);
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v128_t lo, hi;
    f16x8_to_f32(wasm_v128_load(m + i), &lo, &hi);
    acc = wasm_f32x4_add(acc, wasm_f32x4_add(wasm_f32x4_mul(lo, wasm_v128_load(s + i)),
                                             wasm_f32x4_mul(hi, wasm_v128_load(s + i + 4))));
  }
  float r = hsum(acc);
  for (; i < n; i++) r += f16_to_f32(m[i]) * s[i];
  return r;
}

INLINE void dot_t(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, float *out,
                  uint32_t T) {
  float sc[w->K / 32];
  f16_to_f32_n((const uint16_t *)w->p[1] + (size_t)row * (w->K / 32), w->K / 32, sc);
  const uint16_t *mn = (const uint16_t *)w->p[2] + (size_t)row * (w->K / 32);
#define SCALE(g) sc[g]
#define MIN_DOT(x, n) dot_f16_mins(mn, x, n)
  Q4_DOT_BODY(SCALE, MIN_DOT)
#undef SCALE
#undef MIN_DOT
}

DOT_BY_T(dot_t)

static void row_values(const wmat *w, uint32_t row, float *out) {
  const uint16_t *sc = (const uint16_t *)w->p[1] + (size_t)row * (w->K / 32);
  const uint16_t *mn = (const uint16_t *)w->p[2] + (size_t)row * (w->K / 32);
  for (uint32_t c = 0; c < w->K; c++) out[c] = q4_code(w, row, c) * f16_to_f32(sc[c / 32]) + f16_to_f32(mn[c / 32]);
}

static void deq(const wmat *w, uint32_t row, float *out) {
  const uint16_t *sc = (const uint16_t *)w->p[1] + (size_t)row * (w->K / 32);
  const uint16_t *mn = (const uint16_t *)w->p[2] + (size_t)row * (w->K / 32);
#define SCALE(g) f16_to_f32(sc[(g)])
#define MIN(g) f16_to_f32(mn[(g)])
  Q4_DEQ_BODY(SCALE, MIN)
#undef SCALE
#undef MIN
}

const wformat FORMAT_Q4F16 = {32, q4_prep, dot, row_values, deq};
