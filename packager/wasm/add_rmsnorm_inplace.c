/* add_rmsnorm_inplace: add_rmsnorm whose norm overwrites y (Gemma's xn), for t < rows
 * (= wg_x), r = in_row0 + t:
 *   x[r, i] += y[r, i];  y[r, i] = x[r, i] / sqrt(mean_i x[r]^2 + eps) * w[i]
 * args: consts [H, eps (f32 bits)] | uniforms [in_row0] | wg[3] | pointers [x, y, w]
 * Threads take contiguous runs of rows. */
#include "llmpack.h"

void op_add_rmsnorm_inplace(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t H = a[ADD_RMSNORM_INPLACE_H], in_row0 = a[ADD_RMSNORM_INPLACE_IN_ROW0];
  uint32_t rows = a[ADD_RMSNORM_INPLACE_WG_X];
  float eps = f32_bits(a[ADD_RMSNORM_INPLACE_EPS]);
  float *x = (float *)a[ADD_RMSNORM_INPLACE_X], *y = (float *)a[ADD_RMSNORM_INPLACE_Y];
  const float *w = (const float *)a[ADD_RMSNORM_INPLACE_W];
  uint32_t b, e;
  share(rows, 1, tid, nt, &b, &e);
  for (uint32_t t = b; t < e; t++) {
    size_t r = (size_t)(in_row0 + t) * H;
    add_rmsnorm_row(x + r, y + r, y + r, w, H, eps);
  }
}
