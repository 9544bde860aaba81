/* rope: rotary embedding of q [seq, NH, HD] and k [seq, NKV, HD] in place, Hugging Face
 * rotate_half convention; token t is at position past_len + t; for i < HD / 2 and
 * a = f32(pos) * inv_freq[i] (the f32 product, as the WGSL kernel and transformers):
 *   x'[i] = x[i] cos a - x[i + HD/2] sin a,   x'[i + HD/2] = x[i + HD/2] cos a + x[i] sin a
 * inv_freq is the bundle's table (packager.rope.rope_inv_freq, default / linear /
 * llama3), baked into the module by packager/wasm_build.py (rope_tables.h).
 * args: consts [NH, NKV, HD, table offset] | uniforms [seq_len, past_len] | wg[3] |
 *       pointers [q, k]
 * HD is a multiple of 8 (the plan checks), so HD / 2 is a multiple of 4.
 * Threads take contiguous runs of tokens. */
#include "llmpack.h"
#include "rope_tables.h"

static void rotate(float *x, const float *c, const float *s, uint32_t half) {
  for (uint32_t i = 0; i < half; i += 4) {
    v128_t x1 = wasm_v128_load(x + i), x2 = wasm_v128_load(x + half + i);
    v128_t cv = wasm_v128_load(c + i), sv = wasm_v128_load(s + i);
    wasm_v128_store(x + i, wasm_f32x4_sub(wasm_f32x4_mul(x1, cv), wasm_f32x4_mul(x2, sv)));
    wasm_v128_store(x + half + i, wasm_f32x4_add(wasm_f32x4_mul(x2, cv), wasm_f32x4_mul(x1, sv)));
  }
}

void op_rope(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t NH = a[ROPE_NH], NKV = a[ROPE_NKV], HD = a[ROPE_HD], seq = a[ROPE_SEQ_LEN], past = a[ROPE_PAST_LEN];
  const float *inv_freq = ROPE_TABLES + a[ROPE_INV_FREQ];
  float *q = (float *)a[ROPE_Q], *k = (float *)a[ROPE_K];
  uint32_t half = HD / 2;
  float c[half + 4] __attribute__((aligned(16)));
  float s[half + 4] __attribute__((aligned(16)));
  uint32_t b, e;
  share(seq, 1, tid, nt, &b, &e);
  for (uint32_t t = b; t < e; t++) {
    float pos = (float)(past + t);
    for (uint32_t i = 0; i < half; i++) sincos_f32(pos * inv_freq[i], &s[i], &c[i]);
    for (uint32_t h = 0; h < NH; h++) rotate(q + ((size_t)t * NH + h) * HD, c, s, half);
    for (uint32_t h = 0; h < NKV; h++) rotate(k + ((size_t)t * NKV + h) * HD, c, s, half);
  }
}
