/* rmsnorm: y[t, i] = x[in_row0 + t, i] / sqrt(mean_i x^2 + eps) * w[i] for t < rows,
 * rows = wg_x (the plan dispatches one workgroup per row).
 * args: consts [H, eps (f32 bits)] | uniforms [in_row0] | wg[3] | pointers [x, y, w]
 * Threads take contiguous runs of rows. */
#include "llmpack.h"

void op_rmsnorm(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t H = a[RMSNORM_H], in_row0 = a[RMSNORM_IN_ROW0], rows = a[RMSNORM_WG_X];
  float eps = f32_bits(a[RMSNORM_EPS]);
  const float *x = (const float *)a[RMSNORM_X], *w = (const float *)a[RMSNORM_W];
  float *y = (float *)a[RMSNORM_Y];
  uint32_t b, e;
  share(rows, 1, tid, nt, &b, &e);
  for (uint32_t t = b; t < e; t++) {
    const float *xr = x + (size_t)(in_row0 + t) * H;
    float *yr = y + (size_t)t * H;
    float inv = 1.0f / __builtin_sqrtf(dot_f32(xr, xr, H) / (float)H + eps);
    v128_t vi = wasm_f32x4_splat(inv);
    for (uint32_t i = 0; i < H; i += 4)
      wasm_v128_store(yr + i, wasm_f32x4_mul(wasm_f32x4_mul(wasm_v128_load(xr + i), vi), wasm_v128_load(w + i)));
  }
}
