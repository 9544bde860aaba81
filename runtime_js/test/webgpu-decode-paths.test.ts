/**
 * The WebGPU decode paths that read back a few bytes instead of the logits, each against
 * the same request with the logits read back, on one engine (the tiny random Llama packaged
 * by the Python packager, on Dawn; SwiftShader where there is no GPU):
 * - greedy: the token picked on the GPU (the plan's "argmax" entry, 4 bytes per step);
 * - top-k / top-p: sampled from the candidates the GPU lists (the "topk" entry: the 64
 *   largest logits and the softmax sum, 520 bytes per step), seeded, the same text.
 * Counters check which path each request took, and that requests the paths cannot
 * answer (a penalty, plain temperature sampling) read the logits; the kernels only the
 * argmax and topk entries use are compiled at their first request, not at load.
 */
import "./gpu-env.js";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createEngine } from "../src/engine.js";
import { WebGpuBackend, type WebGpuBackendOptions } from "../src/webgpu/index.js";
import { gpuSkip } from "./gpu-env.js";
import { requireComponent } from "./helpers.js";
import { tinyBundle } from "./tiny-bundle.js";

const made = tinyBundle();
const skipPython = requireComponent("python", typeof made !== "string" && made.missing);
const BUNDLE = typeof made === "string" ? made : "";
const skip = skipPython || (await gpuSkip());

/** Counts which decode path the session took. */
class CountingGpu extends WebGpuBackend {
  decodes = 0;
  argmaxDecodes = 0;
  topKDecodes = 0;
  /** steps whose candidates could not decide the token: their logits were read */
  fallbacks = 0;
  override decode(token: number, pos: number) {
    this.decodes++;
    return super.decode(token, pos);
  }
  override decodeArgmax(token: number, pos: number) {
    this.argmaxDecodes++;
    return super.decodeArgmax(token, pos);
  }
  override decodeTopK(token: number, pos: number, invTemperature: number) {
    this.topKDecodes++;
    return super.decodeTopK(token, pos, invTemperature);
  }
  override readLastLogits() {
    this.fallbacks++;
    return super.readLastLogits();
  }
}

const REQUESTS: Record<string, Record<string, unknown>> = {
  greedy: { temperature: 0 },
  top_k: { temperature: 0.8, top_k: 20, top_p: 1, seed: 7 },
  top_p: { temperature: 0.4, top_k: 0, top_p: 0.9, seed: 9 },
  // the whole distribution: the logits are read
  plain: { temperature: 1, top_k: 0, top_p: 1, seed: 10 },
  // a penalty needs the logits on the CPU
  penalized: { temperature: 0, frequency_penalty: 0.5 },
};

interface Run {
  text: string | null;
  tokens: number;
  decodes: number;
  argmax: number;
  topK: number;
  fallbacks: number;
}

/** Every request with the device paths on and off (deviceArgmax / deviceTopK false), on one engine. */
async function runAll(): Promise<{ runs: Record<string, { device: Run; readback: Run }>; compiled: Record<string, string[]>; backend: CountingGpu }> {
  const opts: WebGpuBackendOptions = {};
  const backend = new CountingGpu(opts);
  const engine = await createEngine(BUNDLE, { backend, cache: null });
  const messages = [{ role: "user", content: "Name three colours." }];
  const run = async (request: Record<string, unknown>, onDevice: boolean): Promise<Run> => {
    opts.deviceArgmax = opts.deviceTopK = onDevice; // (the backend reads its options at every request)
    const before = { ...backend };
    const r = await engine.chat.completions.create({ messages, max_tokens: 10, ...request });
    return {
      text: r.choices[0]!.message.content,
      tokens: r.usage.completion_tokens,
      decodes: backend.decodes - before.decodes,
      argmax: backend.argmaxDecodes - before.argmaxDecodes,
      topK: backend.topKDecodes - before.topKDecodes,
      fallbacks: backend.fallbacks - before.fallbacks,
    };
  };
  try {
    // every compared request then starts from the same cache: the prompt but its last token reused
    await run({ max_tokens: 1 }, false);
    // the kernels compiled after load and after each request's device run
    const compiled: Record<string, string[]> = { load: backend.compiledKernels() };
    const runs: Record<string, { device: Run; readback: Run }> = {};
    for (const [name, request] of Object.entries(REQUESTS)) {
      const device = await run(request, true);
      compiled[name] = backend.compiledKernels();
      runs[name] = { device, readback: await run(request, false) };
    }
    return { runs, compiled, backend };
  } finally {
    await engine.unload();
  }
}

describe("decode paths that read back a few bytes", { skip }, () => {
  test("greedy on the GPU and top-k / top-p candidates: the same text as the logits read back; only requests they can answer take them", async () => {
    const { runs, compiled, backend } = await runAll();
    for (const [name, { device: d, readback: r }] of Object.entries(runs)) {
      assert.ok(d.tokens > 2, `${name}: ${d.tokens} tokens`);
      assert.equal(d.text, r.text, name);
      assert.equal(d.tokens, r.tokens, name);
      assert.equal(r.topK + r.argmax, 0, name);
    }
    const g = runs.greedy!.device;
    assert.equal(g.decodes, 0);
    assert.ok(g.argmax >= g.tokens - 2, `greedy: ${g.argmax} argmax steps`);
    const k = runs.top_k!.device;
    assert.equal(k.decodes, 0);
    assert.ok(k.topK >= k.tokens - 2, `top_k: ${k.topK} top-k steps`);
    assert.equal(k.fallbacks, 0); // top_k <= K: always decided
    const p = runs.top_p!.device;
    assert.equal(p.decodes, 0);
    assert.ok(p.topK >= p.tokens - 2, `top_p: ${p.topK} top-k steps`);
    assert.ok(p.fallbacks < p.topK, `top_p: every one of ${p.topK} steps read the logits`);
    for (const name of ["plain", "penalized"]) {
      const d = runs[name]!.device;
      assert.equal(d.topK + d.argmax, 0, name);
      assert.ok(d.decodes > 0, name);
    }
    // load compiled the kernels of prefill and decode only; greedy added argmax's, top_k topk's
    const plan = backend.plan!;
    const kernels = (...entries: string[]) => [...new Set(entries.flatMap((e) => plan.entries[e]!.dispatches.map((d) => d.kernel)))].sort();
    assert.deepEqual(compiled.load, kernels("prefill", "decode"));
    assert.ok(kernels("prefill", "decode", "argmax", "topk").length > compiled.load!.length + 1, "argmax and topk have kernels of their own");
    assert.deepEqual(compiled.greedy, kernels("prefill", "decode", "argmax"));
    assert.deepEqual(compiled.top_k, kernels("prefill", "decode", "argmax", "topk"));
    assert.deepEqual(compiled.penalized, compiled.top_k);
  });
});
