/**
 * Greedy decoding with the token picked on the GPU (the plan's "argmax" entry, 4 bytes
 * read back per step) against the logits read back and argmax'ed on the CPU: the tiny
 * random Llama packaged by the Python packager, on Dawn (SwiftShader where there is no GPU).
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
  constructor(opts: WebGpuBackendOptions) {
    super(opts);
  }
  override decode(token: number, pos: number) {
    this.decodes++;
    return super.decode(token, pos);
  }
  override decodeArgmax(token: number, pos: number) {
    this.argmaxDecodes++;
    return super.decodeArgmax(token, pos);
  }
}

async function greedy(opts: WebGpuBackendOptions, request: Record<string, unknown>) {
  const backend = new CountingGpu(opts);
  const engine = await createEngine(BUNDLE, { backend, cache: null });
  try {
    const messages = [{ role: "user", content: "Name three colours." }];
    const r = await engine.chat.completions.create({ messages, max_tokens: 12, temperature: 0, ...request });
    return { text: r.choices[0]!.message.content, tokens: r.usage.completion_tokens, backend };
  } finally {
    await engine.unload();
  }
}

describe("greedy next token on the GPU", { skip }, () => {
  test("the same tokens as the logits read back; only plain greedy requests take it", async () => {
    const device = await greedy({}, {});
    const readback = await greedy({ deviceArgmax: false }, {});
    assert.ok(device.tokens > 2, `${device.tokens} tokens`);
    assert.equal(device.text, readback.text);
    assert.equal(device.tokens, readback.tokens);
    assert.equal(device.backend.decodes, 0);
    assert.ok(device.backend.argmaxDecodes >= device.tokens - 2, String(device.backend.argmaxDecodes));
    assert.equal(readback.backend.argmaxDecodes, 0);
    // a penalty needs the logits on the CPU: the readback path, whatever the option
    const penalized = await greedy({}, { frequency_penalty: 0.5 });
    assert.equal(penalized.backend.argmaxDecodes, 0);
    assert.ok(penalized.backend.decodes > 0);
  });
});
