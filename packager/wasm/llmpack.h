/* llmpack Wasm kernels: shared declarations.
 *
 * Every op of the execution plan (docs/plan.md) is one C function with the signature
 *
 *     void op(const uint32_t *a, uint32_t tid, uint32_t nt);
 *
 * `a` is the dispatch's argument record in linear memory, laid out as
 *
 *     [consts of the kernel ...][uniforms of the dispatch ...][wg_x, wg_y, wg_z][buffer pointers ...]
 *
 * (consts come from kernels/llmpack.wasm.json, written by packager/wasm_build.py; the
 * uniforms and workgroup counts are the dispatch's expressions evaluated by the runtime;
 * pointers are the byte addresses of the dispatch's bindings in binding order). Ops read
 * their arguments by name: a[<OP>_<NAME>], offsets generated from packager/kernel_table.py
 * into kernel_table.h (with the op and weight-format ids) by packager/wasm_build.py. An op
 * does the share `tid` of `nt` of its work: the shares are independent, so the threads
 * of a dispatch need no barrier until the op ends (runner.c puts one between ops).
 * All arithmetic is f32; activations and the KV cache are f32 (the plan's f32 variant).
 */
#ifndef LLMPACK_H
#define LLMPACK_H

#include <stddef.h>
#include <stdint.h>
#include <wasm_simd128.h>

#include "kernel_table.h"

#define EXPORT(name) __attribute__((export_name(name)))
#define INLINE static inline __attribute__((always_inline))

typedef void (*op_fn)(const uint32_t *a, uint32_t tid, uint32_t nt);

#define OP_NOP 0xFFFFFFFFu /* a dispatch with a zero workgroup count */
/* In a command's op word (runner.c): set when the dispatch neither reads nor writes
 * anything the dispatches since the last barrier wrote, nor writes what they read, so
 * the threads need no barrier before it (the runtime sets it only for modules whose
 * kernel table says "sync_flags": true). */
#define CMD_NOSYNC 0x80000000u
#define CMD_OP(word) ((word) & ~CMD_NOSYNC)

/* op_<name> of every op (OP_* ids and LLMPACK_OPS: kernel_table.h) */
#define DECLARE_OP(ID, FN) void FN(const uint32_t *a, uint32_t tid, uint32_t nt);
LLMPACK_OPS(DECLARE_OP)
#undef DECLARE_OP

/* ---- a weight format: how to read rows of a [rows, K] matrix ---------------------- */

/* The parts of a row block (pointers in the format's part order) and its width. */
typedef struct {
  const void *p[MAX_WEIGHT_PARTS];
  uint32_t K;
} wmat;

/* Most tokens one dot call handles at once (their x vectors share the unpacked codes):
 * MAXT for a format's `dot`, MAXT_ROWS for its `dot_rows` (the int16 formats, whose
 * batched steps, speculative decoding's verify calls, go through it up to DOT_ROWS_MAX_SEQ
 * tokens: matmul.c). */
#define MAXT 4
#define MAXT_ROWS 8

/* A format's `dot` from its always-inlined dot_t(w, row, xp, xs, out, T): one call per
 * constant T, so the compiler unrolls each token loop. */
#define DOT_BY_T(DOT_T)                                                                          \
  static void dot(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, \
                  float *out, uint32_t T) {                                                      \
    switch (T) {                                                                                 \
      case 4: DOT_T(w, row, xp, xs, out, 4); break;                                              \
      case 3: DOT_T(w, row, xp, xs, out, 3); break;                                              \
      case 2: DOT_T(w, row, xp, xs, out, 2); break;                                              \
      default: DOT_T(w, row, xp, xs, out, 1); break;                                             \
    }                                                                                            \
  }

typedef struct {
  /* values in a group (the unit of prep and dot) */
  uint32_t group;
  /* x [K] -> xp (K f32 words) in the form the format's dot reads, and per-group values
   * xs (XS_FLOATS(K, group) floats: the group sums for the mins of asymmetric formats;
   * the formats with int16 activations keep their scales in the second run). */
  void (*prep)(const float *x, uint32_t K, float *xp, float *xs);
  /* out[t] = sum_k W[row, k] x_t[k] for t < T (1..MAXT), from prepped xp[t], xs[t]. */
  void (*dot)(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs, float *out, uint32_t T);
  /* out[0..K) = row `row`, dequantized (natural column order; the embedding). */
  void (*row)(const wmat *w, uint32_t row, float *out);
  /* out[0..K) = row `row`, dequantized in the order of `gemm_prep` (matmul's prefill tiles). */
  void (*deq)(const wmat *w, uint32_t row, float *out);
  /* x [K] -> f32 xp [K] in the order of `deq`, for the prefill GEMM; NULL: `prep` (when
   * prep already writes f32 values in that order). */
  void (*gemm_prep)(const float *x, uint32_t K, float *xp, float *xs);
  /* `dot` for the rows [r0, r1): y[t * ystride + r - r0] for t < T (1..MAXT_ROWS), one
   * call per run of rows (the per-call set-up paid once); NULL: `dot` per row. */
  void (*dot_rows)(const wmat *w, uint32_t r0, uint32_t r1, const float *const *xp, const float *const *xs, float *y,
                   uint32_t ystride, uint32_t T);
} wformat;

