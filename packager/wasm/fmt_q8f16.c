/* q8f16: qweight u32[rows, K/4] (byte c of a row is code c), scales f16[rows, K/32];
 * value = (q - 128) * scale. q ^ 0x80 read as a signed byte is exactly q - 128.
 * The dot takes x as int16 (llmpack.h, "int16 activations"; xs = [unused][d per group]),
 * the GEMM as f32, both in natural order. */
#include "llmpack.h"

static void gemm_prep(const float *x, uint32_t K, float *xp, float *xs) {
  (void)xs;
  __builtin_memcpy(xp, x, K * sizeof(float));
}

/* x -> int16 xq (in xp's words), xs = [unused][d per group] (zero-padded to GROUPS4) */
static void prep(const float *x, uint32_t K, float *xp, float *xs) {
  uint32_t G = K / 32, G4 = GROUPS4(K, 32);
  for (uint32_t g = 0; g < G; g++) {
    v128_t v[8];
    for (int i = 0; i < 8; i++) v[i] = wasm_v128_load(x + 32 * g + 4 * i);
    quant_i16_32(v, (int16_t *)xp + 32 * g, xs + G4 + g);
  }
  for (uint32_t g = 0; g < G4; g++) xs[g] = 0.0f;
  for (uint32_t g = G; g < G4; g++) xs[G4 + g] = 0.0f;
}

/* eight f32x4 of the 32 signed codes at q */
INLINE void codes(const uint8_t *q, v128_t c[8]) {
  for (int h = 0; h < 2; h++) {
    v128_t v = wasm_v128_xor(wasm_v128_load(q + 16 * h), wasm_i8x16_splat((int8_t)0x80));
    v128_t a = wasm_i16x8_extend_low_i8x16(v), b = wasm_i16x8_extend_high_i8x16(v);
    c[4 * h + 0] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(a));
    c[4 * h + 1] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(a));
    c[4 * h + 2] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(b));
    c[4 * h + 3] = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(b));
  }
}

/* the rows' loop of rows_t: TS fills the row's scales * d; GROUP starts group g; X and
 * TS_AT (of t, g) point at token t's xq and scale * d of group g */
#define Q8_ROW_LOOP(TS, GROUP, X, TS_AT)                                                    \
  for (uint32_t r = r0; r < r1; r++, q += w->K) {                                           \
    f16_to_f32_pad4((const uint16_t *)w->p[1] + (size_t)r * G, G, sc);                      \
    TS;                                                                                     \
    v128_t acc[MAXT_ROWS];                                                                  \
    for (uint32_t t = 0; t < T; t++) acc[t] = wasm_f32x4_splat(0.0f);                       \
    for (uint32_t g = 0; g < G; g++) {                                                      \
      GROUP;                                                                                \
      v128_t a = wasm_v128_xor(wasm_v128_load(q + 32 * g), bias);                           \
      v128_t b = wasm_v128_xor(wasm_v128_load(q + 32 * g + 16), bias);                      \
      v128_t c[4] = {wasm_i16x8_extend_low_i8x16(a), wasm_i16x8_extend_high_i8x16(a),       \
                     wasm_i16x8_extend_low_i8x16(b), wasm_i16x8_extend_high_i8x16(b)};      \
      for (uint32_t t = 0; t < T; t++) {                                                    \
        v128_t p = wasm_f32x4_convert_i32x4(idot32(c, X));                                  \
        acc[t] = wasm_f32x4_add(acc[t], wasm_f32x4_mul(p, wasm_v128_load32_splat(TS_AT))); \
      }                                                                                     \
    }                                                                                       \
    for (uint32_t t = 0; t < T; t++) y[t * ys + r - r0] = hsum(acc[t]);                     \
  }

/* One token (decode) reads its x in place; a batch (T >= 2) reads the tokens' x
 * interleaved per group (batch_x, llmpack.h), the same operations per token. */
INLINE void rows_t(const wmat *w, uint32_t r0, uint32_t r1, const float *const *xp, const float *const *xs, float *y,
                   uint32_t ys, uint32_t T) {
  uint32_t G = w->K / 32, G4 = GROUPS4(w->K, 32);
  float sc[G4] __attribute__((aligned(16)));
  const v128_t bias = wasm_i8x16_splat((int8_t)0x80);
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)r0 * w->K;
  if (T == 1) {
    float ts[G4] __attribute__((aligned(16)));
    Q8_ROW_LOOP(batch_scales(sc, xs[0] + G4, G4, 1, ts), (void)0, (const int16_t *)xp[0] + 32 * g, &ts[g])
  } else {
    uint32_t TP = BATCH_PAD(T);
    v128_t xi[4 * G * T];
    float dg[G4 * TP] __attribute__((aligned(16))), ts[G4 * TP] __attribute__((aligned(16)));
    batch_x(xp, xs, G, G4, T, xi, dg);
    Q8_ROW_LOOP(batch_scales(sc, dg, G4, TP, ts), BATCH_GROUP(xi, ts, T, TP, g), (const int16_t *)(xg + 4 * t), tg + t)
  }
}

DOTS_BY_T(rows_t)

static void row_values(const wmat *w, uint32_t row, float *out) {
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * w->K;
  const uint16_t *sc = (const uint16_t *)w->p[1] + (size_t)row * (w->K / 32);
  for (uint32_t c = 0; c < w->K; c++) out[c] = (float)((int)q[c] - 128) * f16_to_f32(sc[c / 32]);
}

static void deq(const wmat *w, uint32_t row, float *out) {
  const uint8_t *q = (const uint8_t *)w->p[0] + (size_t)row * w->K;
  const uint16_t *sc = (const uint16_t *)w->p[1] + (size_t)row * (w->K / 32);
  for (uint32_t g = 0; g < w->K / 32; g++) {
    v128_t c[8];
    codes(q + 32 * g, c);
    v128_t s = wasm_f32x4_splat(f16_to_f32(sc[g]));
    for (int i = 0; i < 8; i++) wasm_v128_store(out + 32 * g + 4 * i, wasm_f32x4_mul(c[i], s));
  }
}

const wformat FORMAT_Q8F16 = {32, prep, dot, row_values, deq, gemm_prep, dot_rows};
