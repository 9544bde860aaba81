/* matmul: y[m, row0 + n] = sum_k x[m, k] W[n, k] for m < seq_len, n < rows (one row
 * block of a linear layer; the plan's `matmul` (prefill) and `matvec` (decode, logits)
 * kernels both map here).
 * args: consts [format, K, N] | uniforms [seq_len, row0, rows] | wg[3] |
 *       pointers [x f32[seq, K], y f32[seq, N], weight parts ...]
 * Threads take contiguous runs of rows. Tokens go in tiles of up to TILE, each token's
 * x prepped once per tile (into the order the format's codes unpack in, plus group
 * sums; int16 for the formats with int16 activations, llmpack.h). Then, per run of rows:
 * - few tokens (decode; the verify calls of speculative decoding): the format's fused
 *   dot, up to MAXT (dot) or MAXT_ROWS (dot_rows) tokens at a time, so that a row's codes
 *   are unpacked once per pass; the int16 formats (dot_rows) take this path up to
 *   DOT_ROWS_MAX_SEQ tokens, where it costs less per token than the GEMM (measured on
 *   SmolLM2: 8 tokens 11 % less, 12 about the same, 16 5 % more; docs/wasm.md);
 * - more tokens (prefill; GEMM_MIN and more for the other formats): RB rows are
 *   dequantized to f32 once per tile and multiplied with the tile's x by a 4 x 2
 *   register-blocked f32 kernel. */
#include "llmpack.h"

#define TILE MATMUL_TILE /* kernel_table.h: packager/wasm_build.py sizes the thread stacks with them */
#define RB MATMUL_RB
#define GEMM_MIN 8u          /* formats with `dot` only */
#define DOT_ROWS_MAX_SEQ 12u /* formats with `dot_rows`: the int16 dots up to this many tokens */

/* y[t, col0 + r] for r < RB, t < 2: four dequantized rows (w, stride K) by two x rows */
static void kernel_4x2(const float *w, const float *x0, const float *x1, uint32_t K, float *y0, float *y1) {
  v128_t a00 = wasm_f32x4_splat(0.0f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  const float *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
  for (uint32_t k = 0; k < K; k += 4) {
    v128_t u = wasm_v128_load(x0 + k), v = wasm_v128_load(x1 + k);
    v128_t b = wasm_v128_load(w0 + k);
    a00 = wasm_f32x4_add(a00, wasm_f32x4_mul(b, u));
    a01 = wasm_f32x4_add(a01, wasm_f32x4_mul(b, v));
    b = wasm_v128_load(w1 + k);
    a10 = wasm_f32x4_add(a10, wasm_f32x4_mul(b, u));
    a11 = wasm_f32x4_add(a11, wasm_f32x4_mul(b, v));
    b = wasm_v128_load(w2 + k);
    a20 = wasm_f32x4_add(a20, wasm_f32x4_mul(b, u));
    a21 = wasm_f32x4_add(a21, wasm_f32x4_mul(b, v));
    b = wasm_v128_load(w3 + k);
    a30 = wasm_f32x4_add(a30, wasm_f32x4_mul(b, u));
    a31 = wasm_f32x4_add(a31, wasm_f32x4_mul(b, v));
  }
  y0[0] = hsum(a00), y0[1] = hsum(a10), y0[2] = hsum(a20), y0[3] = hsum(a30);
  y1[0] = hsum(a01), y1[1] = hsum(a11), y1[2] = hsum(a21), y1[3] = hsum(a31);
}

/* the tile's tt tokens (prepped x, stride K) times rows [r, r + nr) of W */
static void gemm_rows(const wformat *f, const wmat *w, uint32_t r, uint32_t nr, const float *xp, uint32_t tt,
                      float *wt, float *y, uint32_t N) {
  uint32_t K = w->K;
  for (uint32_t i = 0; i < nr; i++) f->deq(w, r + i, wt + (size_t)i * K);
  uint32_t t = 0;
  if (nr == RB) {
    float o0[RB], o1[RB];
    for (; t + 2 <= tt; t += 2) {
      kernel_4x2(wt, xp + (size_t)t * K, xp + (size_t)(t + 1) * K, K, o0, o1);
      for (uint32_t i = 0; i < RB; i++) {
        y[(size_t)t * N + r + i] = o0[i];
        y[(size_t)(t + 1) * N + r + i] = o1[i];
      }
    }
  }
  for (; t < tt; t++)
    for (uint32_t i = 0; i < nr; i++) y[(size_t)t * N + r + i] = dot_f32(wt + (size_t)i * K, xp + (size_t)t * K, K);
}

void op_matmul(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[MATMUL_FORMAT]);
  uint32_t K = a[MATMUL_K], N = a[MATMUL_N], seq = a[MATMUL_SEQ_LEN], row0 = a[MATMUL_ROW0], rows = a[MATMUL_ROWS];
  const float *x = (const float *)a[MATMUL_X];
  float *y = (float *)a[MATMUL_Y];
  wmat w = weight_parts(a, MATMUL_WEIGHTS, K);
  uint32_t rb, re;
  share(rows, 16, tid, nt, &rb, &re);
  if (rb >= re || seq == 0) return;
  uint32_t G = XS_FLOATS(K, f->group);
  uint32_t tile = seq < TILE ? seq : TILE;
  int gemm = seq >= (f->dot_rows ? DOT_ROWS_MAX_SEQ + 1 : GEMM_MIN);
  uint32_t maxt = f->dot_rows ? MAXT_ROWS : MAXT;
  void (*prep)(const float *, uint32_t, float *, float *) = gemm && f->gemm_prep ? f->gemm_prep : f->prep;
  float xp[tile * K] __attribute__((aligned(16)));
  float xs[tile * G + 4] __attribute__((aligned(16)));
  float wt[gemm ? RB * K : 4] __attribute__((aligned(16)));
  for (uint32_t t0 = 0; t0 < seq; t0 += tile) {
    uint32_t tt = seq - t0 < tile ? seq - t0 : tile;
    for (uint32_t t = 0; t < tt; t++) prep(x + (size_t)(t0 + t) * K, K, xp + (size_t)t * K, xs + t * G);
    float *yt = y + (size_t)t0 * N + row0;
    if (gemm) {
      for (uint32_t r = rb; r < re; r += RB) gemm_rows(f, &w, r, re - r < RB ? re - r : RB, xp, tt, wt, yt, N);
      continue;
    }
    /* passes of at most maxt tokens, as even as they go (9 tokens: 5 + 4, not 8 + 1) */
    uint32_t passes = (tt + maxt - 1) / maxt;
    for (uint32_t q0 = 0, T; q0 < tt; q0 += T, passes--) {
      T = (tt - q0 + passes - 1) / passes;
      const float *xpt[MAXT_ROWS], *xst[MAXT_ROWS];
      for (uint32_t t = 0; t < T; t++) {
        xpt[t] = xp + (size_t)(q0 + t) * K;
        xst[t] = xs + (q0 + t) * G;
      }
      float *yq = yt + (size_t)q0 * N;
      if (f->dot_rows) {
        f->dot_rows(&w, rb, re, xpt, xst, yq + rb, N, T);
        continue;
      }
      for (uint32_t r = rb; r < re; r++) {
        float out[MAXT_ROWS];
        f->dot(&w, r, xpt, xst, out, T);
        for (uint32_t t = 0; t < T; t++) yq[(size_t)t * N + r] = out[t];
      }
    }
  }
}
