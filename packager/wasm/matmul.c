/* matmul: y[m, row0 + n] = sum_k x[m, k] W[n, k] for m < seq_len, n < rows (one row
 * block of a linear layer; the plan's `matmul` (prefill) and `matvec` (decode, logits)
 * kernels both map here).
 * args: consts [format, K, N] | uniforms [seq_len, row0, rows] | wg[3] |
 *       pointers [x f32[seq, K], y f32[seq, N], weight parts ...]
 * Threads take contiguous runs of rows. Tokens go in tiles of up to TILE: each
 * token's x is prepped once per tile (the format's code order and group sums); then
 * every row of the thread's run is dotted with MAXT tokens at a time, so the row's
 * codes are unpacked once per MAXT tokens and stay in L1 across the tile. */
#include "llmpack.h"

#define TILE 16u

void op_matmul(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[0]);
  uint32_t K = a[1], N = a[2], seq = a[3], row0 = a[4], rows = a[5];
  const float *x = (const float *)a[9];
  float *y = (float *)a[10];
  wmat w = {{(const void *)a[11], (const void *)a[12], (const void *)a[13], (const void *)a[14]}, K};
  uint32_t rb, re;
  share(rows, 16, tid, nt, &rb, &re);
  if (rb >= re || seq == 0) return;
  uint32_t G = K / f->group;
  uint32_t tile = seq < TILE ? seq : TILE;
  float xp[tile * K] __attribute__((aligned(16)));
  float xs[tile * G + 4] __attribute__((aligned(16)));
  for (uint32_t t0 = 0; t0 < seq; t0 += tile) {
    uint32_t tt = seq - t0 < tile ? seq - t0 : tile;
    for (uint32_t t = 0; t < tt; t++) f->prep(x + (size_t)(t0 + t) * K, K, xp + (size_t)t * K, xs + t * G);
    for (uint32_t r = rb; r < re; r++) {
      for (uint32_t q0 = 0; q0 < tt; q0 += MAXT) {
        uint32_t T = tt - q0 < MAXT ? tt - q0 : MAXT;
        const float *xpt[MAXT], *xst[MAXT];
        float out[MAXT];
        for (uint32_t t = 0; t < T; t++) {
          xpt[t] = xp + (size_t)(q0 + t) * K;
          xst[t] = xs + (q0 + t) * G;
        }
        f->dot(&w, r, xpt, xst, out, T);
        for (uint32_t t = 0; t < T; t++) y[(size_t)(t0 + q0 + t) * N + row0 + r] = out[t];
      }
    }
  }
}
