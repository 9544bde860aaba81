/* matvec_rope: the decode q or k projection with RoPE fused (one token at position past_len):
 * y[dst + n] for the N = heads * HD rows n of the weight, each head rotated as rope.c does
 * (rotary.h: the first 2 HALF values, the rest pass), where dst is 0 for q and the cache
 * row's first element for k (written straight into the KV cache). The same values as the
 * matmul op followed by the rope op.
 * args: consts [format, K, N, HD, HALF, SCALE, table offset] | uniforms [past_len, dst] |
 *       wg[3] | pointers [x f32[K], y f32[], weight parts ...]
 * Threads take contiguous runs of heads. */
#include "rotary.h"
#include "rope_tables.h"

void op_matvec_rope(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[MATVEC_ROPE_FORMAT]);
  uint32_t K = a[MATVEC_ROPE_K], N = a[MATVEC_ROPE_N], HD = a[MATVEC_ROPE_HD], half = a[MATVEC_ROPE_HALF];
  float scale = f32_bits(a[MATVEC_ROPE_SCALE]);
  const float *inv_freq = ROPE_TABLES + a[MATVEC_ROPE_INV_FREQ];
  const float *x = (const float *)a[MATVEC_ROPE_X];
  float *y = (float *)a[MATVEC_ROPE_Y] + a[MATVEC_ROPE_DST];
  wmat w = weight_parts(a, MATVEC_ROPE_WEIGHTS, K);
  uint32_t rb, re;
  share(N, HD, tid, nt, &rb, &re);
  if (rb >= re) return;
  float xp[K] __attribute__((aligned(16)));
  float xs[XS_FLOATS(K, f->group) + 4] __attribute__((aligned(16)));
  f->prep(x, K, xp, xs);
  const float *xpt[1] = {xp}, *xst[1] = {xs};
  if (f->dot_rows) {
    f->dot_rows(&w, rb, re, xpt, xst, y + rb, N, 1);
  } else {
    for (uint32_t r = rb; r < re; r++) f->dot(&w, r, xpt, xst, y + r, 1);
  }
  float c[half + 4] __attribute__((aligned(16)));
  float s[half + 4] __attribute__((aligned(16)));
  rotary_cos_sin(a[MATVEC_ROPE_PAST_LEN], inv_freq, half, scale, c, s);
  for (uint32_t r = rb; r < re; r += HD) rotary_rotate(y + r, c, s, half);
}
