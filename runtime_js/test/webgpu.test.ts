/**
 * The WebGPU backend on a synthetic plan (test/plan-fixture.ts): device selection
 * against a scripted adapter, then, on Dawn (SwiftShader where there is no GPU), the
 * executor, chunked prefill, limits, automatic fallback, verified-before-use weights,
 * the cached reload, and optional entries whose kernels compile at their first call.
 */
import "./gpu-env.js";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { BackendUnsupportedError, SoftwareDeviceError, registerBackend } from "../src/backend.js";
import { createEngine } from "../src/engine.js";
import { BundleLoader, ShardError } from "../src/loader.js";
import { parsePlan, weightBlocks } from "../src/plan.js";
import { openDevice } from "../src/webgpu/device.js";
import { PlanExecutor } from "../src/webgpu/executor.js";
import { WebGpuBackend } from "../src/webgpu/index.js"; // (registers "webgpu")
import { KernelCompileError, KernelSet } from "../src/webgpu/kernels.js";
import { StagingSink } from "../src/webgpu/weights.js";
import { FakeBackend, spell } from "./fake-backend.js";
import { type TestServer, serve, tmpDir } from "./fixtures.js";
import { gpuSkip } from "./gpu-env.js";
import { CHUNK, VOCAB, WINDOW, type PlanBundle, expectedLogits, makePlanBundle } from "./plan-fixture.js";

const skip = await gpuSkip();

/** A GPU whose one adapter has `features` and `limits`; requestDevice calls are recorded. */
function scriptedGpu(
  features: string[],
  limits: Record<string, number>,
  calls: GPUDeviceDescriptor[] = [],
  info: Record<string, unknown> = { vendor: "test", architecture: "", device: "", description: "Scripted GPU" },
): GPU {
  const adapter = {
    features: new Set(features),
    limits,
    info,
    requestDevice: async (desc: GPUDeviceDescriptor) => {
      calls.push(desc);
      return { limits: { ...limits }, destroy() {}, lost: new Promise(() => {}) };
    },
  };
  return { requestAdapter: async () => adapter } as unknown as GPU;
}

const BIG = { maxStorageBufferBindingSize: 1 << 30, maxBufferSize: 1 << 30, maxComputeWorkgroupsPerDimension: 65535 };

