/* embedding: y[t, :] = E[tokens[t] - row0, :] * SCALE for the tokens of this row block
 * (SCALE: Gemma's sqrt(hidden_size), 1 elsewhere).
 * args: consts [format, K, SCALE (f32 bits)] | uniforms [seq_len, row0, rows] | wg[3] |
 *       pointers [tokens u32, y f32[seq, K], weight parts ...]
 * Tokens outside [row0, row0 + rows) are left alone (another block writes them).
 * Threads take contiguous runs of tokens. */
#include "llmpack.h"

void op_embedding(const uint32_t *a, uint32_t tid, uint32_t nt) {
  const wformat *f = weight_format(a[EMBEDDING_FORMAT]);
  uint32_t K = a[EMBEDDING_K], seq = a[EMBEDDING_SEQ_LEN], row0 = a[EMBEDDING_ROW0], rows = a[EMBEDDING_ROWS];
  const uint32_t *tokens = (const uint32_t *)a[EMBEDDING_TOKENS];
  float *y = (float *)a[EMBEDDING_Y];
  float scale = f32_bits(a[EMBEDDING_SCALE]);
  wmat w = weight_parts(a, EMBEDDING_WEIGHTS, K);
  uint32_t b, e;
  share(seq, 1, tid, nt, &b, &e);
  for (uint32_t t = b; t < e; t++) {
    uint32_t tok = tokens[t];
    if (tok < row0 || tok - row0 >= rows) continue;
    float *yr = y + (size_t)t * K;
    f->row(&w, tok - row0, yr);
    if (scale != 1.0f)
      for (uint32_t i = 0; i < K; i++) yr[i] *= scale;
  }
}
