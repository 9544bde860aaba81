/* q4f16: qweight u32[rows, K/8], scales f16[rows, K/32], mins f16[rows, K/32]. */
#include "fmt_q4.h"

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
