/**
 * Running out (issue 15): a Wasm memory or GPU buffer allocation that fails names what
 * was needed and the context window that would fit; a WebGPU device lost during
 * generation ends the request with a DeviceLostError and the engine can be reloaded.
 */
import "./gpu-env.js";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { BackendUnsupportedError } from "../src/backend.js";
import { createEngine } from "../src/engine.js";
import type { Plan } from "../src/plan.js";
import { parsePlan } from "../src/plan.js";
import { WasmExecutor } from "../src/wasm/executor.js";
import { type MemoryLayout, PAGE, allocationProblem, windowThatFits } from "../src/wasm/layout.js";
import type { WasmTable } from "../src/wasm/table.js";
import { DeviceLostError, PlanExecutor } from "../src/webgpu/executor.js";
import { WebGpuBackend } from "../src/webgpu/index.js";
import { FakeBackend, spell } from "./fake-backend.js";
import { type TestServer, serve } from "./fixtures.js";
import { gpuSkip } from "./gpu-env.js";
import { type PlanBundle, makePlanBundle } from "./plan-fixture.js";

const MiB = 2 ** 20;
const skip = await gpuSkip();

/** 30 MiB of weights, 64 MiB of KV cache for 4096 tokens (16 KiB each), 6 MiB of the rest. */
function layoutOf(): MemoryLayout {
  const bytes = 100 * MiB;
  return {
    bytes, pages: bytes / PAGE, stacks: 0, stackBytes: 0, buffers: new Map(), parts: [], programs: new Map(),
    weightsBytes: 30 * MiB, kvBytes: 64 * MiB, activationBytes: 6 * MiB,
  };
}

describe("Wasm memory that cannot be had", () => {
  test("the window that fits: what is left after weights and activations, in KV rows", () => {
    const layout = layoutOf();
    assert.equal(windowThatFits(layout, 4096, 60 * MiB), 1536); // (60 - 36) MiB / 16 KiB
    assert.equal(windowThatFits(layout, 4096, 500 * MiB), 4096);
    assert.equal(windowThatFits(layout, 4096, 20 * MiB), 0);
    assert.match(allocationProblem(layout, 4096, 20 * MiB, "x"), /less than the weights alone/);
  });

  test("a refused WebAssembly.Memory: BackendUnsupportedError with the numbers and --context-window", async () => {
    const Real = WebAssembly.Memory;
    // an engine that gives at most 60 MiB
    (WebAssembly as { Memory: unknown }).Memory = class {
      constructor(d: { initial: number }) {
        if (d.initial * PAGE > 60 * MiB) throw new RangeError("WebAssembly.Memory(): could not allocate memory");
      }
    };
    try {
      const plan = { context_window: 4096 } as Plan;
      await assert.rejects(WasmExecutor.start({} as WebAssembly.Module, plan, {} as WasmTable, layoutOf(), 1), (e: unknown) => {
        assert.ok(e instanceof BackendUnsupportedError);
        assert.match(e.message, /cannot allocate 100 MiB of Wasm memory here \(weights 30 MiB \+ KV cache 64 MiB for 4096 tokens/);
        const fits = Number(/--context-window (\d+)/.exec(e.message)?.[1]);
        assert.ok(fits > 1400 && fits <= 1536, e.message); // found by bisection, to 1/128 of the size
        return true;
      });
    } finally {
      (WebAssembly as { Memory: unknown }).Memory = Real;
    }
  });
});

describe("GPU buffers that cannot be had", () => {
  test("BackendUnsupportedError with the sizes and the window that fits on this device", async () => {
    const b = makePlanBundle({ context_window: 32 });
    const plan = parsePlan(structuredClone(b.plan));
    // a device with 20 KiB: the plan needs its 16 KiB table and a little more
    plan.buffers.kv = { kind: "kv_cache", dtype: "f32", elements: 32 * 256 }; // 32 KiB: 1 KiB per token
    let used = 0;
    const errors: (GPUError | null)[] = [];
    const device = {
      limits: { maxBufferSize: 1024 },
      lost: new Promise(() => {}),
      pushErrorScope: () => errors.push(null),
      popErrorScope: async () => errors.pop() ?? null,
      createBuffer: ({ size }: { size: number }) => {
        used += size;
        if (used > 20 * 1024 && errors.length) errors[0] = { message: "out of memory" } as GPUError;
        return { size, destroy: () => (used -= size) };
      },
    } as unknown as GPUDevice;
    await assert.rejects(PlanExecutor.allocate(device, plan, "f32"), (e: unknown) => {
      assert.ok(e instanceof BackendUnsupportedError);
      assert.match(e.message, /the GPU could not allocate .* KV cache .* for 32 tokens\): out of memory/);
      assert.match(e.message, /it gave about .* context window of about \d+ tokens: package the model with --context-window \d+/);
      return true;
    });
    assert.equal(used, 0, "the probe and the failed allocation freed everything");
  });
});

describe("a lost device", () => {
  test("the request ends with the backend's error; reload() gives a working engine", async () => {
    const backend = new FakeBackend(spell("hello"), { failDecodeAt: 3 });
    const bundle = (await import("./fixtures.js")).makeChatBundle();
    const server = await serve(bundle.dir);
    try {
      const engine = await createEngine(server.url, { backend, cache: null });
      await assert.rejects(engine.generate("!", { max_tokens: 8 }), /device lost/);
      await engine.reload();
      assert.equal(await engine.generate("!", { max_tokens: 8 }), "hello");
      assert.deepEqual(backend.calls.filter((c) => c === "unload"), ["unload"]);
    } finally {
      await server.close();
    }
  });

  describe("on Dawn", { skip }, () => {
    let bundle: PlanBundle;
    let server: TestServer;
    before(async () => {
      bundle = makePlanBundle();
      server = await serve(bundle.dir);
    });
    after(async () => server?.close());

    test("WebGPU device lost mid-generation: DeviceLostError, then engine.reload() runs again", async () => {
      const backend = new WebGpuBackend();
      const engine = await createEngine(server.url, { backend, cache: null });
      try {
        // The device goes away while the request runs (as a driver reset would).
        const prefill = backend.prefill.bind(backend);
        backend.prefill = (tokens, past) => {
          (backend as unknown as { device: GPUDevice }).device.destroy();
          return prefill(tokens, past);
        };
        // byte tokenizer: "!#" are ids 33 and 35, inside the plan's 64-token vocabulary
        await assert.rejects(engine.generate("!#", { max_tokens: 8, temperature: 0 }), (e: unknown) => {
          assert.ok(e instanceof DeviceLostError, String(e));
          assert.match(e.message, /device was lost .*reload the engine/);
          return true;
        });
        await assert.rejects(engine.generate("!#", { max_tokens: 2 }), DeviceLostError);
        backend.prefill = prefill;
        await engine.reload();
        const text = await engine.generate("!#", { max_tokens: 4, temperature: 0 });
        assert.equal(typeof text, "string");
      } finally {
        await engine.unload();
      }
    });
  });
});
