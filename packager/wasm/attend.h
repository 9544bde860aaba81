/* One query row against a range of cache rows, with an online softmax (f32): the
 * shared core of attention.c and attention_decode.c.
 *   scores s_j = cap(qs . k_j) (qs already scaled), j in [j0, j1); cap(s) = tanh(s / c) c
 *   (attention-logit soft-capping) when c > 0, else s
 *   m = max_j s_j, l = sum_j e^(s_j - m), acc[d] = sum_j e^(s_j - m) v_j[d]
 * Keys go in blocks of BLOCK: scores of a block (four keys at a time), its max, then
 * the running m, l and acc are rescaled once per block. k and v point at kv head 0 of cache row 0 of the
 * head's cache; rows are `stride` floats apart. */
#ifndef ATTEND_H
#define ATTEND_H
#include "llmpack.h"

#define BLOCK 64u
#define NEG_BIG (-3.0e38f)

/* [a.b0, a.b1, a.b2, a.b3] for four partial-sum vectors s0..s3 (a transposed hsum) */
INLINE v128_t hsum4(v128_t s0, v128_t s1, v128_t s2, v128_t s3) {
  v128_t a = wasm_f32x4_add(wasm_i32x4_shuffle(s0, s1, 0, 4, 1, 5), wasm_i32x4_shuffle(s0, s1, 2, 6, 3, 7));
  v128_t b = wasm_f32x4_add(wasm_i32x4_shuffle(s2, s3, 0, 4, 1, 5), wasm_i32x4_shuffle(s2, s3, 2, 6, 3, 7));
  return wasm_f32x4_add(wasm_i32x4_shuffle(a, b, 0, 1, 4, 5), wasm_i32x4_shuffle(a, b, 2, 3, 6, 7));
}

/* s[j] = qs . k_j for j < n (keys four at a time, sharing the loads of qs) */
INLINE void scores(const float *qs, const float *k, uint32_t stride, uint32_t HD, uint32_t n, float *s) {
  uint32_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float *k0 = k + (size_t)j * stride;
    const float *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
    v128_t s0 = wasm_f32x4_splat(0.0f), s1 = s0, s2 = s0, s3 = s0;
    for (uint32_t d = 0; d < HD; d += 4) {
      v128_t q = wasm_v128_load(qs + d);
      s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(q, wasm_v128_load(k0 + d)));
      s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(q, wasm_v128_load(k1 + d)));
      s2 = wasm_f32x4_add(s2, wasm_f32x4_mul(q, wasm_v128_load(k2 + d)));
      s3 = wasm_f32x4_add(s3, wasm_f32x4_mul(q, wasm_v128_load(k3 + d)));
    }
    wasm_v128_store(s + j, hsum4(s0, s1, s2, s3));
  }
  for (; j < n; j++) s[j] = dot_f32(qs, k + (size_t)j * stride, HD);
}

/* acc[d] = alpha acc[d] + sum_j p[j] v_j[d]; dimensions 8 at a time, kept in registers
 * over the block's keys */
INLINE void accumulate(float *acc, float alpha, const float *p, const float *v, uint32_t stride, uint32_t HD,
                       uint32_t n) {
  v128_t av = wasm_f32x4_splat(alpha);
  for (uint32_t d = 0; d < HD; d += 8) {
    v128_t a0 = wasm_f32x4_mul(wasm_v128_load(acc + d), av);
    v128_t a1 = wasm_f32x4_mul(wasm_v128_load(acc + d + 4), av);
    const float *vr = v + d;
    for (uint32_t j = 0; j < n; j++, vr += stride) {
      v128_t pj = wasm_f32x4_splat(p[j]);
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(pj, wasm_v128_load(vr)));
      a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(pj, wasm_v128_load(vr + 4)));
    }
    wasm_v128_store(acc + d, a0);
    wasm_v128_store(acc + d + 4, a1);
  }
}

/* tanh(s / c) c, tanh from e^-2|x| (which cannot overflow) */
INLINE float softcap_f32(float s, float c) {
  float e = exp_f32(-2.0f * __builtin_fabsf(s) / c);
  float t = (1.0f - e) / (1.0f + e);
  return (s < 0.0f ? -t : t) * c;
}

INLINE void attend(const float *qs, const float *k, const float *v, uint32_t stride, uint32_t HD, uint32_t j0,
                   uint32_t j1, float cap, float *acc, float *m_out, float *l_out) {
  float m = NEG_BIG, l = 0.0f;
  float s[BLOCK] __attribute__((aligned(16)));
  for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(acc + d, wasm_f32x4_splat(0.0f));
  for (uint32_t jb = j0; jb < j1; jb += BLOCK) {
    uint32_t nb = j1 - jb < BLOCK ? j1 - jb : BLOCK;
    scores(qs, k + (size_t)jb * stride, stride, HD, nb, s);
    if (cap > 0.0f)
      for (uint32_t j = 0; j < nb; j++) s[j] = softcap_f32(s[j], cap);
    float mb = NEG_BIG;
    for (uint32_t j = 0; j < nb; j++) mb = s[j] > mb ? s[j] : mb;
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
    accumulate(acc, alpha, s, v + (size_t)jb * stride, stride, HD, nb);
  }
  *m_out = m;
  *l_out = l;
}

/* attend() over the key positions [p0, p1) of a cache of `slots` rows, position j in row
 * j % slots (a ring buffer: at most two runs of rows; a full cache: one). `tmp`: HD floats. */
INLINE void attend_ring(const float *qs, const float *k, const float *v, uint32_t stride, uint32_t HD, uint32_t p0,
                        uint32_t p1, uint32_t slots, float cap, float *acc, float *tmp, float *m_out,
                        float *l_out) {
  uint32_t r0 = p0 % slots, n = p1 - p0;
  uint32_t first = n < slots - r0 ? n : slots - r0;
  attend(qs, k, v, stride, HD, r0, r0 + first, cap, acc, m_out, l_out);
  if (first == n) return;
  float m2, l2;
  attend(qs, k, v, stride, HD, 0, n - first, cap, tmp, &m2, &l2);
  float m = *m_out > m2 ? *m_out : m2;
  float a1 = exp_f32(*m_out - m), a2 = exp_f32(m2 - m);
  v128_t v1 = wasm_f32x4_splat(a1), v2 = wasm_f32x4_splat(a2);
  for (uint32_t d = 0; d < HD; d += 4)
    wasm_v128_store(acc + d, wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(acc + d), v1),
                                            wasm_f32x4_mul(wasm_v128_load(tmp + d), v2)));
  *l_out = *l_out * a1 + l2 * a2;
  *m_out = m;
}

/* qs = q * scale */
INLINE void scaled(const float *q, float scale, uint32_t HD, float *qs) {
  v128_t sv = wasm_f32x4_splat(scale);
  for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(qs + d, wasm_f32x4_mul(wasm_v128_load(q + d), sv));
}

#endif
