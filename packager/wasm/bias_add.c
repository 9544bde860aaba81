/* bias_add: a linear layer's bias, in place: x[t, i] += b[i] for t * W + i < n.
 * args: consts [W] | uniforms [n] | wg[3] | pointers [x, b]
 * W is a multiple of 8 (the plan checks). Threads take contiguous runs of rows (one
 * thread below SMALL_WORK elements). */
#include "llmpack.h"

void op_bias_add(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t W = a[BIAS_ADD_W], n = a[BIAS_ADD_N];
  float *x = (float *)a[BIAS_ADD_X];
  const float *b = (const float *)a[BIAS_ADD_B];
  uint32_t rows = n / W, rb, re;
  if (n < SMALL_WORK) {
    rb = 0;
    re = tid ? 0 : rows;
  } else {
    share(rows, 1, tid, nt, &rb, &re);
  }
  for (uint32_t t = rb; t < re; t++) {
    float *xr = x + (size_t)t * W;
    for (uint32_t i = 0; i < W; i += 4) wasm_v128_store(xr + i, wasm_f32x4_add(wasm_v128_load(xr + i), wasm_v128_load(b + i)));
  }
}