/* A format's `dot` and `dot_rows` from its always-inlined rows_t(w, r0, r1, xp, xs, y,
 * ystride, T): one instance per constant T. */
#define DOTS_BY_T(ROWS_T)                                                                       \
  static void dot_rows(const wmat *w, uint32_t r0, uint32_t r1, const float *const *xp,          \
                       const float *const *xs, float *y, uint32_t ys, uint32_t T) {              \
    switch (T) {                                                                                 \
      case 8: ROWS_T(w, r0, r1, xp, xs, y, ys, 8); break;                                        \
      case 7: ROWS_T(w, r0, r1, xp, xs, y, ys, 7); break;                                        \
      case 6: ROWS_T(w, r0, r1, xp, xs, y, ys, 6); break;                                        \
      case 5: ROWS_T(w, r0, r1, xp, xs, y, ys, 5); break;                                        \
      case 4: ROWS_T(w, r0, r1, xp, xs, y, ys, 4); break;                                        \
      case 3: ROWS_T(w, r0, r1, xp, xs, y, ys, 3); break;                                        \
      case 2: ROWS_T(w, r0, r1, xp, xs, y, ys, 2); break;                                        \
      default: ROWS_T(w, r0, r1, xp, xs, y, ys, 1); break;                                       \
    }                                                                                            \
  }                                                                                              \
  static void dot(const wmat *w, uint32_t row, const float *const *xp, const float *const *xs,  \
                  float *out, uint32_t T) {                                                      \
    dot_rows(w, row, row + 1, xp, xs, out, 1, T);                                                \
  }

/* groups rounded up to a multiple of 4 */
#define GROUPS4(K, group) ((((K) / (group)) + 3u) & ~3u)
/* floats of xs per token (see wformat.prep): two runs of GROUPS4 (zero-padded) */
#define XS_FLOATS(K, group) (2u * GROUPS4(K, group))

/* NULL for formats this module was built without (see packager/wasm_build.py). */
const wformat *weight_format(uint32_t id);

/* FORMAT_<NAME> (fmt_<name>.c) of the formats compiled in (LLMPACK_WEIGHT_FORMATS: kernel_table.h) */
#define DECLARE_FORMAT(ID, F) extern const wformat F;
LLMPACK_WEIGHT_FORMATS(DECLARE_FORMAT)
#undef DECLARE_FORMAT

/* the weight parts of a row block: pointers from the argument record, from index `first` */
INLINE wmat weight_parts(const uint32_t *a, uint32_t first, uint32_t K) {
  wmat w = {{0}, K};
  for (uint32_t i = 0; i < MAX_WEIGHT_PARTS; i++) w.p[i] = (const void *)a[first + i];
  return w;
}

/* ---- helpers ------------------------------------------------------------------- */

INLINE float f32_bits(uint32_t u) {
  union { uint32_t u; float f; } v = {u};
  return v.f;
}

INLINE uint32_t bits_f32(float f) {
  union { float f; uint32_t u; } v = {f};
  return v.u;
}

/* IEEE binary16 -> binary32, exact (subnormals, inf, nan). */
INLINE float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t em = h & 0x7fffu;
  float mag = f32_bits(em << 13) * 0x1p112f; /* rebias the exponent; subnormals stay exact */
  if (em >= 0x7c00u) mag = f32_bits(0x7f800000u | (em & 0x3ffu) << 13);
  return f32_bits(bits_f32(mag) | sign);
}

