/* Weight format table. A bundle's module is built with only the formats its tensors
 * use: packager/wasm_build.py compiles only those fmt_*.c files and lists them in
 * kernel_table.h (LLMPACK_WEIGHT_FORMATS). */
#include "llmpack.h"

const wformat *weight_format(uint32_t id) {
  switch (id) {
#define CASE(ID, F) \
  case ID:          \
    return &F;
    LLMPACK_WEIGHT_FORMATS(CASE)
#undef CASE
    default: return 0;
  }
}
