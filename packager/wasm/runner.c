/* The program runner: executes a list of dispatches that the runtime built from an
 * entry point of the plan (runtime_js/src/wasm/program.ts):
 *
 *   command := [op word, word count n, n argument words]
 *   op word := op id (OP_NOP: skipped) | CMD_NOSYNC (no barrier needed before it)
 *
 * Single-threaded modules export `run`. Threaded modules (built with -matomics, on a
 * shared memory) export `pool_init`, `pool_run` (called by thread 0) and
 * `pool_worker` (called once by each other thread; it never returns): every thread
 * runs its share of each command; once a command ran, they meet at a barrier before
 * the next command that lacks CMD_NOSYNC (skipped ones included) and at the end of
 * the program. Idle threads spin briefly, then sleep in
 * memory.atomic.wait32. */
#include "llmpack.h"

#define ENTRY(ID, FN) [ID] = FN,
static const op_fn OPS[OP_COUNT] = {LLMPACK_OPS(ENTRY)};
#undef ENTRY

/* One op on share tid of nt (tests call this directly). */
EXPORT("op_call") void op_call(uint32_t op, const uint32_t *args, uint32_t tid, uint32_t nt) {
  if (op < OP_COUNT) OPS[op](args, tid, nt);
}

#ifndef __wasm_atomics__

EXPORT("run") void run(const uint32_t *prog, uint32_t ncmds) {
  for (uint32_t i = 0; i < ncmds; i++) {
    uint32_t op = CMD_OP(prog[0]);
    if (op < OP_COUNT) OPS[op](prog + 2, 0, 1);
    prog += 2 + prog[1];
  }
}

#else

#define SPIN 20000

static uint32_t nthreads = 1;
static const uint32_t *job_prog;
static uint32_t job_n;
static volatile uint32_t job_gen;   /* bumped for each program */
static volatile uint32_t bar_count; /* threads arrived at the current barrier */
static volatile uint32_t bar_gen;   /* bumped when a barrier opens */
static volatile uint32_t sleepers;  /* threads blocked in wait32 on bar_gen or job_gen */

static uint32_t load(volatile uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

/* Waits until *p differs from `seen` (spinning first). */
static void await_change(volatile uint32_t *p, uint32_t seen) {
  for (int i = 0; i < SPIN; i++)
    if (load(p) != seen) return;
  while (load(p) == seen) {
    __atomic_fetch_add(&sleepers, 1, __ATOMIC_SEQ_CST);
    __builtin_wasm_memory_atomic_wait32((int *)p, (int)seen, 1000000000LL);
    __atomic_fetch_sub(&sleepers, 1, __ATOMIC_SEQ_CST);
  }
}

static void bump(volatile uint32_t *p) {
  __atomic_fetch_add(p, 1, __ATOMIC_SEQ_CST);
  if (load(&sleepers)) __builtin_wasm_memory_atomic_notify((int *)p, 0xFFFFFFFFu);
}

static void barrier(void) {
  uint32_t gen = load(&bar_gen);
  if (__atomic_fetch_add(&bar_count, 1, __ATOMIC_SEQ_CST) + 1 == nthreads) {
    __atomic_store_n(&bar_count, 0, __ATOMIC_SEQ_CST);
    bump(&bar_gen);
  } else {
    await_change(&bar_gen, gen);
  }
}

static void execute(const uint32_t *prog, uint32_t ncmds, uint32_t tid) {
  int ran = 0; /* an op ran since the last barrier */
  for (uint32_t i = 0; i < ncmds; i++) {
    uint32_t word = prog[0], op = CMD_OP(word);
    if (op < OP_COUNT) {
      OPS[op](prog + 2, tid, nthreads);
      ran = 1;
    }
    /* the next command needs a barrier (a skipped one keeps it due: its flag is clear) */
    if (ran && (i + 1 == ncmds || !(prog[2 + prog[1]] & CMD_NOSYNC))) {
      barrier();
      ran = 0;
    }
    prog += 2 + prog[1];
  }
  if (ran) barrier();
}

EXPORT("pool_init") void pool_init(uint32_t n) { nthreads = n; }

EXPORT("pool_run") void pool_run(const uint32_t *prog, uint32_t ncmds) {
  job_prog = prog;
  job_n = ncmds;
  bump(&job_gen);
  execute(prog, ncmds, 0);
}

/* `seen`: the job generation the caller knows of (0 before the first pool_run). */
EXPORT("pool_worker") void pool_worker(uint32_t tid, uint32_t seen) {
  for (;;) {
    await_change(&job_gen, seen);
    seen = load(&job_gen);
    execute(job_prog, job_n, tid);
  }
}

#endif
