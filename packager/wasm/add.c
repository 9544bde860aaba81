/* add: residual x[i] += y[i] for i < n.
 * args: uniforms [n] | wg[3] | pointers [x, y]
 * Threads take contiguous runs of elements (one thread below SMALL_WORK). */
#include "llmpack.h"

void op_add(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t n = a[ADD_N];
  float *x = (float *)a[ADD_X];
  const float *y = (const float *)a[ADD_Y];
  uint32_t b, e;
  share_elements(n, 64, tid, nt, &b, &e);
  uint32_t i = b;
  for (; i + 4 <= e; i += 4) wasm_v128_store(x + i, wasm_f32x4_add(wasm_v128_load(x + i), wasm_v128_load(y + i)));
  for (; i < e; i++) x[i] += y[i];
}
