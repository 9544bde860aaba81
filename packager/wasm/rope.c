/* rope: rotary embedding of q [seq, NH, HD] and k [seq, NKV, HD] in place, Hugging Face
 * rotate_half convention; token t is at position past_len + t; for i < HALF and
 * a = f32(pos) * inv_freq[i] (the f32 product, as the WGSL kernel and transformers),
 * c = SCALE cos a, s = SCALE sin a:
 *   x'[i] = x[i] c - x[i + HALF] s,   x'[i + HALF] = x[i + HALF] c + x[i] s
 * Only the first 2 HALF values of a head rotate (partial rotary when 2 HALF < HD).
 * inv_freq is the bundle's table (packager.rope.rope_inv_freq, default / linear / llama3 /
 * longrope), baked into the module by packager/wasm_build.py (rope_tables.h); SCALE (f32
 * bits) is longrope's attention factor, 1 otherwise.
 * args: consts [NH, NKV, HD, HALF, SCALE, table offset] | uniforms [seq_len, past_len] |
 *       wg[3] | pointers [q, k]
 * Threads take contiguous runs of tokens. */
#include "rotary.h"
#include "rope_tables.h"

void op_rope(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t NH = a[ROPE_NH], NKV = a[ROPE_NKV], HD = a[ROPE_HD], half = a[ROPE_HALF];
  uint32_t seq = a[ROPE_SEQ_LEN], past = a[ROPE_PAST_LEN];
  float scale = f32_bits(a[ROPE_SCALE]);
  const float *inv_freq = ROPE_TABLES + a[ROPE_INV_FREQ];
  float *q = (float *)a[ROPE_Q], *k = (float *)a[ROPE_K];
  float c[half + 4] __attribute__((aligned(16)));
  float s[half + 4] __attribute__((aligned(16)));
  uint32_t b, e;
  share(seq, 1, tid, nt, &b, &e);
  for (uint32_t t = b; t < e; t++) {
    rotary_cos_sin(past + t, inv_freq, half, scale, c, s);
    for (uint32_t h = 0; h < NH; h++) rotary_rotate(q + ((size_t)t * NH + h) * HD, c, s, half);
    for (uint32_t h = 0; h < NKV; h++) rotary_rotate(k + ((size_t)t * NKV + h) * HD, c, s, half);
  }
}
