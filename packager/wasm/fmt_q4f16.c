/* q4f16: qweight u32[rows, K/8], scales f16[rows, K/32], mins f16[rows, K/32]. */
#include "fmt_q4.h"

INLINE void rows_t(const wmat *w, uint32_t r0, uint32_t r1, const float *const *xp, const float *const *xs, float *y,
                   uint32_t ys, uint32_t T) {
#define PARAMS(r, sc, mn)                                                          \
  f16_to_f32_pad4((const uint16_t *)w->p[1] + (size_t)(r) * G, G, sc);             \
  f16_to_f32_pad4((const uint16_t *)w->p[2] + (size_t)(r) * G, G, mn);
  Q4_ROWS_BODY(PARAMS)
#undef PARAMS
}

DOTS_BY_T(rows_t)

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

const wformat FORMAT_Q4F16 = {32, q4_qprep, dot, row_values, deq, q4_prep, dot_rows};
