/* The rotation of one head, Hugging Face rotate_half convention: the shared core of rope.c
 * and matvec_rope.c. For i < half, a = f32(pos) * inv_freq[i] (the f32 product, as the
 * WGSL kernels and transformers), c = scale cos a, s = scale sin a:
 *   x'[i] = x[i] c - x[i + half] s,   x'[i + half] = x[i + half] c + x[i] s
 * Values past 2 half pass (partial rotary). */
#ifndef ROTARY_H
#define ROTARY_H
#include "llmpack.h"

/* c[i], s[i] for i < half at position pos */
INLINE void rotary_cos_sin(uint32_t pos, const float *inv_freq, uint32_t half, float scale, float *c, float *s) {
  float p = (float)pos;
  for (uint32_t i = 0; i < half; i++) {
    sincos_f32(p * inv_freq[i], &s[i], &c[i]);
    c[i] *= scale;
    s[i] *= scale;
  }
}

INLINE void rotary_rotate(float *x, const float *c, const float *s, uint32_t half) {
  uint32_t i = 0;
  for (; i + 4 <= half; i += 4) {
    v128_t x1 = wasm_v128_load(x + i), x2 = wasm_v128_load(x + half + i);
    v128_t cv = wasm_v128_load(c + i), sv = wasm_v128_load(s + i);
    wasm_v128_store(x + i, wasm_f32x4_sub(wasm_f32x4_mul(x1, cv), wasm_f32x4_mul(x2, sv)));
    wasm_v128_store(x + half + i, wasm_f32x4_add(wasm_f32x4_mul(x2, cv), wasm_f32x4_mul(x1, sv)));
  }
  for (; i < half; i++) {
    float x1 = x[i], x2 = x[half + i];
    x[i] = x1 * c[i] - x2 * s[i];
    x[half + i] = x2 * c[i] + x1 * s[i];
  }
}

#endif