/* 8 halves -> two f32x4 (low four, high four), same semantics as f16_to_f32. */
INLINE void f16x8_to_f32(v128_t h, v128_t *lo, v128_t *hi) {
  v128_t a = wasm_u32x4_extend_low_u16x8(h), b = wasm_u32x4_extend_high_u16x8(h);
  const v128_t em_mask = wasm_i32x4_splat(0x7fff), magic = wasm_f32x4_splat(0x1p112f);
  const v128_t inf16 = wasm_i32x4_splat(0x7c00), inf32 = wasm_i32x4_splat(0x7f800000);
  v128_t ea = wasm_v128_and(a, em_mask), eb = wasm_v128_and(b, em_mask);
  v128_t ma = wasm_f32x4_mul(wasm_i32x4_shl(ea, 13), magic);
  v128_t mb = wasm_f32x4_mul(wasm_i32x4_shl(eb, 13), magic);
  ma = wasm_v128_bitselect(wasm_v128_or(inf32, wasm_i32x4_shl(ea, 13)), ma, wasm_u32x4_ge(ea, inf16));
  mb = wasm_v128_bitselect(wasm_v128_or(inf32, wasm_i32x4_shl(eb, 13)), mb, wasm_u32x4_ge(eb, inf16));
  *lo = wasm_v128_or(ma, wasm_i32x4_shl(wasm_v128_xor(a, ea), 16));
  *hi = wasm_v128_or(mb, wasm_i32x4_shl(wasm_v128_xor(b, eb), 16));
}

/* out[i] = f16 h[i] for i < n (any n; reads h in blocks of 8 while they fit) */
INLINE void f16_to_f32_n(const uint16_t *h, uint32_t n, float *out) {
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v128_t lo, hi;
    f16x8_to_f32(wasm_v128_load(h + i), &lo, &hi);
    wasm_v128_store(out + i, lo);
    wasm_v128_store(out + i + 4, hi);
  }
  for (; i < n; i++) out[i] = f16_to_f32(h[i]);
}

INLINE float hsum(v128_t v) {
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 2, 3, 0, 1));
  v = wasm_f32x4_add(v, wasm_i32x4_shuffle(v, v, 1, 0, 3, 2));
  return wasm_f32x4_extract_lane(v, 0);
}

/* out[0..n) = f16 h[0..n), then zeros up to n rounded up to 4 (out has room for that) */
INLINE void f16_to_f32_pad4(const uint16_t *h, uint32_t n, float *out) {
  uint32_t i = 0;
  v128_t lo, hi;
  for (; i + 8 <= n; i += 8) {
    f16x8_to_f32(wasm_v128_load(h + i), &lo, &hi);
    wasm_v128_store(out + i, lo);
    wasm_v128_store(out + i + 4, hi);
  }
  if (i < n && n >= 8) { /* the last 8 again, overlapping: no scalar tail */
    f16x8_to_f32(wasm_v128_load(h + n - 8), &lo, &hi);
    wasm_v128_store(out + n - 8, lo);
    wasm_v128_store(out + n - 4, hi);
  } else {
    for (; i < n; i++) out[i] = f16_to_f32(h[i]);
  }
  for (i = n; i & 3u; i++) out[i] = 0.0f;
}

/* sum_i a[i] b[i] for i < n (n a multiple of 4). */
INLINE float dot_f32(const float *a, const float *b, uint32_t n) {
  v128_t s0 = wasm_f32x4_splat(0.0f), s1 = s0;
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(wasm_v128_load(a + i), wasm_v128_load(b + i)));
    s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(wasm_v128_load(a + i + 4), wasm_v128_load(b + i + 4)));
  }
  for (; i < n; i += 4) s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(wasm_v128_load(a + i), wasm_v128_load(b + i)));
  return hsum(wasm_f32x4_add(s0, s1));
}

/* One row of a residual add fused with the next RMSNorm (add_rmsnorm.c,
 * add_rmsnorm_inplace.c): x[i] += y[i], then out[i] = x[i] / sqrt(mean x^2 + eps) * w[i], the
 * same f32 operations in the same order as add.c then rmsnorm.c. The whole row of y is read
 * before out is written, so out may be y. H is a multiple of 4. */
INLINE void add_rmsnorm_row(float *x, const float *y, float *out, const float *w, uint32_t H, float eps) {
  for (uint32_t i = 0; i < H; i += 4)
    wasm_v128_store(x + i, wasm_f32x4_add(wasm_v128_load(x + i), wasm_v128_load(y + i)));
  float inv = 1.0f / __builtin_sqrtf(dot_f32(x, x, H) / (float)H + eps);
  v128_t vi = wasm_f32x4_splat(inv);
  for (uint32_t i = 0; i < H; i += 4)
    wasm_v128_store(out + i, wasm_f32x4_mul(wasm_f32x4_mul(wasm_v128_load(x + i), vi), wasm_v128_load(w + i)));
}

