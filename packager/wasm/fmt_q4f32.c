/* q4f32: qweight u32[rows, K/8], scales f32[rows, K/32], mins f32[rows, K/32]. */
#include "fmt_q4.h"

INLINE void rows_t(const wmat *w, uint32_t r0, uint32_t r1, const float *const *xp, const float *const *xs, float *y,
                   uint32_t ys, uint32_t T) {
#define PARAMS(r, sc, mn)                                                          \
  __builtin_memcpy(sc, (const float *)w->p[1] + (size_t)(r) * G, G * sizeof(float)); \
  __builtin_memcpy(mn, (const float *)w->p[2] + (size_t)(r) * G, G * sizeof(float)); \
  for (uint32_t g = G; g < G4; g++) sc[g] = mn[g] = 0.0f;
  Q4_ROWS_BODY(PARAMS)
#undef PARAMS
}

DOTS_BY_T(rows_t)

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

const wformat FORMAT_Q4F32 = {32, q4_qprep, dot, row_values, deq, q4_prep, dot_rows};
