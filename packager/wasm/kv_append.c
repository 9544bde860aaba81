/* kv_append: kc[dst + i] = k[i], vc[dst + i] = v[i] for i < n (cache rows are
 * positions: dst = past_len * NKV * HD).
 * args: uniforms [n, dst] | wg[3] | pointers [k, v, kc, vc]
 * Threads take contiguous runs of elements. */
#include "llmpack.h"

void op_kv_append(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t n = a[0], dst = a[1];
  const float *k = (const float *)a[5], *v = (const float *)a[6];
  float *kc = (float *)a[7], *vc = (float *)a[8];
  uint32_t b, e;
  share_elements(n, 1024, tid, nt, &b, &e);
  if (b >= e) return;
  __builtin_memcpy(kc + dst + b, k + b, (e - b) * sizeof(float));
  __builtin_memcpy(vc + dst + b, v + b, (e - b) * sizeof(float));
}
