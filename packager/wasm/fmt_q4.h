/* 4-bit asymmetric formats (q4f16, q4f32): value = q * scale + min per group of 32.
 * A group is 16 bytes of codes: byte b holds code 2b in its low nibble and 2b + 1 in
 * its high nibble (docs/formats.md packs 8 codes per u32, lowest first). The dot works
 * on nibble planes, so x is prepped per group as [x[0], x[2], .., x[30], x[1], .., x[31]]. */
#ifndef FMT_Q4_H
#define FMT_Q4_H
#include "llmpack.h"

static void q4_prep(const float *x, uint32_t K, float *xp, float *xs) {
  for (uint32_t g = 0; g < K / 32; g++) {
    const float *xg = x + 32 * g;
    float *o = xp + 32 * g;
    float s = 0.0f;
    for (uint32_t b = 0; b < 16; b++) {
      o[b] = xg[2 * b];
      o[16 + b] = xg[2 * b + 1];
      s += xg[2 * b] + xg[2 * b + 1];
    }
    xs[g] = s;
  }
}

/* sum_i m[i] s[i], any n */
INLINE float dot_tail(const float *m, const float *s, uint32_t n) {
  uint32_t n4 = n & ~3u;
  float r = n4 ? dot_f32(m, s, n4) : 0.0f;
  for (uint32_t i = n4; i < n; i++) r += m[i] * s[i];
  return r;
}

/* The q4 dot for T tokens; scale(g) / min(g) read the group parameters. */
#define Q4_DOT_BODY(SCALE, MIN_DOT)                                                         \
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * (w->K / 2);                   \
  uint32_t G = w->K / 32;                                                                   \
  v128_t acc[MAXT];                                                                         \
  for (uint32_t t = 0; t < T; t++) acc[t] = wasm_f32x4_splat(0.0f);                         \
  for (uint32_t g = 0; g < G; g++) {                                                        \
    v128_t v = wasm_v128_load(q + 16 * g);                                                  \
    v128_t lo[4], hi[4];                                                                    \
    u8x16_to_f32(wasm_v128_and(v, wasm_i8x16_splat(0x0f)), lo);                             \
    u8x16_to_f32(wasm_u8x16_shr(v, 4), hi);                                                 \
    v128_t s = wasm_f32x4_splat(SCALE(g));                                                  \
    for (uint32_t t = 0; t < T; t++) {                                                      \
      const float *x = xp[t] + 32 * g;                                                      \
      v128_t p = wasm_f32x4_add(dot16(lo, x), dot16(hi, x + 16));                           \
      acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(p, s));                                \
    }                                                                                       \
  }                                                                                         \
  for (uint32_t t = 0; t < T; t++) out[t] = hsum(acc[t]) + MIN_DOT(xs[t], G);

/* Row dequantized in prep order: per group [even codes, odd codes] * scale + min. */
#define Q4_DEQ_BODY(SCALE, MIN)                                                             \
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * (w->K / 2);                   \
  for (uint32_t g = 0; g < w->K / 32; g++) {                                                \
    v128_t v = wasm_v128_load(q + 16 * g);                                                  \
    v128_t c[8];                                                                            \
    u8x16_to_f32(wasm_v128_and(v, wasm_i8x16_splat(0x0f)), c);                              \
    u8x16_to_f32(wasm_u8x16_shr(v, 4), c + 4);                                              \
    v128_t s = wasm_f32x4_splat(SCALE(g)), m = wasm_f32x4_splat(MIN(g));                    \
    for (int i = 0; i < 8; i++)                                                             \
      wasm_v128_store(out + 32 * g + 4 * i, wasm_f32x4_add(wasm_f32x4_mul(c[i], s), m));    \
  }

INLINE float q4_code(const wmat *w, uint32_t row, uint32_t c) {
  const uint32_t *q = (const uint32_t *)w->p[0] + (size_t)row * (w->K / 8);
  return (float)((q[c / 8] >> (4 * (c % 8))) & 15u);
}

#endif
