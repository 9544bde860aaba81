/* matvec_rope: the decode q or k projection with RoPE fused (one token at position past_len):
 * y[dst + n] for the N = heads * HD rows n of the weight, each head rotated as rope.c does
 * (rotary.h: the first 2 HALF values, the rest pass), where dst is 0 for q and the cache
 * row's first element for k (written straight into the KV cache). The same values as the
 * matmul op followed by the rope op (matvec_rope.h).
 * args: consts [format, K, N, HD, HALF, SCALE, table offset] | uniforms [past_len, dst] |
 *       wg[3] | pointers [x f32[K], y f32[], weight parts ...]
 * Threads take contiguous runs of heads. */
#include "matvec_rope.h"
#include "rope_tables.h"

void op_matvec_rope(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[MATVEC_ROPE_FORMAT]);
  wmat w = weight_parts(a, MATVEC_ROPE_WEIGHTS, a[MATVEC_ROPE_K]);
  matvec_rope_heads(f, &w, a[MATVEC_ROPE_N], a[MATVEC_ROPE_HD], a[MATVEC_ROPE_HALF], f32_bits(a[MATVEC_ROPE_SCALE]),
                    ROPE_TABLES + a[MATVEC_ROPE_INV_FREQ], a[MATVEC_ROPE_PAST_LEN], (const float *)a[MATVEC_ROPE_X],
                    (float *)a[MATVEC_ROPE_Y] + a[MATVEC_ROPE_DST], 0, tid, nt);
}
