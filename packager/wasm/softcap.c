/* softcap: x[i] = tanh(x[i] / CAP) * CAP for i < n (final-logit soft-capping), with
 * tanh(z) = sign(z) (1 - e^-2|z|) / (1 + e^-2|z|) (no overflow).
 * args: consts [CAP (f32 bits)] | uniforms [n] | wg[3] | pointers [x]
 * Threads take contiguous runs of elements (one thread below SMALL_WORK). */
#include "llmpack.h"

void op_softcap(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t n = a[SOFTCAP_N];
  float cap = f32_bits(a[SOFTCAP_CAP]);
  float *x = (float *)a[SOFTCAP_X];
  uint32_t b, e;
  share_elements(n, 64, tid, nt, &b, &e);
  uint32_t i = b;
  const v128_t one = wasm_f32x4_splat(1.0f), c = wasm_f32x4_splat(cap);
  const v128_t m2 = wasm_f32x4_splat(-2.0f / cap), sign = wasm_i32x4_splat((int32_t)0x80000000);
  for (; i + 4 <= e; i += 4) {
    v128_t v = wasm_v128_load(x + i);
    v128_t ez = exp_f32x4(wasm_f32x4_mul(m2, wasm_f32x4_abs(v)));
    v128_t th = wasm_f32x4_div(wasm_f32x4_sub(one, ez), wasm_f32x4_add(one, ez));
    th = wasm_v128_or(th, wasm_v128_and(v, sign));
    wasm_v128_store(x + i, wasm_f32x4_mul(th, c));
  }
  for (; i < e; i++) {
    float ez = exp_f32(-2.0f / cap * __builtin_fabsf(x[i]));
    float th = (1.0f - ez) / (1.0f + ez);
    x[i] = (x[i] < 0.0f ? -th : th) * cap;
  }
}
