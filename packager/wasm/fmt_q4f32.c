/* q4f32: qweight u32[rows, K/8], scales f32[rows, K/32], mins f32[rows, K/32]. */
#include "fmt_q4.h"

INLINE void dot_t(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, float *out,
                  uint32_t T) {
  uint32_t G = w->K / 32, G4 = GROUPS4(w->K, 32);
  float sc[G4] __attribute__((aligned(16))), mn[G4] __attribute__((aligned(16)));
  __builtin_memcpy(sc, (const float *)w->p[1] + (size_t)row * G, G * sizeof(float));
  __builtin_memcpy(mn, (const float *)w->p[2] + (size_t)row * G, G * sizeof(float));
  for (uint32_t g = G; g < G4; g++) sc[g] = mn[g] = 0.0f;
  q4_idot((const uint8_t *)w->p[0] + (size_t)row * (w->K / 2), G, sc, mn, xp, xs, out, T);
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

const wformat FORMAT_Q4F32 = {32, q4_qprep, dot, row_values, deq, q4_prep};