/* The share [*b, *e) of n items for thread tid of nt, in runs that are multiples of
 * `align` (the last share takes the rest). */
INLINE void share(uint32_t n, uint32_t align, uint32_t tid, uint32_t nt, uint32_t *b, uint32_t *e) {
  uint32_t units = (n + align - 1) / align;
  uint32_t per = (units + nt - 1) / nt * align;
  uint32_t lo = tid * per, hi = lo + per;
  *b = lo < n ? lo : n;
  *e = hi < n ? hi : n;
}

/* ---- code unpacking shared by the quantized formats ---------------------------- */

/* four f32x4 of the 16 u8 codes in v (each < 256) */
INLINE void u8x16_to_f32(v128_t v, v128_t c[4]) {
  v128_t a = wasm_u16x8_extend_low_u8x16(v), b = wasm_u16x8_extend_high_u8x16(v);
  c[0] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_low_u16x8(a));
  c[1] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_high_u16x8(a));
  c[2] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_low_u16x8(b));
  c[3] = wasm_f32x4_convert_i32x4(wasm_u32x4_extend_high_u16x8(b));
}

/* sum over 16 codes (c) times 16 prepped x values */
INLINE v128_t dot16(const v128_t c[4], const float *x) {
  v128_t p0 = wasm_f32x4_add(wasm_f32x4_mul(c[0], wasm_v128_load(x)), wasm_f32x4_mul(c[1], wasm_v128_load(x + 4)));
  v128_t p1 = wasm_f32x4_add(wasm_f32x4_mul(c[2], wasm_v128_load(x + 8)), wasm_f32x4_mul(c[3], wasm_v128_load(x + 12)));
  return wasm_f32x4_add(p0, p1);
}

/* sum_g f16(m[g]) s[g] (the mins term of the asymmetric formats), any n */
INLINE float dot_f16_mins(const uint16_t *m, const float *s, uint32_t n) {
  v128_t acc = wasm_f32x4_splat(0.0f);
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v128_t lo, hi;
    f16x8_to_f32(wasm_v128_load(m + i), &lo, &hi);
    acc = wasm_f32x4_add(acc, wasm_f32x4_add(wasm_f32x4_mul(lo, wasm_v128_load(s + i)),
                                             wasm_f32x4_mul(hi, wasm_v128_load(s + i + 4))));
  }
  float r = hsum(acc);
  for (; i < n; i++) r += f16_to_f32(m[i]) * s[i];
  return r;
}

/* ---- int16 activations (the mat-vec dot of q4f16, q4f32, q8f16) --------------------
 *
 * A group of 32 x values is rounded to 16-bit integers on its own grid:
 *   d = max|x| / 32767,  xq = round_to_even(x * (32767 / max|x|))   (all zero when max|x| = 0),
 * so that the dot of a row with x becomes integer products summed exactly in i32
 * (i32x4.dot_i16x8_s), scaled once per group: the result is the f32 dot of the row with
 * x' = xq * d, which differs from x by at most half a step, 2^-16 of the group's largest
 * value. Prefill (the f32 GEMM) uses x itself. */

#define Q16_MAX 32767.0f

/* the 32 values of v[0..8) -> xq[0..32) (i16, as v's lanes) and d; returns sum(xq) */
INLINE int32_t quant_i16_32(const v128_t v[8], int16_t *xq, float *d) {
  v128_t m = wasm_f32x4_abs(v[0]);
  for (int i = 1; i < 8; i++) m = wasm_f32x4_max(m, wasm_f32x4_abs(v[i]));
  m = wasm_f32x4_max(m, wasm_i32x4_shuffle(m, m, 2, 3, 0, 1));
  m = wasm_f32x4_max(m, wasm_i32x4_shuffle(m, m, 1, 0, 3, 2));
  float amax = wasm_f32x4_extract_lane(m, 0);
  float id = amax > 0.0f ? Q16_MAX / amax : 0.0f;
  *d = amax / Q16_MAX;
  v128_t s = wasm_i32x4_splat(0), vid = wasm_f32x4_splat(id);
  for (int i = 0; i < 8; i += 2) {
    v128_t a = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_nearest(wasm_f32x4_mul(v[i], vid)));
    v128_t b = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_nearest(wasm_f32x4_mul(v[i + 1], vid)));
    s = wasm_i32x4_add(s, wasm_i32x4_add(a, b));
    wasm_v128_store(xq + 4 * i, wasm_i16x8_narrow_i32x4(a, b));
  }
  return wasm_i32x4_extract_lane(s, 0) + wasm_i32x4_extract_lane(s, 1) + wasm_i32x4_extract_lane(s, 2) +
         wasm_i32x4_extract_lane(s, 3);
}

