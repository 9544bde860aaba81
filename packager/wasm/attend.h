/* One query row against a range of cache rows, with an online softmax (f32): the
 * shared core of attention.c and attention_decode.c.
 *   scores s_j = qs . k_j (qs already scaled), j in [j0, j1)
 *   m = max_j s_j, l = sum_j e^(s_j - m), acc[d] = sum_j e^(s_j - m) v_j[d]
 * Keys go in blocks of BLOCK: scores of a block, its max, then the running m, l and
 * acc are rescaled once per block. k and v point at kv head 0 of cache row 0 of the
 * head's cache; rows are `stride` floats apart. */
#ifndef ATTEND_H
#define ATTEND_H
#include "llmpack.h"

#define BLOCK 64u
#define NEG_BIG (-3.0e38f)

INLINE void attend(const float *qs, const float *k, const float *v, uint32_t stride, uint32_t HD, uint32_t j0,
                   uint32_t j1, float *acc, float *m_out, float *l_out) {
  float m = NEG_BIG, l = 0.0f;
  float s[BLOCK] __attribute__((aligned(16)));
  for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(acc + d, wasm_f32x4_splat(0.0f));
  for (uint32_t jb = j0; jb < j1; jb += BLOCK) {
    uint32_t nb = j1 - jb < BLOCK ? j1 - jb : BLOCK;
    float mb = NEG_BIG;
    for (uint32_t j = 0; j < nb; j++) {
      s[j] = dot_f32(qs, k + (size_t)(jb + j) * stride, HD);
      mb = s[j] > mb ? s[j] : mb;
    }
    float m_new = mb > m ? mb : m;
    float alpha = exp_f32(m - m_new);
    v128_t mv = wasm_f32x4_splat(m_new);
    v128_t lsum = wasm_f32x4_splat(0.0f);
    uint32_t j = 0;
    for (; j + 4 <= nb; j += 4) {
      v128_t p = exp_f32x4(wasm_f32x4_sub(wasm_v128_load(s + j), mv));
      wasm_v128_store(s + j, p);
      lsum = wasm_f32x4_add(lsum, p);
    }
    float lb = hsum(lsum);
    for (; j < nb; j++) {
      s[j] = exp_f32(s[j] - m_new);
      lb += s[j];
    }
    l = l * alpha + lb;
    m = m_new;
    v128_t av = wasm_f32x4_splat(alpha);
    for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(acc + d, wasm_f32x4_mul(wasm_v128_load(acc + d), av));
    for (j = 0; j < nb; j++) {
      const float *vr = v + (size_t)(jb + j) * stride;
      v128_t p = wasm_f32x4_splat(s[j]);
      for (uint32_t d = 0; d < HD; d += 4)
        wasm_v128_store(acc + d, wasm_f32x4_add(wasm_v128_load(acc + d), wasm_f32x4_mul(p, wasm_v128_load(vr + d))));
    }
  }
  *m_out = m;
  *l_out = l;
}

/* qs = q * scale */
INLINE void scaled(const float *q, float scale, uint32_t HD, float *qs) {
  v128_t sv = wasm_f32x4_splat(scale);
  for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(qs + d, wasm_f32x4_mul(wasm_v128_load(q + d), sv));
}

#endif
