/**
 * Running a program: on the calling thread (the single-threaded module), or on a
 * pool of N workers sharing one WebAssembly.Memory (the threaded module; needs
 * SharedArrayBuffer, i.e. a cross-origin isolated page in browsers, and works in Node
 * with worker_threads). In the pool, worker 0 leads: the caller posts it each program
 * and it answers when all N threads are through; the others wait inside Wasm between
 * programs and at a barrier after every dispatch (packager/wasm/runner.c). The
 * calling thread never blocks, so a page stays responsive.
 */
import { WORKER_SOURCE } from "./worker_source.js";

export interface Runner {
  readonly threads: number;
  run(prog: number, dispatches: number): void | Promise<void>;
  close(): void;
}

/** The single-threaded module on the calling thread. */
export class InlineRunner implements Runner {
  readonly threads = 1;
  private readonly exec: (prog: number, n: number) => void;

  private constructor(instance: WebAssembly.Instance, stackTop: number) {
    const ex = instance.exports as Record<string, any>;
    ex.__stack_pointer.value = stackTop;
    this.exec = ex.run;
  }

  static async start(module: WebAssembly.Module, memory: WebAssembly.Memory, stackTop: number): Promise<InlineRunner> {
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    return new InlineRunner(instance, stackTop);
  }

  run(prog: number, dispatches: number): void {
    this.exec(prog, dispatches);
  }

  close(): void {}
}

interface Thread {
  post(msg: unknown): void;
  terminate(): void;
  ref(): void;
  unref(): void;
}

type Listener = (msg: any) => void;

const isNode = typeof process !== "undefined" && !!process.versions?.node && typeof (globalThis as any).window === "undefined";

async function spawn(onMessage: Listener, onError: (e: Error) => void): Promise<Thread> {
  if (isNode) {
    const { Worker } = await import("node:worker_threads");
    const w = new Worker(WORKER_SOURCE, { eval: true });
    w.on("message", onMessage);
    w.on("error", onError);
    w.on("exit", (code) => code && onError(new Error(`a Wasm worker exited with code ${code}`)));
    return { post: (m) => w.postMessage(m), terminate: () => void w.terminate(), ref: () => w.ref(), unref: () => w.unref() };
  }
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
  const w = new Worker(url, { name: "llmpack-wasm" });
  URL.revokeObjectURL(url);
  w.onmessage = (e) => onMessage(e.data);
  w.onerror = (e) => {
    e.preventDefault();
    onError(new Error(`a Wasm worker failed: ${e.message}`));
  };
  return { post: (m) => w.postMessage(m), terminate: () => w.terminate(), ref: () => {}, unref: () => {} };
}

/** Whether this environment can run the threaded module. */
export function threadsAvailable(): boolean {
  if (typeof SharedArrayBuffer === "undefined" || typeof Atomics === "undefined") return false;
  if (isNode) return true;
  return (globalThis as any).crossOriginIsolated === true && typeof Worker !== "undefined";
}

/** Logical CPUs (navigator.hardwareConcurrency, os.availableParallelism in Node). */
export async function cpuCount(): Promise<number> {
  if (isNode) {
    const os = await import("node:os");
    return os.availableParallelism?.() ?? os.cpus().length;
  }
  return (globalThis as any).navigator?.hardwareConcurrency ?? 1;
}

/** N workers on one shared memory; run() resolves when all N finished the program. */
export class WorkerPool implements Runner {
  private readonly workers: Thread[] = [];
  private pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private broken: Error | null = null;

  private constructor(readonly threads: number) {}

  static async start(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    threads: number,
    stackTop: (tid: number) => number,
  ): Promise<WorkerPool> {
    const pool = new WorkerPool(threads);
    try {
      // the leader first: its instantiation initializes the module's data in memory
      for (let tid = 0; tid < threads; tid++) await pool.add(module, memory, tid, stackTop(tid));
    } catch (e) {
      pool.close();
      throw e;
    }
    return pool;
  }

  private async add(module: WebAssembly.Module, memory: WebAssembly.Memory, tid: number, stackTop: number): Promise<void> {
    let ready!: () => void;
    let failed!: (e: Error) => void;
    const started = new Promise<void>((res, rej) => {
      ready = res;
      failed = rej;
    });
    const fail = (e: Error) => {
      failed(e);
      this.fail(e);
    };
    const w = await spawn((m) => {
      if (m.type === "ready") ready();
      else if (m.type === "done") this.settle(m.id, null);
      else if (m.type === "error") {
        const e = new Error(`Wasm thread ${tid}: ${m.message}`);
        if (m.id) this.settle(m.id, e);
        fail(e);
      }
    }, fail);
    this.workers.push(w);
    w.post({ type: "init", module, memory, tid, threads: this.threads, stackTop });
    await started;
    w.unref();
  }

  private settle(id: number, err: Error | null): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (!this.pending.size) this.workers[0]?.unref();
    if (err) p.reject(err);
    else p.resolve();
  }

  private fail(e: Error): void {
    if (!this.broken) this.broken = e;
    for (const id of [...this.pending.keys()]) this.settle(id, e);
  }

  run(prog: number, dispatches: number): Promise<void> {
    if (this.broken) return Promise.reject(new Error(`the Wasm thread pool is broken: ${this.broken.message}`));
    const leader = this.workers[0];
    if (!leader) return Promise.reject(new Error("the Wasm thread pool has no threads"));
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      leader.ref();
      leader.post({ type: "run", id, prog, n: dispatches });
    });
  }

  close(): void {
    this.fail(new Error("the Wasm backend was unloaded"));
    for (const w of this.workers) w.terminate();
    this.workers.length = 0;
  }
}
