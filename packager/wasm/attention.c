/* attention: causal grouped-query attention of the chunk's queries over the KV cache:
 * query row t (position pos = past_len + t) of head h attends to the positions
 * [max(0, pos + 1 - WINDOW), pos] of kv head h / (NH / NKV); position j is cache row
 * j % SLOTS (a ring buffer for a sliding-window layer; a full cache has WINDOW = SLOTS =
 * the context window):
 *   out[t, h, :] = softmax_j(cap(SCALE q[t, h, :] . kc[j, kvh, :])) @ vc[j, kvh, :]
 * cap: soft-capping by SOFTCAP when it is > 0 (attend.h).
 * args: consts [NH, NKV, HD, SCALE, SOFTCAP (f32 bits), WINDOW, SLOTS] | uniforms [seq_len, past_len] |
 *       wg[3] | pointers [q f32[seq, NH, HD], kc f32[SLOTS, NKV, HD], vc, out f32[seq, NH, HD]]
 * Threads take (t, h) pairs round-robin (later rows attend to more keys). */
#include "attend.h"

void op_attention(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t NH = a[ATTENTION_NH], NKV = a[ATTENTION_NKV], HD = a[ATTENTION_HD];
  uint32_t WINDOW = a[ATTENTION_WINDOW], SLOTS = a[ATTENTION_SLOTS];
  uint32_t seq = a[ATTENTION_SEQ_LEN], past = a[ATTENTION_PAST_LEN];
  float scale = f32_bits(a[ATTENTION_SCALE]), cap = f32_bits(a[ATTENTION_SOFTCAP]);
  const float *q = (const float *)a[ATTENTION_Q], *kc = (const float *)a[ATTENTION_KC];
  const float *vc = (const float *)a[ATTENTION_VC];
  float *out = (float *)a[ATTENTION_OUT];
  uint32_t group = NH / NKV, stride = NKV * HD;
  float qs[HD] __attribute__((aligned(16)));
  float acc[HD] __attribute__((aligned(16)));
  float tmp[HD] __attribute__((aligned(16)));
  for (uint32_t i = tid; i < seq * NH; i += nt) {
    uint32_t t = i / NH, h = i % NH, kvh = h / group;
    uint32_t end = past + t + 1, lo = end > WINDOW ? end - WINDOW : 0;
    float m, l;
    scaled(q + (size_t)i * HD, scale, HD, qs);
    attend_ring(qs, kc + kvh * HD, vc + kvh * HD, stride, HD, lo, end, SLOTS, cap, acc, tmp, &m, &l);
    v128_t il = wasm_f32x4_splat(1.0f / l);
    float *o = out + (size_t)i * HD;
    for (uint32_t d = 0; d < HD; d += 4) wasm_v128_store(o + d, wasm_f32x4_mul(wasm_v128_load(acc + d), il));
  }
}
