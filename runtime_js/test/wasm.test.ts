/**
 * The Wasm backend (src/wasm/).
 *
 * Always: the command list built from a plan (program.ts), the 4 GiB wasm32 ceiling
 * (refused before any shard is fetched, with the bundle's numbers), thread choice.
 *
 * With $LLMPACK_WASM_CASE (a case.json written by tests/test_wasm_backend.py: a
 * SmolLM2 q4f32 bundle with Wasm kernels, prompt ids and the numpy reference's greedy
 * tokens): greedy tokens on the Wasm backend equal the reference's, in Node with 1 and
 * 2 threads (worker_threads), and in headless Chromium on a cross-origin isolated page
 * (2 worker threads on a SharedArrayBuffer) and on a plain page (1 thread); "auto"
 * picks Wasm where WebGPU is unavailable.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BackendUnsupportedError } from "../src/backend.js";
import { createEngine } from "../src/engine.js";
import { BundleLoader } from "../src/loader.js";
import type { Manifest } from "../src/manifest.js";
import type { Plan } from "../src/plan.js";
import { WasmBackend } from "../src/wasm/index.js"; // (registers "wasm")
import { ceilingProblem, MAX_PAGES, planLayout } from "../src/wasm/layout.js";
import { CMD_NOSYNC, independentOfPrevious, OP_NOP, WasmProgram } from "../src/wasm/program.js";
import { WASM_TABLE_FILE, type WasmTable } from "../src/wasm/table.js";
import { tmpDir } from "./fixtures.js";
import { requireComponent, runtimeDir } from "./helpers.js";
import { serveStatic, type StaticServer } from "./wasm-server.js";

// ---------------------------------------------------------------------------------------
// a small synthetic plan

function smallPlan(weightBytes = 1024): { plan: Plan; table: WasmTable; manifest: Manifest } {
  const plan = {
    format: "llmpack-plan", version: 1, architecture: "llama", context_window: 4096, prefill_chunk: 8,
    dims: ["seq_len", "past_len"], variant_order: ["f32"],
    variants: { f32: { features: [], limits: {}, memory: { weights_bytes: weightBytes, kv_cache_bytes: 0, activation_bytes: 0 } } },
    inputs: { tokens: "tokens" }, outputs: { logits: "logits" },
    kernels: {
      "matmul.q4f32.k64.n10": { template: "matmul", files: {}, bindings: [{ binding: 0, type: "uniform" }, { binding: 1, type: "read-only-storage" }, { binding: 2, type: "storage" }, { binding: 8, type: "read-only-storage" }], uniforms: ["seq_len", "row0", "rows"], workgroup_size: [8, 8, 1], workgroup_storage_bytes: 0 },
      add: { template: "add", files: {}, bindings: [{ binding: 0, type: "uniform" }, { binding: 1, type: "storage" }, { binding: 2, type: "read-only-storage" }], uniforms: ["n"], workgroup_size: [256, 1, 1], workgroup_storage_bytes: 0 },
    },
    buffers: {
      tokens: { kind: "input", dtype: "u32", elements: 8 },
      x: { kind: "activation", dtype: "f32", elements: 8 * 64 },
      logits: { kind: "output", dtype: "f32", elements: 10 },
      "w:weight": { kind: "weight", tensor: "w", part: "weight", offset: 0, bytes: weightBytes },
    },
    entries: {
      prefill: {
        max_seq_len: 8,
        dispatches: [
          { kernel: "matmul.q4f32.k64.n10", bindings: [[8, "w:weight"], [2, "logits"], [1, "x"]], uniforms: ["seq_len", "0", "10"], workgroups: ["1", "cdiv(seq_len, 32)", "1"] },
          { kernel: "add", bindings: [[1, "x"], [2, "x"]], uniforms: ["past_len"], workgroups: ["past_len", "1", "1"] },
        ],
      },
      decode: { max_seq_len: 1, dispatches: [{ kernel: "add", bindings: [[1, "x"], [2, "x"]], uniforms: ["1"], workgroups: ["1", "1", "1"] }] },
    },
  } as unknown as Plan;
  const table: WasmTable = {
    format: "llmpack-wasm", version: 1, ops: ["embedding", "rmsnorm", "matmul", "rope", "kv_append", "attention", "attention_decode", "attention_combine", "silu_mul", "add"],
    formats: ["q4f32"], stack_bytes: 65536,
    kernels: { "matmul.q4f32.k64.n10": { op: 2, consts: [4, 64, 10] }, add: { op: 9, consts: [] } },
    modules: { single: { file: "kernels/llmpack.wasm", heap_base: 70000, bytes: 1, sha256: "" } },
  };
  const manifest = {
    format: "llmpack-bundle", version: 1, model: { config: { vocab_size: 10 } },
    tensors: [{ name: "w", shape: [10, 64], format: "q4f32", shard: 0, offset: 0, bytes: weightBytes, parts: [{ name: "weight", dtype: "u32", shape: [1], offset: 0, bytes: weightBytes }] }],
    shards: [{ file: "shards/x.bin", bytes: weightBytes, sha256: "" }],
    files: [{ path: "plan.json", bytes: 1, sha256: "" }, { path: WASM_TABLE_FILE, bytes: 1, sha256: "" }],
    memory: { context_window: 4096 },
  } as unknown as Manifest;
  return { plan, table, manifest };
}

describe("Wasm backend: plan to commands", () => {
  test("each dispatch is [op, n, consts, uniforms, workgroups, pointers in binding order]", () => {
    const { plan, table, manifest } = smallPlan();
    const layout = planLayout(manifest, plan, table, table.modules.single.heap_base, 2);
    assert.equal(layout.stacks % 64, 0);
    assert.ok(layout.stacks >= 70000);
    const mem = new Uint32Array(layout.pages * 16384);
    const prog = new WasmProgram("prefill", plan, table, layout, mem);
    prog.prepare(5, 0, mem);
    const w = prog.addr / 4;
    const ptr = (b: string) => layout.buffers.get(b)!;
    const first = [2, 3 + 3 + 3 + 3, 4, 64, 10, 5, 0, 10, 1, 1, 1, ptr("x"), ptr("logits"), ptr("w:weight")];
    assert.deepEqual([...mem.subarray(w, w + first.length)], first);
    const second = w + first.length;
    // zero workgroups (past_len = 0): a no-op
    assert.deepEqual([...mem.subarray(second, second + 8)], [OP_NOP, 6, 0, 0, 1, 1, ptr("x"), ptr("x")]);
    prog.prepare(5, 3, mem);
    assert.deepEqual([...mem.subarray(second, second + 8)], [9, 6, 3, 3, 1, 1, ptr("x"), ptr("x")]);
    // weights: the part's address (a row block would add its offset)
    assert.equal(ptr("w:weight"), layout.parts[0]?.[0]);
  });

  test("barriers only where a dispatch depends on one since the last barrier (sync_flags modules)", () => {
    const { plan, table, manifest } = smallPlan();
    const mm = "matmul.q4f32.k64.n10";
    const d = (kernel: string, bindings: [number, string][]) => ({ kernel, bindings, uniforms: ["seq_len", "0", "10"], workgroups: ["1", "1", "1"] as [string, string, string] });
    for (const b of ["q", "k", "v"]) (plan.buffers as Record<string, unknown>)[b] = { kind: "activation", dtype: "f32", elements: 64 };
    const dispatches = [
      d(mm, [[1, "x"], [2, "q"], [8, "w:weight"]]),
      d(mm, [[1, "x"], [2, "k"], [8, "w:weight"]]), // reads what the first read: free
      d(mm, [[1, "x"], [2, "v"], [8, "w:weight"]]), // free
      d("add", [[1, "q"], [2, "k"]]), // reads q, k (written since the barrier)
      d("add", [[1, "v"], [2, "x"]]), // writes v, read by nothing since the last barrier; v was written before it: free
      d(mm, [[1, "q"], [2, "x"], [8, "w:weight"]]), // reads q, which the add (since the barrier) wrote
      d(mm, [[1, "v"], [2, "k"], [8, "w:weight"]]), // writes k, which the add read before the last barrier: free
      d("add", [[1, "x"], [2, "v"]]), // writes x, which the matmul just wrote
    ];
    assert.deepEqual(independentOfPrevious(plan, dispatches), [true, true, true, false, true, false, true, false]);
    // in the op words, only when the module reads the flag
    plan.entries.decode.dispatches = dispatches as typeof plan.entries.decode.dispatches;
    const words = (t: WasmTable) => {
      const layout = planLayout(manifest, plan, t, t.modules.single.heap_base, 2);
      const mem = new Uint32Array(layout.pages * 16384);
      const prog = new WasmProgram("decode", plan, t, layout, mem);
      prog.prepare(1, 0, mem);
      const ops: number[] = [];
      for (let w = prog.addr / 4, i = 0; i < prog.dispatches; i++, w += 2 + mem[w + 1]!) ops.push(mem[w]!);
      return ops;
    };
    assert.deepEqual(words(table), [2, 2, 2, 9, 9, 2, 2, 9]);
    const F = CMD_NOSYNC;
    assert.deepEqual(words({ ...table, sync_flags: true }), [2 + F, 2 + F, 2 + F, 9, 9 + F, 2, 2 + F, 9]);
  });

  test("a bundle above 4 GiB is refused before any weight is fetched, with its numbers", async () => {
    const { plan, table, manifest } = smallPlan(5 * 2 ** 30);
    const layout = planLayout(manifest, plan, table, table.modules.single.heap_base, 1);
    assert.ok(layout.pages > MAX_PAGES);
    const msg = ceilingProblem(layout, plan.context_window)!;
    assert.match(msg, /needs 5\.00 GiB of Wasm memory \(weights 5\.00 GiB \+ KV cache 0\.00 GiB for 4096 tokens/);
    assert.match(msg, /4 GiB that a wasm32 module can address; use the WebGPU backend/);
    let fetchedShards = false;
    const loader = {
      fetchJson: async (p: string) => (p === "plan.json" ? plan : table),
      fetchFile: async () => new Uint8Array(),
      loadShards: async () => {
        fetchedShards = true;
        throw new Error("must not load");
      },
    } as unknown as BundleLoader;
    const b = new WasmBackend({ threads: 1 });
    await assert.rejects(b.load(manifest, loader), (e: Error) => e instanceof BackendUnsupportedError && /over the 4 GiB/.test(e.message));
    assert.equal(fetchedShards, false);
    const fits = smallPlan(3 * 2 ** 30);
    assert.equal(ceilingProblem(planLayout(fits.manifest, fits.plan, fits.table, 70000, 4), 4096), null);
  });

  test("a bundle without Wasm kernels is unsupported (auto moves on)", async () => {
    const { manifest } = smallPlan();
    const bare = { ...manifest, files: [] } as unknown as Manifest;
    await assert.rejects(new WasmBackend().load(bare, {} as BundleLoader), (e: Error) => e instanceof BackendUnsupportedError && /no Wasm kernels/.test(e.message));
  });

  test("threads: 1 when asked, else min(CPUs, 4) in Node", async () => {
    assert.deepEqual(await new WasmBackend({ threads: 1 }).chooseThreads(), { threads: 1, reason: "one thread was asked for" });
    const auto = await new WasmBackend().chooseThreads();
    assert.ok(auto.threads >= 1 && auto.threads <= 4);
    assert.equal((await new WasmBackend({ threads: 3 }).chooseThreads()).threads, 3);
    await assert.rejects(new WasmBackend({ threads: 0 }).chooseThreads(), RangeError);
  });
});

// ---------------------------------------------------------------------------------------
// SmolLM2 q4f32, against the numpy reference (case from tests/test_wasm_backend.py)

interface Case {
  bundle: string;
  prompt: string;
  prompt_ids: number[];
  new_tokens: number;
  expected: number[];
}

const CASE = process.env.LLMPACK_WASM_CASE;
const skipCase = CASE && existsSync(CASE) ? false : "needs $LLMPACK_WASM_CASE (run by tests/test_wasm_backend.py)";
const loadCase = (): Case => JSON.parse(readFileSync(CASE!, "utf8"));

function argmax(l: Float32Array): number {
  let k = 0;
  let top = -Infinity;
  l.forEach((v, i) => {
    if (v > top) [k, top] = [i, v];
  });
  return k;
}

async function greedy(b: WasmBackend, ids: number[], n: number): Promise<number[]> {
  let logits = await b.prefill(Int32Array.from(ids), 0);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const token = argmax(logits);
    out.push(token);
    logits = await b.decode(token, ids.length + i);
  }
  return out;
}

describe("Wasm backend: SmolLM2 q4f32 greedy tokens in Node", { skip: skipCase }, () => {
  for (const threads of [1, 2]) {
    test(`${threads} thread${threads > 1 ? "s" : ""} equal the reference`, async () => {
      const c = loadCase();
      const loader = await BundleLoader.open(c.bundle, { cache: null });
      const b = new WasmBackend({ threads });
      await b.load(loader.manifest, loader);
      try {
        assert.equal(b.threads, threads);
        assert.deepEqual(await greedy(b, c.prompt_ids, c.new_tokens), c.expected);
        // a second prompt after a reset (the cache is overwritten, not cleared)
        b.reset();
        assert.deepEqual(await greedy(b, c.prompt_ids, 4), c.expected.slice(0, 4));
      } finally {
        b.unload();
      }
    });
  }

  test("createEngine with backend 'wasm' answers greedily", async () => {
    const c = loadCase();
    const engine = await createEngine(c.bundle, { backend: "wasm", cache: null });
    try {
      assert.equal(engine.backend.name, "wasm");
      assert.deepEqual(engine.tokenizer.encode(c.prompt), c.prompt_ids);
      const text = await engine.generate(c.prompt, { max_tokens: 6, temperature: 0 });
      assert.equal(text, engine.tokenizer.decode(c.expected.slice(0, 6)));
    } finally {
      await engine.unload();
    }
  });
});

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// the case file is written by tests/test_wasm_backend.py, which runs this file; npm test skips it
const skipBrowser = skipCase || requireComponent("chromium", !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}`);

const PAGE_LIB = `
const argmax = (l) => { let k = 0; for (let i = 1; i < l.length; i++) if (l[i] > l[k]) k = i; return k; };
export async function greedy(ids, n, threads) {
  const { BundleLoader, WasmBackend } = await import("/dist/llmpack.js");
  const loader = await BundleLoader.open(new URL("/bundle/", location.href).href, { cache: null });
  const b = new WasmBackend({ threads });
  await b.load(loader.manifest, loader);
  try {
    let logits = await b.prefill(Int32Array.from(ids), 0);
    const out = [];
    for (let i = 0; i < n; i++) { out.push(argmax(logits)); logits = await b.decode(out[i], ids.length + i); }
    return { tokens: out, threads: b.threads, reason: b.singleThreadReason, isolated: self.crossOriginIsolated };
  } finally { b.unload(); }
}
export async function auto() {
  const { createEngine } = await import("/dist/llmpack.js");
  const engine = await createEngine(new URL("/bundle/", location.href).href, { cache: null });
  const name = engine.backend.name, label = engine.backend.label;
  await engine.unload();
  return { name, label };
}
`;

describe("Wasm backend: SmolLM2 q4f32 greedy tokens in Chromium", { skip: skipBrowser }, () => {
  let root: string;
  const servers: StaticServer[] = [];
  let browser: import("playwright-core").Browser;

  before(async () => {
    const c = loadCase();
    root = tmpDir("llmpack-wasm-web-");
    symlinkSync(c.bundle, path.join(root, "bundle"));
    symlinkSync(path.join(runtimeDir(), "dist"), path.join(root, "dist"));
    mkdirSync(path.join(root, "t"));
    writeFileSync(path.join(root, "t", "lib.js"), PAGE_LIB);
    writeFileSync(path.join(root, "index.html"), "<!doctype html><title>llmpack wasm test</title>");
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
    });
  });

  after(async () => {
    await browser?.close();
    for (const s of servers) await s.close();
  });

  async function openPage(isolated: boolean) {
    const server = await serveStatic(root, isolated);
    servers.push(server);
    const page = await (await browser.newContext()).newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${server.url}index.html`);
    return { page, errors };
  }

  test("cross-origin isolated page: 2 worker threads on shared memory", async () => {
    const c = loadCase();
    const { page } = await openPage(true);
    const r = await page.evaluate(([lib, ids, n]) => import(lib as string).then((m) => m.greedy(ids, n, 2)), ["/t/lib.js", c.prompt_ids, c.new_tokens] as const);
    assert.equal(r.isolated, true);
    assert.equal(r.threads, 2);
    assert.deepEqual(r.tokens, c.expected);
  });

  test("plain page: one thread, with the reason", async () => {
    const c = loadCase();
    const { page } = await openPage(false);
    const r = await page.evaluate(([lib, ids]) => import(lib as string).then((m) => m.greedy(ids, 8, "auto")), ["/t/lib.js", c.prompt_ids] as const);
    assert.equal(r.isolated, false);
    assert.equal(r.threads, 1);
    assert.match(r.reason, /cross-origin isolated/);
    assert.deepEqual(r.tokens, c.expected.slice(0, 8));
  });

  test("backend 'auto' takes Wasm where WebGPU is unavailable", async () => {
    const { page } = await openPage(true);
    const r = await page.evaluate((lib) => import(lib).then((m) => m.auto()), "/t/lib.js");
    assert.equal(r.name, "wasm");
    assert.match(r.label, /^Wasm SIMD, \d+ threads?$/);
  });
});
