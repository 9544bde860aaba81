/* attention_combine: pass 2 of the split decode attention: for head h < NH (= wg_x),
 *   out[h, d] = sum_s e^(m_s - M) acc_s[d] / sum_s e^(m_s - M) l_s,  M = max_s m_s
 * over the splits s < cdiv(min(past_len + 1, WINDOW), SPLIT).
 * args: consts [HD, WINDOW, SPLIT, MAX_SPLITS] | uniforms [past_len] | wg[3] |
 *       pointers [part f32[NH, MAX_SPLITS, HD + 2], out f32[NH, HD]]
 * Threads take heads round-robin. */
#include "llmpack.h"

void op_attention_combine(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t HD = a[ATTENTION_COMBINE_HD], SPLIT = a[ATTENTION_COMBINE_SPLIT], WINDOW = a[ATTENTION_COMBINE_WINDOW];
  uint32_t MAX_SPLITS = a[ATTENTION_COMBINE_MAX_SPLITS], past = a[ATTENTION_COMBINE_PAST_LEN];
  uint32_t NH = a[ATTENTION_COMBINE_WG_X];
  const float *part = (const float *)a[ATTENTION_COMBINE_PART];
  float *out = (float *)a[ATTENTION_COMBINE_OUT];
  uint32_t keys = past + 1 < WINDOW ? past + 1 : WINDOW;
  uint32_t splits = (keys + SPLIT - 1) / SPLIT;
  for (uint32_t h = tid; h < NH; h += nt) {
    const float *ph = part + (size_t)h * MAX_SPLITS * (HD + 2);
    float mx = -3.0e38f;
    for (uint32_t s = 0; s < splits; s++) {
      float m = ph[s * (HD + 2) + HD];
      mx = m > mx ? m : mx;
    }
    float l = 0.0f;
    float *o = out + (size_t)h * HD;
    for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(o + d, wasm_f32x4_splat(0.0f));
    for (uint32_t s = 0; s < splits; s++) {
      const float *p = ph + s * (HD + 2);
      float wgt = exp_f32(p[HD] - mx);
      l += wgt * p[HD + 1];
      v128_t wv = wasm_f32x4_splat(wgt);
      for (uint32_t d = 0; d < HD; d += 4)
        wasm_v128_store(o + d, wasm_f32x4_add(wasm_v128_load(o + d), wasm_f32x4_mul(wv, wasm_v128_load(p + d))));
    }
    v128_t il = wasm_f32x4_splat(1.0f / l);
    for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(o + d, wasm_f32x4_mul(wasm_v128_load(o + d), il));
  }
}
