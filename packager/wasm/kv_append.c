/* kv_append: kc[(dst + i) % CACHE] = k[i], vc[(dst + i) % CACHE] = v[i] for i < n (cache
 * rows are positions modulo the cache's rows: dst = (past_len % rows) * NKV * HD, CACHE =
 * rows * NKV * HD elements; a sliding-window layer's ring buffer wraps, a full cache never does).
 * args: consts [CACHE] | uniforms [n, dst] | wg[3] | pointers [k, v, kc, vc]
 * Threads take contiguous runs of elements. */
#include "llmpack.h"

static void put(float *c, uint32_t cache, uint32_t at, const float *x, uint32_t n) {
  at %= cache;
  uint32_t first = n < cache - at ? n : cache - at;
  __builtin_memcpy(c + at, x, first * sizeof(float));
  if (first < n) __builtin_memcpy(c, x + first, (n - first) * sizeof(float));
}

void op_kv_append(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t n = a[KV_APPEND_N], dst = a[KV_APPEND_DST], cache = a[KV_APPEND_CACHE];
  const float *k = (const float *)a[KV_APPEND_K], *v = (const float *)a[KV_APPEND_V];
  float *kc = (float *)a[KV_APPEND_KC], *vc = (float *)a[KV_APPEND_VC];
  uint32_t b, e;
  share_elements(n, 1024, tid, nt, &b, &e);
  if (b >= e) return;
  put(kc, cache, dst + b, k + b, e - b);
  put(vc, cache, dst + b, v + b, e - b);
}