describe("device setup", () => {
  const plan = parsePlan({
    ...makePlanBundle().plan,
    variant_order: ["f16", "f32"],
    variants: {
      f16: { features: ["shader-f16"], limits: { maxStorageBufferBindingSize: 1000, maxBufferSize: 2000 }, memory: {} },
      f32: { features: [], limits: { maxStorageBufferBindingSize: 3000, maxBufferSize: 4000 }, memory: {} },
    },
  });

  test("f16 when the adapter has shader-f16, with exactly the variant's features and limits", async () => {
    const calls: GPUDeviceDescriptor[] = [];
    const d = await openDevice(plan, { gpu: scriptedGpu(["shader-f16"], BIG, calls) });
    assert.equal(d.variant, "f16");
    assert.deepEqual(calls[0]?.requiredFeatures, ["shader-f16"]);
    assert.deepEqual(calls[0]?.requiredLimits, { maxStorageBufferBindingSize: 1000, maxBufferSize: 2000 });
  });

  test("f32 without shader-f16; extra limits only raise", async () => {
    const calls: GPUDeviceDescriptor[] = [];
    const d = await openDevice(plan, { gpu: scriptedGpu([], BIG, calls) }, { maxBufferSize: 10_000, maxStorageBufferBindingSize: 5 });
    assert.equal(d.variant, "f32");
    assert.deepEqual(calls[0]?.requiredFeatures, []);
    assert.deepEqual(calls[0]?.requiredLimits, { maxStorageBufferBindingSize: 3000, maxBufferSize: 10_000 });
  });

  test("a device below the bundle's limits is refused, naming values", async () => {
    const small = { maxStorageBufferBindingSize: 2000, maxBufferSize: 4000 };
    await assert.rejects(openDevice(plan, { gpu: scriptedGpu([], small) }), (e: Error) => {
      assert.ok(e instanceof BackendUnsupportedError);
      assert.match(e.message, /this GPU \(Scripted GPU\) cannot run the bundle/);
      assert.match(e.message, /f16 kernels: feature "shader-f16" is missing/);
      assert.match(e.message, /f32 kernels: maxStorageBufferBindingSize is 2000 on this device, the bundle needs 3000/);
      return true;
    });
    await assert.rejects(openDevice(plan, { gpu: scriptedGpu(["shader-f16"], BIG), variant: "f64" }), /has no f64 kernels/);
    await assert.rejects(openDevice(plan, { gpu: { requestAdapter: async () => null } as unknown as GPU }), /no WebGPU adapter/);
  });

  test("software adapters: what they say (isFallbackAdapter) or a known name; refused when asked", async () => {
    const infos: [Record<string, unknown>, boolean][] = [
      [{ vendor: "nvidia", architecture: "ada", description: "NVIDIA RTX" }, false],
      [{ vendor: "x", architecture: "", description: "", isFallbackAdapter: true }, true],
      [{ vendor: "google", architecture: "swiftshader", device: "", description: "" }, true], // Chromium
      [{ vendor: "", architecture: "", device: "", description: "SwiftShader driver 5.0.0" }, true], // (Dawn in Node, less the flag)
      [{ vendor: "mesa", architecture: "", device: "", description: "llvmpipe (LLVM 15.0.6, 256 bits)" }, true], // wgpu (Deno)
    ];
    for (const [info, software] of infos) {
      const d = await openDevice(plan, { gpu: scriptedGpu([], BIG, [], info) });
      assert.equal(d.info.isFallbackAdapter, software, JSON.stringify(info));
      const refused = openDevice(plan, { gpu: scriptedGpu([], BIG, [], info), refuseSoftware: true });
      if (software) await assert.rejects(refused, (e: Error) => e instanceof SoftwareDeviceError && /software renderer/.test(e.message));
      else await refused;
    }
  });
});

async function logitsOf(backend: WebGpuBackend, tokens: number[], past: number): Promise<number[]> {
  return [...(await backend.prefill(Int32Array.from(tokens), past))];
}

