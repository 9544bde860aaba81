/* attention_decode: pass 1 of the split decode attention ("flash decoding"): the one
 * query row (position past_len) of head h attends to the n = min(past_len + 1, WINDOW)
 * positions lo + i (lo = past_len + 1 - n), i in [s SPLIT, min((s + 1) SPLIT, n)) of split s;
 * position j is cache row j % SLOTS (a ring buffer for a sliding-window layer); scores
 * soft-capped by SOFTCAP when it is > 0. Writes the split's unnormalized result to
 * part[h, s, :] = [acc[0..HD), m, l] (see attend.h).
 * args: consts [NH, NKV, HD, SCALE, SOFTCAP (f32 bits), WINDOW, SLOTS, SPLIT, MAX_SPLITS] |
 *       uniforms [past_len] | wg[3] | pointers [q f32[NH, HD], kc, vc, part f32[NH, MAX_SPLITS, HD + 2]]
 * Threads take (h, s) pairs round-robin. */
#include "attend.h"

void op_attention_decode(const uint32_t *a, uint32_t tid, uint32_t nt) {
  uint32_t NH = a[ATTENTION_DECODE_NH], NKV = a[ATTENTION_DECODE_NKV], HD = a[ATTENTION_DECODE_HD];
  uint32_t SPLIT = a[ATTENTION_DECODE_SPLIT], MAX_SPLITS = a[ATTENTION_DECODE_MAX_SPLITS];
  uint32_t WINDOW = a[ATTENTION_DECODE_WINDOW], SLOTS = a[ATTENTION_DECODE_SLOTS];
  uint32_t past = a[ATTENTION_DECODE_PAST_LEN];
  float scale = f32_bits(a[ATTENTION_DECODE_SCALE]), cap = f32_bits(a[ATTENTION_DECODE_SOFTCAP]);
  const float *q = (const float *)a[ATTENTION_DECODE_Q], *kc = (const float *)a[ATTENTION_DECODE_KC];
  const float *vc = (const float *)a[ATTENTION_DECODE_VC];
  float *part = (float *)a[ATTENTION_DECODE_PART];
  uint32_t group = NH / NKV, stride = NKV * HD;
  uint32_t n = past + 1 < WINDOW ? past + 1 : WINDOW, lo = past + 1 - n;
  uint32_t splits = (n + SPLIT - 1) / SPLIT;
  float qs[HD] __attribute__((aligned(16)));
  float tmp[HD] __attribute__((aligned(16)));
  for (uint32_t i = tid; i < NH * splits; i += nt) {
    uint32_t h = i / splits, s = i % splits, kvh = h / group;
    uint32_t j0 = s * SPLIT, j1 = j0 + SPLIT < n ? j0 + SPLIT : n;
    float *p = part + ((size_t)h * MAX_SPLITS + s) * (HD + 2);
    scaled(q + (size_t)h * HD, scale, HD, qs);
    attend_ring(qs, kc + kvh * HD, vc + kvh * HD, stride, HD, lo + j0, lo + j1, SLOTS, cap, p, tmp, &p[HD],
                &p[HD + 1]);
  }
}
