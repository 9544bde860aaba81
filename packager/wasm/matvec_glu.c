/* matvec_glu: y[t, row0 + n] = act(x[t] . Wg[n]) * (x[t] . Wu[n]) for t < seq_len, n < rows:
 * a gated MLP's gate and up projections and its activation in one op (decode), act = SiLU
 * or GELU-tanh (ACT: GLU_ACT_* of kernel_table.h; glu.h).
 * args: consts [format, K, N, act] | uniforms [seq_len, row0, rows] | wg[3] |
 *       pointers [x f32[seq, K], y f32[seq, N], Wg's parts ..., Wu's parts ...]
 * As matmul's few-token path, so that g and u are the values matmul computes: threads take
 * contiguous runs of rows (multiples of 16), each token's x is prepped once (int16 for the
 * formats with int16 activations), and the format's dot_rows dots CHUNK rows of Wg, then the
 * same rows of Wu, with it; their activation goes straight to y. */
#include "glu.h"

#define CHUNK 256u

static const uint8_t PARTS[FMT_COUNT] = FMT_PARTS;

/* out[i] = W[r0 + i] . x for r0 + i < r1 (one token) */
static void rows_dot(const wformat *f, const wmat *w, uint32_t r0, uint32_t r1, const float *xp, const float *xs,
                     float *out) {
  const float *xpt[1] = {xp}, *xst[1] = {xs};
  if (f->dot_rows) {
    f->dot_rows(w, r0, r1, xpt, xst, out, 1, 1);
    return;
  }
  for (uint32_t r = r0; r < r1; r++) f->dot(w, r, xpt, xst, out + (r - r0), 1);
}

void op_matvec_glu(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[MATVEC_GLU_FORMAT]);
  uint32_t K = a[MATVEC_GLU_K], N = a[MATVEC_GLU_N], seq = a[MATVEC_GLU_SEQ_LEN];
  uint32_t row0 = a[MATVEC_GLU_ROW0], rows = a[MATVEC_GLU_ROWS];
  int gelu = a[MATVEC_GLU_ACT] == GLU_ACT_GELU_TANH;
  const float *x = (const float *)a[MATVEC_GLU_X];
  float *y = (float *)a[MATVEC_GLU_Y];
  wmat wg = weight_parts(a, MATVEC_GLU_WEIGHTS, K);
  wmat wu = weight_parts(a, MATVEC_GLU_WEIGHTS + PARTS[a[MATVEC_GLU_FORMAT]], K);
  uint32_t rb, re;
  share(rows, 16, tid, nt, &rb, &re);
  if (rb >= re || seq == 0) return;
  uint32_t G = XS_FLOATS(K, f->group);
  float xp[K] __attribute__((aligned(16)));
  float xs[G + 4] __attribute__((aligned(16)));
  float g[CHUNK] __attribute__((aligned(16))), u[CHUNK] __attribute__((aligned(16)));
  for (uint32_t t = 0; t < seq; t++) {
    f->prep(x + (size_t)t * K, K, xp, xs);
    float *yt = y + (size_t)t * N + row0;
    for (uint32_t r = rb; r < re; r += CHUNK) {
      uint32_t n = re - r < CHUNK ? re - r : CHUNK, i = 0;
      rows_dot(f, &wg, r, r + n, xp, xs, g);
      rows_dot(f, &wu, r, r + n, xp, xs, u);
      float *out = yt + r;
      if (gelu) {
        for (; i + 4 <= n; i += 4)
          wasm_v128_store(out + i, gelu_tanh_mul_f32x4(wasm_v128_load(g + i), wasm_v128_load(u + i)));
        for (; i < n; i++) out[i] = gelu_tanh_mul_f32(g[i], u[i]);
      } else {
        for (; i + 4 <= n; i += 4)
          wasm_v128_store(out + i, silu_mul_f32x4(wasm_v128_load(g + i), wasm_v128_load(u + i)));
        for (; i < n; i++) out[i] = silu_mul_f32(g[i], u[i]);
      }
    }
  }
}
