/* q3f16: qweight u32[rows, K/16] (low two bits, as q2f16), qhigh u32[rows, K/32] (the
 * third bit, 32 per u32), scales f16[rows, K/64], mins f16[rows, K/64];
 * q = low | high << 2, value = q * scale + min.
 * In plane s (codes 4b + s of the group, see fmt_q2.h) the high bit of byte b is bit
 * 4 (b % 2) + s of high byte b / 2 (the group's 64 high bits are 8 bytes). */
#include "fmt_q2.h"

#define SCALES 2

/* per byte b: high byte b / 2, shifted right by 4 for odd b (low nibble = its 4 bits) */
INLINE v128_t high_nibbles(const uint8_t *h) {
  v128_t v = wasm_v128_load64_zero(h);
  v128_t dup = wasm_i8x16_shuffle(v, v, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const v128_t odd = wasm_i16x8_splat((int16_t)0xff00);
  return wasm_v128_bitselect(wasm_u8x16_shr(dup, 4), dup, odd);
}

INLINE v128_t plane(v128_t low, v128_t hn, uint32_t s) {
  v128_t lo = wasm_v128_and(wasm_u8x16_shr(low, 2 * s), wasm_i8x16_splat(3));
  v128_t hi = wasm_v128_and(wasm_i8x16_shl(wasm_u8x16_shr(hn, s), 2), wasm_i8x16_splat(4));
  return wasm_v128_or(lo, hi);
}

/* the u8x16 codes of plane s of group g, from the row pointers q (and qh) in scope */
#define PLANE(g, s) plane(wasm_v128_load(q + 16 * (g)), high_nibbles(qh + 8 * (g)), s)

INLINE void dot_t(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, float *out,
                  uint32_t T) {
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * (w->K / 4);
  const uint8_t *qh = (const uint8_t *)w->p[1] + (size_t)row * (w->K / 8);
  Q2_DOT_BODY(PLANE)
}

DOT_BY_T(dot_t)

static void row_values(const wmat *w, uint32_t row, float *out) {
  const uint32_t *qh = (const uint32_t *)w->p[1] + (size_t)row * (w->K / 32);
  const uint16_t *sc = (const uint16_t *)w->p[2] + (size_t)row * (w->K / 64);
  const uint16_t *mn = (const uint16_t *)w->p[3] + (size_t)row * (w->K / 64);
  for (uint32_t c = 0; c < w->K; c++) {
    uint32_t q = q2_low(w, row, c) | ((qh[c / 32] >> (c % 32)) & 1u) << 2;
    out[c] = (float)q * f16_to_f32(sc[c / 64]) + f16_to_f32(mn[c / 64]);
  }
}

static void deq(const wmat *w, uint32_t row, float *out) {
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * (w->K / 4);
  const uint8_t *qh = (const uint8_t *)w->p[1] + (size_t)row * (w->K / 8);
  Q2_DEQ_BODY(PLANE)
}

const wformat FORMAT_Q3F16 = {64, q2_prep, dot, row_values, deq};
