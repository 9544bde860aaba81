/**
 * The body of a Wasm thread (a Web Worker, or a Node worker_threads worker started
 * with `eval: true`), as source text so that the runtime stays one ES module.
 *
 * init {module, memory, tid, threads, stackTop}: instantiate the threaded module on
 * the shared memory and set this thread's stack. Thread 0 (the leader) then answers
 * run {id, prog, n} with done {id} after `pool_run`; every other thread parks in
 * `pool_worker`, which never returns (the pool terminates it).
 */
export const WORKER_SOURCE = `"use strict";
const isNode = typeof self === "undefined" && typeof process === "object";
let post, listen;
if (isNode) {
  const { parentPort } = require("node:worker_threads");
  post = (m) => parentPort.postMessage(m);
  listen = (f) => parentPort.on("message", f);
} else {
  post = (m) => self.postMessage(m);
  listen = (f) => { self.onmessage = (e) => f(e.data); };
}
let ex = null;
listen((m) => {
  try {
    if (m.type === "init") {
      ex = new WebAssembly.Instance(m.module, { env: { memory: m.memory } }).exports;
      ex.__stack_pointer.value = m.stackTop;
      if (m.tid === 0) {
        ex.pool_init(m.threads);
        post({ type: "ready" });
      } else {
        post({ type: "ready" });
        ex.pool_worker(m.tid, 0);
      }
    } else if (m.type === "run") {
      ex.pool_run(m.prog, m.n);
      post({ type: "done", id: m.id });
    }
  } catch (e) {
    post({ type: "error", id: m.id, message: String((e && e.stack) || e) });
  }
});
`;
