/* The decode q or k projection with RoPE fused, shared by matvec_rope.c and
 * matvec_rope_bias.c: y[n] = W[n] . x (+ bias[n] where there is a bias) for the N = heads * HD
 * rows n of the weight, then each head rotated in place at position pos (rotary.h: the first
 * 2 half values, the rest pass). The same values as the matmul op (its decode path), then
 * bias_add, then the rope op. Threads take contiguous runs of heads. */
#ifndef MATVEC_ROPE_H
#define MATVEC_ROPE_H
#include "rotary.h"

INLINE void matvec_rope_heads(const wformat *f, const wmat *w, uint32_t N, uint32_t HD, uint32_t half, float scale,
                              const float *inv_freq, uint32_t pos, const float *x, float *y, const float *bias,
                              uint32_t tid, uint32_t nt) {
  uint32_t K = w->K, rb, re;
  share(N, HD, tid, nt, &rb, &re);
  if (rb >= re) return;
  float xp[K] __attribute__((aligned(16)));
  float xs[XS_FLOATS(K, f->group) + 4] __attribute__((aligned(16)));
  f->prep(x, K, xp, xs);
  const float *xpt[1] = {xp}, *xst[1] = {xs};
  if (f->dot_rows) {
    f->dot_rows(w, rb, re, xpt, xst, y + rb, N, 1);
  } else {
    for (uint32_t r = rb; r < re; r++) f->dot(w, r, xpt, xst, y + r, 1);
  }
  if (bias)
    for (uint32_t r = rb; r < re; r++) y[r] += bias[r];
  float c[half + 4] __attribute__((aligned(16)));
  float s[half + 4] __attribute__((aligned(16)));
  rotary_cos_sin(pos, inv_freq, half, scale, c, s);
  for (uint32_t r = rb; r < re; r += HD) rotary_rotate(y + r, c, s, half);
}

#endif