describe("on Dawn", { skip }, () => {
  let bundle: PlanBundle;
  let server: TestServer;
  before(async () => {
    bundle = makePlanBundle();
    server = await serve(bundle.dir);
  });
  after(async () => server?.close());

  test("runs the plan: weights in row blocks across shards, uniforms, chunked prefill, skipped empty dispatch", async () => {
    assert.ok(bundle.manifest.shards.length >= 4, "the table spans shards");
    const backend = new WebGpuBackend();
    const engine = await createEngine(bundle.dir, { backend, cache: null });
    try {
      assert.equal(backend.label, "WebGPU f32");
      assert.equal(engine.contextWindow, WINDOW);
      const tokens = [5, 40, 63, 0, 33, 2, 17, 50, 9, 41]; // 3 chunks of CHUNK = 4
      assert.ok(tokens.length > 2 * CHUNK);
      // the last chunk runs at past_len 3 + 8
      assert.deepEqual(await logitsOf(backend, tokens, 3), [...expectedLogits(bundle, 41, 3 + 8)]);
      assert.deepEqual([...(await backend.decode(7, 13))], [...expectedLogits(bundle, 7, 13)]);
      assert.deepEqual([...(await backend.decode(60, 14))], [...expectedLogits(bundle, 60, 14)]);
      assert.deepEqual(await logitsOf(backend, [1], 0), [...expectedLogits(bundle, 1, 0)]);
      assert.equal(backend.uploads!.bytesToWeights, VOCAB * VOCAB * 4, "every byte of the parts the plan binds (not the unused tensor)");
      assert.equal(backend.uploads!.committed.length, bundle.manifest.shards.length);
    } finally {
      await engine.unload();
    }
  });

  test("two-step load: a decode step timed on the zero weights, then the weights; results as with load()", async () => {
    const backend = new WebGpuBackend();
    const loader = await BundleLoader.open(bundle.dir, { cache: null });
    try {
      await backend.prepare(loader.manifest, loader);
      await assert.rejects(backend.decode(7, 0), /not loaded/); // no generation before the weights
      const ms = await backend.timeDecode(2);
      assert.ok(ms > 0 && Number.isFinite(ms), String(ms));
      assert.equal(backend.loadStats, null, "no shard fetched before the weights step");
      await backend.loadWeights();
      assert.deepEqual([...(await backend.decode(7, 13))], [...expectedLogits(bundle, 7, 13)]);
      assert.deepEqual(await logitsOf(backend, [1], 0), [...expectedLogits(bundle, 1, 0)]);
      assert.ok(backend.deviceKey.includes("f32"), backend.deviceKey);
    } finally {
      backend.unload();
    }
  });

  test("plan.json's kv_rewind_limit is the backend's kvRewindLimit (absent: none)", async () => {
    const limited = makePlanBundle({ kv_rewind_limit: 6 });
    for (const [b, want] of [[limited, 6], [bundle, undefined]] as const) {
      const backend = new WebGpuBackend();
      const loader = await BundleLoader.open(b.dir, { cache: null });
      try {
        await backend.prepare(loader.manifest, loader);
        assert.equal(backend.kvRewindLimit, want);
      } finally {
        backend.unload();
      }
    }
  });

  test("calls outside the window or the vocabulary are refused", async () => {
    const backend = new WebGpuBackend();
    const engine = await createEngine(bundle.dir, { backend, cache: null });
    try {
      await assert.rejects(backend.decode(1, WINDOW), /do not fit the context window of 32/);
      await assert.rejects(backend.prefill(Int32Array.from([1, VOCAB]), 0), /token id 64 is outside the vocabulary/);
      await assert.rejects(backend.prefill(new Int32Array(WINDOW - 1), 2), /context window/);
      assert.deepEqual(await logitsOf(backend, new Array(WINDOW).fill(3), 0), [...expectedLogits(bundle, 3, WINDOW - CHUNK)]);
    } finally {
      await engine.unload();
    }
    await assert.rejects(backend.decode(1, 0), /not loaded/);
  });

  test("a device that cannot run the bundle: a clear error, before any shard is fetched", async () => {
    const f32 = bundle.plan.variants.f32;
    const rewritten = makePlanBundle({ variants: { f32: { ...f32, limits: { ...f32.limits, maxStorageBufferBindingSize: 2 ** 40 } } } });
    const srv = await serve(rewritten.dir);
    try {
      await assert.rejects(createEngine(srv.url, { backend: "webgpu", cache: null }), (e: Error) => {
        assert.ok(e instanceof BackendUnsupportedError, e.message);
        assert.match(e.message, /maxStorageBufferBindingSize is \d+ on this device, the bundle needs 1099511627776/);
        return true;
      });
      assert.equal(srv.requestsFor("shards/"), 0);

      // "auto": the next backend that can run it takes over.
      registerBackend("fallback-test", () => new FakeBackend(spell("ok")));
      const engine = await createEngine(srv.url, { cache: null });
      assert.equal(engine.backend.name, "fake");
      await engine.unload();
    } finally {
      await srv.close();
    }
  });

  test("auto passes over a software adapter (SwiftShader) while another backend can run; else takes it", async () => {
    class Unsupported extends FakeBackend {
      override async load(): Promise<void> {
        throw new BackendUnsupportedError("not here");
      }
    }
    registerBackend("fallback-test", () => new Unsupported(spell("ok")));
    const alone = await createEngine(bundle.dir, { cache: null });
    assert.equal(alone.backend.name, "webgpu");
    assert.equal(alone.backend.label, "WebGPU f32");
    const adapter = (alone.backend as WebGpuBackend).adapter!;
    assert.equal(adapter.isFallbackAdapter, true, JSON.stringify(adapter)); // Dawn on SwiftShader
    assert.match(alone.backendInfo.reason, /^webgpu: the WebGPU adapter \(.+\) is a software renderer on the CPU.*; fake: not here$/);
    await alone.unload();

    registerBackend("fallback-test", () => new FakeBackend(spell("ok")));
    const engine = await createEngine(bundle.dir, { cache: null });
    assert.equal(engine.backend.name, "fake");
    assert.match(engine.backendInfo.reason, /software renderer/);
    await engine.unload();
  });

  test("a corrupted shard never reaches a weight buffer", async () => {
    const table = bundle.manifest.tensors[1];
    const bad = table.shard + 1; // the table's second shard
    const file = bundle.manifest.shards[bad].file;
    server.faults.set(file, { fault: "corrupt", times: Infinity });
    try {
      const loader = await BundleLoader.open(server.url, { cache: null });
      const plan = parsePlan(await loader.fetchJson("plan.json"), loader.manifest);
      const { device } = await openDevice(plan);
      const ex = await PlanExecutor.allocate(device, plan, "f32");
      const sink = new StagingSink(device, loader.manifest, loader.layout, weightBlocks(plan), ex.buffers);
      await assert.rejects(loader.loadShards(sink, { concurrency: 1 }), (e: Error) => e instanceof ShardError && e.shard === bad);
      assert.deepEqual(sink.log.discarded, [bad, bad], "both attempts discarded");
      assert.ok(!sink.log.committed.includes(bad));
      assert.ok(sink.log.committed.includes(bad - 1), "the shards before it were committed");
      // Read the weights back: the corrupted shard's range is untouched (zeros), the
      // committed ones hold the table's bytes.
      const [b0, b1] = [await ex.readBuffer("table:p0:0"), await ex.readBuffer("table:p0:1")];
      const got = new Uint8Array(b0.length + b1.length);
      got.set(b0);
      got.set(b1, b0.length);
      const want = bundle.parts[1]?.[0];
      assert.ok(want);
      const shardBytes = bundle.manifest.shards[table.shard].bytes;
      for (const s of sink.log.committed.filter((s) => s >= table.shard)) {
        const a = (s - table.shard) * shardBytes;
        assert.deepEqual(got.subarray(a, a + shardBytes), want.subarray(a, a + shardBytes), `shard ${s}`);
      }
      const a = (bad - table.shard) * shardBytes;
      assert.ok(got.subarray(a, a + shardBytes).every((x) => x === 0), "no byte of the corrupted shard");
      ex.destroy();
      device.destroy();
    } finally {
      server.faults.clear();
    }
  });

  test("a shard corrupted once is refetched; the model then runs on the verified bytes", async () => {
    const bad = bundle.manifest.tensors[1].shard + 2;
    server.faults.set(bundle.manifest.shards[bad].file, { fault: "corrupt", times: 1 });
    const backend = new WebGpuBackend();
    const engine = await createEngine(server.url, { backend, cache: null });
    try {
      assert.deepEqual(backend.uploads!.discarded, [bad]);
      assert.equal(backend.loadStats!.refetches, 1);
      for (const t of [0, 31, 32, 63]) assert.deepEqual(await logitsOf(backend, [t], 0), [...expectedLogits(bundle, t, 0)]);
    } finally {
      await engine.unload();
      server.faults.clear();
    }
  });

  /**
   * The synthetic plan with two optional entries: "verify" (pick's dispatches writing
   * logits_rows, through their own kernel pick_rows, compiled from pick's file) and "argmax",
   * whose kernel "broken" does not compile.
   */
  function withOptionalEntries(): PlanBundle {
    const p = bundle.plan;
    const rows = p.entries.decode.dispatches
      .filter((d: any) => d.kernel === "pick")
      .map((d: any) => ({ ...d, kernel: "pick_rows", bindings: d.bindings.map(([n, buf]: [number, string]) => [n, buf === "logits" ? "logits_rows" : buf]) }));
    const argmax = { kernel: "broken", bindings: [[2, "next_token"]], uniforms: ["1"], workgroups: ["1", "1", "1"] };
    return makePlanBundle(
      {
        kernels: { ...p.kernels, pick_rows: p.kernels.pick, broken: { ...p.kernels.poison, files: { f32: "kernels/broken.f32.wgsl" } } },
        buffers: { ...p.buffers, logits_rows: { kind: "output", dtype: "f32", elements: VOCAB }, next_token: { kind: "output", dtype: "u32", elements: 2 } },
        outputs: { logits: "logits", logits_rows: "logits_rows", next_token: "next_token" },
        entries: { ...p.entries, verify: { max_seq_len: 1, dispatches: rows }, argmax: { max_seq_len: 1, dispatches: [argmax] } },
      },
      4096,
      { "kernels/broken.f32.wgsl": "this is not WGSL" },
    );
  }
  const compileFailed = (e: Error) => e instanceof KernelCompileError && /^kernel broken\.f32 failed to compile: /.test(e.message);

  test("an optional entry's kernels compile at its first call; one that fails rejects the calls that need it, the rest runs on", async () => {
    const b = withOptionalEntries();
    const backend = new WebGpuBackend();
    const loader = await BundleLoader.open(b.dir, { cache: null });
    try {
      await backend.load(loader.manifest, loader); // (the broken kernel does not fail the load: nothing needs it yet)
      assert.deepEqual(backend.compiledKernels(), ["pick", "poison"]);
      assert.deepEqual([...(await backend.verify(Int32Array.of(9), 4))], [...expectedLogits(b, 9, 4)]);
      assert.deepEqual(backend.compiledKernels(), ["pick", "pick_rows", "poison"]);
      await assert.rejects(backend.decodeArgmax(7, 2), compileFailed);
      await assert.rejects(backend.decodeArgmax(7, 3), compileFailed); // (not retried: it fails the same way)
      assert.deepEqual([...(await backend.decode(7, 13))], [...expectedLogits(b, 7, 13)]);
      assert.deepEqual([...(await backend.verify(Int32Array.of(60), 14))], [...expectedLogits(b, 60, 14)]);
      assert.deepEqual(await logitsOf(backend, [12, 44], 5), [...expectedLogits(b, 44, 5)]);
      assert.deepEqual(backend.compiledKernels(), ["pick", "pick_rows", "poison"]);
    } finally {
      backend.unload();
    }
  });

  test("KernelSet: concurrent callers share one compile of a kernel; a failed one rejects them alike", async () => {
    const b = withOptionalEntries();
    const plan = parsePlan(b.plan);
    const { device, variant } = await openDevice(plan);
    const loader = await BundleLoader.open(b.dir, { cache: null });
    try {
      const set = new KernelSet(device, plan, variant, (path) => loader.fetchText(path));
      await set.sourcesRead();
      assert.deepEqual(set.compiled(), []);
      const [x, y] = await Promise.all([set.compile(["pick_rows"]), set.compile(["pick", "pick_rows", "pick"])]);
      assert.deepEqual([...y.keys()], ["pick", "pick_rows"]);
      assert.equal(x.get("pick_rows"), y.get("pick_rows"), "one compile, shared");
      assert.ok(x.get("pick_rows")!.pipeline !== y.get("pick")!.pipeline);
      assert.deepEqual(set.compiled(), ["pick", "pick_rows"]);
      const [e1, e2] = await Promise.allSettled([set.compile(["broken"]), set.compile(["broken"])]);
      assert.ok(e1.status === "rejected" && e2.status === "rejected" && compileFailed(e1.reason) && e1.reason === e2.reason);
      await assert.rejects(set.compile(["nothing"]), /the plan has no kernel nothing/);
      assert.deepEqual(set.compiled(), ["pick", "pick_rows"]);
    } finally {
      device.destroy();
    }
  });

  test("a cached reload requests no shard and no kernel", async () => {
    const cacheDir = tmpDir("llmpack-cache-");
    const first = await createEngine(server.url, { backend: "webgpu", cacheDir });
    await first.unload();
    const n = server.log.length;
    const backend = new WebGpuBackend();
    const engine = await createEngine(server.url, { backend, cacheDir });
    try {
      assert.deepEqual(server.log.slice(n), ["manifest.json"]);
      assert.equal(backend.loadStats!.cachedShards, bundle.manifest.shards.length);
      assert.deepEqual(await logitsOf(backend, [12, 44], 5), [...expectedLogits(bundle, 44, 5)]);
    } finally {
      await engine.unload();
    }
  });
});
