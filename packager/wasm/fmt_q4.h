/* 4-bit asymmetric formats (q4f16, q4f32): value = q * scale + min per group of 32.
 * A group is 16 bytes of codes: byte b holds code 2b in its low nibble and 2b + 1 in
 * its high nibble (docs/formats.md packs 8 codes per u32, lowest first). The GEMM
 * dequantizes byte-wise nibble planes, so its x is prepped per group as
 * [x[0], x[2], .., x[30], x[1], .., x[31]] (f32); the dot reads the 16 bytes as eight
 * u16 lanes of four codes each, so its x is int16 (llmpack.h, "int16 activations") in
 * the order of those four planes (q4_quads). */
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

/* the 32 values of group xg in the order of the dot's four nibble planes: lane j of
 * the group's 16 bytes read as u16 holds codes 4j .. 4j + 3 in its four nibbles, so
 * plane p is x[4j + p] for j < 8 (a 4 x 4 transpose per 16 values) */
INLINE void q4_quads(const float *xg, v128_t v[8]) {
  for (int h = 0; h < 2; h++) {
    v128_t a = wasm_v128_load(xg + 16 * h), b = wasm_v128_load(xg + 16 * h + 4);
    v128_t c = wasm_v128_load(xg + 16 * h + 8), d = wasm_v128_load(xg + 16 * h + 12);
    v128_t t0 = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5);
    v128_t t2 = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7), t3 = wasm_i32x4_shuffle(c, d, 2, 6, 3, 7);
    v[0 + h] = wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5);
    v[2 + h] = wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7);
    v[4 + h] = wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5);
    v[6 + h] = wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7);
  }
}

/* x -> int16 xq in nibble-plane order (q4_quads, in xp's words), xs = [sum(x') per
 * group][d per group], each run zero-padded to GROUPS4 */
static void q4_qprep(const float *x, uint32_t K, float *xp, float *xs) {
  uint32_t G = K / 32, G4 = GROUPS4(K, 32);
  for (uint32_t g = 0; g < G; g++) {
    v128_t v[8];
    q4_quads(x + 32 * g, v);
    int32_t s = quant_i16_32(v, (int16_t *)xp + 32 * g, xs + G4 + g);
    xs[g] = (float)s * xs[G4 + g];
  }
  for (uint32_t g = G; g < G4; g++) xs[g] = xs[G4 + g] = 0.0f;
}

/* The int16 dot of the rows [r0, r1) for T tokens: per group, the four nibble planes
 * of the codes as u16 lanes times xq, summed in i32 and scaled by scale * d; plus the mins times
 * the sums of x'. PARAMS(row, sc, mn) writes a row's f32 scales and mins, zero-padded
 * to GROUPS4. One token (decode) reads its x in place; a batch (T >= 2) reads the
 * tokens' x interleaved per group (batch_x, llmpack.h), the same operations per token. */
#define Q4_ROWS_BODY(PARAMS)                                                                \
  uint32_t G = w->K / 32, G4 = GROUPS4(w->K, 32);                                           \
  float sc[G4] __attribute__((aligned(16))), mn[G4] __attribute__((aligned(16)));           \
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)r0 * (w->K / 2);                    \
  if (T == 1) {                                                                             \
    float ts[G4] __attribute__((aligned(16)));                                              \
    Q4_ROW_LOOP(PARAMS, batch_scales(sc, xs[0] + G4, G4, 1, ts), (void)0,                   \
                (const int16_t *)xp[0] + 32 * g, &ts[g])                                    \
  } else {                                                                                  \
    uint32_t TP = BATCH_PAD(T);                                                             \
    v128_t xi[4 * G * T];                                                                   \
    float dg[G4 * TP] __attribute__((aligned(16))), ts[G4 * TP] __attribute__((aligned(16))); \
    batch_x(xp, xs, G, G4, T, xi, dg);                                                      \
    Q4_ROW_LOOP(PARAMS, batch_scales(sc, dg, G4, TP, ts), BATCH_GROUP(xi, ts, T, TP, g),    \
                (const int16_t *)(xg + 4 * t), tg + t)                                      \
  }

/* Q4_ROWS_BODY's loop over the rows: TS fills the row's scales * d; GROUP starts group g;
 * X and TS_AT (of t, g) point at token t's xq and scale * d of group g */
#define Q4_ROW_LOOP(PARAMS, TS, GROUP, X, TS_AT)                                            \
  for (uint32_t r = r0; r < r1; r++, q += w->K / 2) {                                       \
    PARAMS(r, sc, mn);                                                                      \
    TS;                                                                                     \
    v128_t acc[MAXT_ROWS];                                                                  \
    for (uint32_t t = 0; t < T; t++) acc[t] = wasm_f32x4_splat(0.0f);                       \
    for (uint32_t g = 0; g < G; g++) {                                                      \
      GROUP;                                                                                \
      v128_t v = wasm_v128_load(q + 16 * g), m = wasm_i16x8_splat(0x000f);                  \
      v128_t c[4] = {wasm_v128_and(v, m), wasm_v128_and(wasm_u16x8_shr(v, 4), m),           \
                     wasm_v128_and(wasm_u16x8_shr(v, 8), m), wasm_u16x8_shr(v, 12)};        \
      for (uint32_t t = 0; t < T; t++) {                                                    \
        v128_t p = wasm_f32x4_convert_i32x4(idot32(c, X));                            \
        acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(p, wasm_v128_load32_splat(TS_AT))); \
      }                                                                                     \
    }                                                                                       \
    for (uint32_t t = 0; t < T; t++) y[t * ys + r - r0] = hsum(acc[t]) + dot_f32(mn, xs[t], G4); \
  }

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
