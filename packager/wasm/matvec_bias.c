/* matvec_bias: the decode matvec with a linear layer's bias (Qwen2's v projection):
 * y[t, row0 + n] = sum_k x[t, k] W[n, k] + bias[n] for t < seq_len, n < rows; the same values
 * as the matmul op's decode path (one token per pass: the plan uses it for decode's one
 * token) followed by bias_add.
 * args: consts [format, K, N] | uniforms [seq_len, row0, rows] | wg[3] |
 *       pointers [x f32[seq, K], y f32[seq, N], bias f32[rows], weight parts ...]
 * Threads take contiguous runs of rows. */
#include "llmpack.h"

void op_matvec_bias(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[MATVEC_BIAS_FORMAT]);
  uint32_t K = a[MATVEC_BIAS_K], N = a[MATVEC_BIAS_N], seq = a[MATVEC_BIAS_SEQ_LEN], rows = a[MATVEC_BIAS_ROWS];
  const float *x = (const float *)a[MATVEC_BIAS_X], *bias = (const float *)a[MATVEC_BIAS_BIAS];
  float *y = (float *)a[MATVEC_BIAS_Y] + a[MATVEC_BIAS_ROW0];
  wmat w = weight_parts(a, MATVEC_BIAS_WEIGHTS, K);
  uint32_t rb, re;
  share(rows, 16, tid, nt, &rb, &re);
  if (rb >= re) return;
  float xp[K] __attribute__((aligned(16)));
  float xs[XS_FLOATS(K, f->group) + 4] __attribute__((aligned(16)));
  const float *xpt[1] = {xp}, *xst[1] = {xs};
  for (uint32_t t = 0; t < seq; t++) {
    float *yt = y + (size_t)t * N;
    f->prep(x + (size_t)t * K, K, xp, xs);
    if (f->dot_rows) {
      f->dot_rows(&w, rb, re, xpt, xst, yt + rb, N, 1);
    } else {
      for (uint32_t r = rb; r < re; r++) f->dot(&w, r, xpt, xst, yt + r, 1);
    }
    for (uint32_t r = rb; r < re; r++) yt[r] += bias[r];
  }
}
