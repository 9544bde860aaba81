/* silu_mul: g[i] = silu(g[i]) * u[i], silu(x) = x / (1 + e^-x), for i < n (glu.h).
 * args: uniforms [n] | wg[3] | pointers [g, u]
 * Threads take contiguous runs of elements (one thread below SMALL_WORK). */
#include "glu.h"

void op_silu_mul(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t n = a[SILU_MUL_N];
  float *g = (float *)a[SILU_MUL_G];
  const float *u = (const float *)a[SILU_MUL_U];
  uint32_t b, e;
  share_elements(n, 64, tid, nt, &b, &e);
  uint32_t i = b;
  for (; i + 4 <= e; i += 4) wasm_v128_store(g + i, silu_mul_f32x4(wasm_v128_load(g + i), wasm_v128_load(u + i)));
  for (; i < e; i++) g[i] = silu_mul_f32(g[i], u[i]);
}
