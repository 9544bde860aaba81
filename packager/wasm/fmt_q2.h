/* 2-bit code planes shared by q2f16 and q3f16 (groups of 64 = 16 bytes of low bits):
 * byte b of a group holds codes 4b, 4b+1, 4b+2, 4b+3 in bits 0-1, 2-3, 4-5, 6-7
 * (16 codes per u32, lowest first). Plane s of a group holds codes 4b + s, so x is
 * prepped per group as [x[0], x[4], .., x[60], x[1], x[5], .., x[63]]. */
#ifndef FMT_Q2_H
#define FMT_Q2_H
#include "llmpack.h"

static void q2_prep(const float *x, uint32_t K, float *xp, float *xs) {
  for (uint32_t g = 0; g < K / 64; g++) {
    const float *xg = x + 64 * g;
    float *o = xp + 64 * g;
    float s = 0.0f;
    for (uint32_t p = 0; p < 4; p++)
      for (uint32_t b = 0; b < 16; b++) {
        o[16 * p + b] = xg[4 * b + p];
        s += xg[4 * b + p];
      }
    xs[g] = s;
  }
}

/* The dot over planes: PLANE(g, s) yields the u8x16 codes of plane s of group g. */
#define Q2_DOT_BODY(PLANE)                                                                  \
  uint32_t G = w->K / 64;                                                                   \
  const uint16_t *sc = (const uint16_t *)w->p[SCALES] + (size_t)row * G;                    \
  const uint16_t *mn = (const uint16_t *)w->p[SCALES + 1] + (size_t)row * G;                \
  v128_t acc[MAXT];                                                                         \
  for (uint32_t t = 0; t < T; t++) acc[t] = wasm_f32x4_splat(0.0f);                         \
  for (uint32_t g = 0; g < G; g++) {                                                        \
    v128_t part[MAXT];                                                                      \
    for (uint32_t t = 0; t < T; t++) part[t] = wasm_f32x4_splat(0.0f);                      \
    for (uint32_t s = 0; s < 4; s++) {                                                      \
      v128_t c[4];                                                                          \
      u8x16_to_f32(PLANE(g, s), c);                                                      \
      for (uint32_t t = 0; t < T; t++)                                                      \
        part[t] = wasm_f32x4_add(part[t], dot16(c, xp[t] + 64 * g + 16 * s));            \
    }                                                                                       \
    v128_t sv = wasm_f32x4_splat(f16_to_f32(sc[g]));                                        \
    for (uint32_t t = 0; t < T; t++) acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(part[t], sv)); \
  }                                                                                         \
  for (uint32_t t = 0; t < T; t++) out[t] = hsum(acc[t]) + dot_f16_mins(mn, xs[t], G);

/* Row dequantized in prep order (planes), PLANE(g, s) as for the dot. */
#define Q2_DEQ_BODY(PLANE)                                                                  \
  uint32_t G = w->K / 64;                                                                   \
  const uint16_t *sc = (const uint16_t *)w->p[SCALES] + (size_t)row * G;                    \
  const uint16_t *mn = (const uint16_t *)w->p[SCALES + 1] + (size_t)row * G;                \
  for (uint32_t g = 0; g < G; g++) {                                                        \
    v128_t sv = wasm_f32x4_splat(f16_to_f32(sc[g])), mv = wasm_f32x4_splat(f16_to_f32(mn[g])); \
    for (uint32_t s = 0; s < 4; s++) {                                                      \
      v128_t c[4];                                                                          \
      u8x16_to_f32(PLANE(g, s), c);                                                      \
      for (int i = 0; i < 4; i++)                                                           \
        wasm_v128_store(out + 64 * g + 16 * s + 4 * i, wasm_f32x4_add(wasm_f32x4_mul(c[i], sv), mv)); \
    }                                                                                       \
  }

INLINE uint32_t q2_low(const wmat *w, uint32_t row, uint32_t c) {
  const uint32_t *q = (const uint32_t *)w->p[0] + (size_t)row * (w->K / 16);
  return (q[c / 16] >> (2 * (c % 16))) & 3u;
}

#endif
