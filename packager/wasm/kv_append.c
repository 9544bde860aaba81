/* kv_append: kc[dst + i] = k[i], vc[dst + i] = v[i] for i < n (cache rows are
 * positions: dst = past_len * NKV * HD).
 * args: uniforms [n, dst] | wg[3] | pointers [k, v, kc, vc]
 * Threads take contiguous runs of elements. */
#include "llmpack.h"

void op_kv_append(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t n = a[KV_APPEND_N], dst = a[KV_APPEND_DST];
  const float *k = (const float *)a[KV_APPEND_K], *v = (const float *)a[KV_APPEND_V];
  float *kc = (float *)a[KV_APPEND_KC], *vc = (float *)a[KV_APPEND_VC];
  uint32_t b, e;
  share_elements(n, 1024, tid, nt, &b, &e);
  if (b >= e) return;
  __builtin_memcpy(kc + dst + b, k + b, (e - b) * sizeof(float));
  __builtin_memcpy(vc + dst + b, v + b, (e - b) * sizeof(float));
}