/* c[0..4) (i16 codes) . x[0..32) (i16): the i32x4 partial sums */
INLINE v128_t idot32(const v128_t c[4], const int16_t *x) {
  v128_t a = wasm_i32x4_add(wasm_i32x4_dot_i16x8(c[0], wasm_v128_load(x)), wasm_i32x4_dot_i16x8(c[1], wasm_v128_load(x + 8)));
  v128_t b = wasm_i32x4_add(wasm_i32x4_dot_i16x8(c[2], wasm_v128_load(x + 16)), wasm_i32x4_dot_i16x8(c[3], wasm_v128_load(x + 24)));
  return wasm_i32x4_add(a, b);
}

/* A batch of T >= 2 tokens for the int16 dots (dot_rows): their xq interleaved per group,
 * xi[4 (T g + t) + i] = the i-th eight of token t's 32 values of group g, and their d,
 * dg[TP g + t] (TP = BATCH_PAD(T), zero-padded), so that one pointer per group reaches
 * every token at constant offsets (folded into the loads: no address arithmetic per
 * token and group, which otherwise costs as much as the dots). */
#define BATCH_PAD(T) (((T) + 3u) & ~3u)
INLINE void batch_x(const float *const *xp, const float *const *xs, uint32_t G, uint32_t G4, uint32_t T, v128_t *xi,
                    float *dg) {
  uint32_t TP = BATCH_PAD(T);
  for (uint32_t g = 0; g < G; g++) {
    for (uint32_t t = 0; t < T; t++) {
      const v128_t *s = (const v128_t *)xp[t] + 4 * g;
      for (int i = 0; i < 4; i++) xi[4 * (T * g + t) + i] = s[i];
      dg[TP * g + t] = xs[t][G4 + g];
    }
    for (uint32_t t = T; t < TP; t++) dg[TP * g + t] = 0.0f;
  }
  for (uint32_t i = TP * G; i < TP * G4; i++) dg[i] = 0.0f;
}

/* The pointers of group g of a batch: xg (its T tokens' xq) and tg (their scale * d),
 * each made opaque to the compiler (an empty asm), so that it reads the tokens at
 * constant offsets from them (folded into the loads) instead of keeping a pointer per
 * token that it advances and offsets with an add before each load. */
#define BATCH_GROUP(xi, ts, T, TP, g)                \
  const v128_t *xg = (xi) + 4 * (T) * (g);           \
  const float *tg = (ts) + (TP) * (g);               \
  __asm__("" : "+r"(xg));                            \
  __asm__("" : "+r"(tg))

/* ts[TP g + t] = sc[g] * d[TP g + t] for g < G4, t < TP (a multiple of 4, or 1: then
 * d = one token's d per group) */
INLINE void batch_scales(const float *sc, const float *d, uint32_t G4, uint32_t TP, float *ts) {
  if (TP == 1) {
    for (uint32_t g = 0; g < G4; g += 4)
      wasm_v128_store(ts + g, wasm_f32x4_mul(wasm_v128_load(sc + g), wasm_v128_load(d + g)));
    return;
  }
  for (uint32_t g = 0; g < G4; g++) {
    v128_t s = wasm_v128_load32_splat(sc + g);
    for (uint32_t t = 0; t < TP; t += 4)
      wasm_v128_store(ts + TP * g + t, wasm_f32x4_mul(s, wasm_v128_load(d + TP * g + t)));
  }
}

/* Element-wise ops below this many elements run on one thread (syncing costs more). */
#define SMALL_WORK 4096u

/* share() for an element-wise op: below SMALL_WORK thread 0 takes everything. */
INLINE void share_elements(uint32_t n, uint32_t align, uint32_t tid, uint32_t nt, uint32_t *b, uint32_t *e) {
  if (n < SMALL_WORK) {
    *b = 0;
    *e = tid ? 0 : n;
    return;
  }
  share(n, align, tid, nt, b, e);
}

/* ---- math (mathf.c) -------------------------------------------------------------- */

float exp_f32(float x);        /* e^x, rel. error < 2e-7 */
v128_t exp_f32x4(v128_t x);    /* the same, four lanes */
void sincos_f32(float a, float *s, float *c); /* correctly reduced; error < 1 ulp of f32 */

#endif
