/* q4f32: qweight u32[rows, K/8], scales f32[rows, K/32], mins f32[rows, K/32]. */
#include "fmt_q4.h"

INLINE void dot_t(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, float *out,
                  uint32_t T) {
  const float *sc = (const float *)w->p[1] + (size_t)row * (w->K / 32);
  const float *mn = (const float *)w->p[2] + (size_t)row * (w->K / 32);
#define SCALE(g) sc[g]
#define MIN_DOT(x, n) dot_tail(mn, x, n)
  Q4_DOT_BODY(SCALE, MIN_DOT)
#undef SCALE
#undef MIN_DOT
}

DOT_BY_T(dot_t)

static void row_values(const wmat *w, uint32_t row, float *out) {
  const float *sc = (const float *)w->p[1] + (size_t)row * (w->K / 32);
  const float *mn = (const float *)w->p[2] + (size_t)row * (w->K / 32);
  for (uint32_t c = 0; c < w->K; c++) out[c] = q4_code(w, row, c) * sc[c / 32] + mn[c / 32];
}

static void deq(const wmat *w, uint32_t row, float *out) {
  const float *sc = (const float *)w->p[1] + (size_t)row * (w->K / 32);
  const float *mn = (const float *)w->p[2] + (size_t)row * (w->K / 32);
#define SCALE(g) sc[(g)]
#define MIN(g) mn[(g)]
  Q4_DEQ_BODY(SCALE, MIN)
#undef SCALE
#undef MIN
}

const wformat FORMAT_Q4F32 = {32, q4_prep, dot, row_values, deq};
