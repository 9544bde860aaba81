/* matvec_rope_bias: matvec_rope with a linear layer's bias (Qwen2's q and k projections):
 * y[dst + n] = W[n] . x + bias[n] for the N = heads * HD rows n, the bias added before each
 * head is rotated (matvec_rope.h). The same values as the matmul, bias_add and rope ops.
 * args: consts [format, K, N, HD, HALF, SCALE, table offset] | uniforms [past_len, dst] |
 *       wg[3] | pointers [x f32[K], y f32[], bias f32[N], weight parts ...] */
#include "matvec_rope.h"
#include "rope_tables.h"

void op_matvec_rope_bias(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[MATVEC_ROPE_BIAS_FORMAT]);
  wmat w = weight_parts(a, MATVEC_ROPE_BIAS_WEIGHTS, a[MATVEC_ROPE_BIAS_K]);
  matvec_rope_heads(f, &w, a[MATVEC_ROPE_BIAS_N], a[MATVEC_ROPE_BIAS_HD], a[MATVEC_ROPE_BIAS_HALF],
                    f32_bits(a[MATVEC_ROPE_BIAS_SCALE]), ROPE_TABLES + a[MATVEC_ROPE_BIAS_INV_FREQ],
                    a[MATVEC_ROPE_BIAS_PAST_LEN], (const float *)a[MATVEC_ROPE_BIAS_X],
                    (float *)a[MATVEC_ROPE_BIAS_Y] + a[MATVEC_ROPE_BIAS_DST],
                    (const float *)a[MATVEC_ROPE_BIAS_BIAS], tid, nt);
}
