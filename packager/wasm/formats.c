/* Weight format table. A bundle's module is built with only the formats its tensors
 * use: packager/wasm_build.py passes -DLLMPACK_FORMATS=<bit mask of format ids> and
 * compiles only those fmt_*.c files (no mask: all of them). */
#include "llmpack.h"

#ifndef LLMPACK_FORMATS
#define LLMPACK_FORMATS ((1u << FMT_COUNT) - 1u)
#endif
#define HAS(id) ((LLMPACK_FORMATS >> (id)) & 1u)

const wformat *weight_format(uint32_t id) {
  switch (id) {
#if HAS(FMT_F32)
    case FMT_F32: return &FORMAT_F32;
#endif
#if HAS(FMT_F16)
    case FMT_F16: return &FORMAT_F16;
#endif
#if HAS(FMT_Q8F16)
    case FMT_Q8F16: return &FORMAT_Q8F16;
#endif
#if HAS(FMT_Q4F16)
    case FMT_Q4F16: return &FORMAT_Q4F16;
#endif
#if HAS(FMT_Q4F32)
    case FMT_Q4F32: return &FORMAT_Q4F32;
#endif
#if HAS(FMT_Q3F16)
    case FMT_Q3F16: return &FORMAT_Q3F16;
#endif
#if HAS(FMT_Q2F16)
    case FMT_Q2F16: return &FORMAT_Q2F16;
#endif
    default: return 0;
  }
}
