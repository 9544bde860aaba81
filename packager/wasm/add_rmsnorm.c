/* add_rmsnorm: the residual add fused with the next RMSNorm, for t < rows (= wg_x, one
 * workgroup per row in the plan), r = in_row0 + t:
 *   x[r, i] += y[r, i];  out[t, i] = x[r, i] / sqrt(mean_i x[r]^2 + eps) * w[i]
 * args: consts [H, eps (f32 bits)] | uniforms [in_row0] | wg[3] | pointers [x, y, out, w]
 * Threads take contiguous runs of rows. */
#include "llmpack.h"

void op_add_rmsnorm(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t H = a[ADD_RMSNORM_H], in_row0 = a[ADD_RMSNORM_IN_ROW0], rows = a[ADD_RMSNORM_WG_X];
  float eps = f32_bits(a[ADD_RMSNORM_EPS]);
  float *x = (float *)a[ADD_RMSNORM_X], *out = (float *)a[ADD_RMSNORM_OUT];
  const float *y = (const float *)a[ADD_RMSNORM_Y], *w = (const float *)a[ADD_RMSNORM_W];
  uint32_t b, e;
  share(rows, 1, tid, nt, &b, &e);
  for (uint32_t t = b; t < e; t++) {
    size_t r = (size_t)(in_row0 + t) * H;
    add_rmsnorm_row(x + r, y + r, out + (size_t)t * H, w, H, eps);
  }
}
