/* q2f16: qweight u32[rows, K/16], scales f16[rows, K/64], mins f16[rows, K/64];
 * value = q * scale + min. */
#include "fmt_q2.h"

#define SCALES 1

/* the u8x16 codes of plane s of group g, from the row pointers q (and qh) in scope */
#define PLANE(g, s) wasm_v128_and(wasm_u8x16_shr(wasm_v128_load(q + 16 * (g)), 2 * (s)), wasm_i8x16_splat(3))

INLINE void dot_t(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, float *out,
                  uint32_t T) {
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * (w->K / 4);
  Q2_DOT_BODY(PLANE)
}

DOT_BY_T(dot_t)

static void row_values(const wmat *w, uint32_t row, float *out) {
  const uint16_t *sc = (const uint16_t *)w->p[1] + (size_t)row * (w->K / 64);
  const uint16_t *mn = (const uint16_t *)w->p[2] + (size_t)row * (w->K / 64);
  for (uint32_t c = 0; c < w->K; c++)
    out[c] = (float)q2_low(w, row, c) * f16_to_f32(sc[c / 64]) + f16_to_f32(mn[c / 64]);
}

static void deq(const wmat *w, uint32_t row, float *out) {
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * (w->K / 4);
  Q2_DEQ_BODY(PLANE)
}

const wformat FORMAT_Q2F16 = {64, q2_prep, dot, row_values, deq};
