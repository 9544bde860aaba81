/**
 * Speculative decoding on the real backends: the tiny random Llama of test/tiny-bundle.ts
 * on the Wasm backend in Node and on WebGPU through Dawn (SwiftShader where there is no
 * GPU), with the backends' batched `verify`. Greedy answers to three prompts (one asks to
 * repeat its text), and a seeded temperature-1 answer, must be those of plain decoding,
 * while drafts are accepted (a random model's greedy output falls into loops that
 * prompt lookup drafts from). On WebGPU, greedy requests verify on the device (the plan's
 * "verify_argmax" entry: a token id read back per row, not the rows; counted), requests with
 * logprobs read the rows. SmolLM2 on Wasm: tests/test_speculative.py runs this file
 * with $LLMPACK_SPECULATIVE_BUNDLE and $LLMPACK_SPECULATIVE_BACKENDS=wasm.
 */
import "./gpu-env.js";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Backend } from "../src/backend.js";
import { createEngine, type Engine } from "../src/engine.js";
import type { ChatCompletion, ChatCompletionRequest } from "../src/openai.js";
import { Sampler } from "../src/sampler.js";
import { WasmBackend } from "../src/wasm/index.js";
import { WebGpuBackend } from "../src/webgpu/index.js";
import { gpuSkip } from "./gpu-env.js";
import { requireComponent } from "./helpers.js";
import { tinyBundle } from "./tiny-bundle.js";

const SMOLLM2 = process.env.LLMPACK_SPECULATIVE_BUNDLE;
const made = SMOLLM2 ?? tinyBundle();
const skipPython = requireComponent("python", typeof made !== "string" && made.missing);
const BUNDLE = typeof made === "string" ? made : "";
const skipGpu = await gpuSkip();

// (the tiny bundle's window is 96 tokens of a 320-token byte-level vocabulary: short prompts)
const PARAGRAPH = SMOLLM2
  ? "The histroy of printing begins in the fifteenth centruy, when Gutenberg combined movable type, ink and a press."
  : "teh cat sat on teh mat";
const PROMPTS: { name: string; messages: ChatCompletionRequest["messages"]; max_tokens: number }[] = [
  { name: "fix the typos", messages: [{ role: "user", content: `Fix the typos: ${PARAGRAPH}` }], max_tokens: SMOLLM2 ? 48 : 32 },
  { name: "repeat a list", messages: [{ role: "user", content: "Repeat with 2 as 5: 1, 2, 3, 1, 2" }], max_tokens: 32 },
  { name: "open-ended", messages: [{ role: "user", content: "Hi!" }], max_tokens: SMOLLM2 ? 24 : 32 },
];

/** $LLMPACK_SPECULATIVE_BACKENDS (e.g. "wasm") runs only those */
const ONLY = process.env.LLMPACK_SPECULATIVE_BACKENDS?.split(",");
/** Counts the WebGPU verify calls that read back the rows and those that read back a token per row. */
class CountingGpu extends WebGpuBackend {
  rowReads = 0;
  idReads = 0;
  override verify(tokens: Int32Array, pastLen: number) {
    this.rowReads++;
    return super.verify(tokens, pastLen);
  }
  override verifyArgmax(tokens: Int32Array, pastLen: number) {
    this.idReads++;
    return super.verifyArgmax(tokens, pastLen);
  }
}

const BACKENDS: [string, () => Backend, string | false][] = (
  [
    ["wasm", () => new WasmBackend({ threads: 1 }), skipPython],
    ["webgpu", () => new CountingGpu(), skipPython || skipGpu],
  ] as [string, () => Backend, string | false][]
).filter(([name]) => !ONLY || ONLY.includes(name));

for (const [name, make, skip] of BACKENDS) {
  // (WebGPU on SwiftShader is slow: fewer tokens there)
  const most = (n: number) => (name === "webgpu" ? Math.min(n, 12) : n);
  describe(`speculative decoding on the ${name} backend${SMOLLM2 ? " (SmolLM2)" : ""}`, { skip }, () => {
    let engine: Engine;
    before(async () => {
      engine = await createEngine(BUNDLE, { backend: make(), cache: null });
    });
    after(() => engine?.unload());

    /** the WebGPU verify calls of the last `both`: [rows read back, ids read back] */
    let reads: [number, number] = [0, 0];
    const both = async (req: ChatCompletionRequest): Promise<[ChatCompletion, ChatCompletion]> => {
      const plain = await engine.chat.completions.create({ ...req, stream: false }, { speculative: false });
      const gpu = engine.backend instanceof CountingGpu ? engine.backend : null;
      const before = gpu ? [gpu.rowReads, gpu.idReads] : [0, 0];
      // (fixed draft lengths: adaptive ones follow measured call times, and the test must not)
      const spec = await engine.chat.completions.create({ ...req, stream: false }, { speculative: { adaptive: false } });
      reads = gpu ? [gpu.rowReads - before[0]!, gpu.idReads - before[1]!] : [0, 0];
      return [plain, spec];
    };

    test("the backend verifies drafts", () => {
      assert.equal(typeof engine.backend.verify, "function");
      assert.ok(engine.backend.verifyMaxTokens! >= 2, `verifyMaxTokens ${engine.backend.verifyMaxTokens}`);
    });

    test("greedy: three prompts answer as without speculation", async () => {
      let accepted = 0;
      for (const p of PROMPTS) {
        const [plain, spec] = await both({ messages: p.messages, temperature: 0, max_tokens: most(p.max_tokens) });
        // WebGPU: every verify step picked its rows' tokens on the device, no rows read back (the
        // random model drafts little in 12 tokens; the last test checks the device's ids)
        if (name === "webgpu") assert.deepEqual(reads, [0, spec.timings.verify_steps], p.name);
        assert.equal(spec.choices[0].message.content, plain.choices[0].message.content, p.name);
        assert.equal(spec.choices[0].finish_reason, plain.choices[0].finish_reason, p.name);
        assert.equal(spec.usage.completion_tokens, plain.usage.completion_tokens, p.name);
        assert.equal(plain.timings.verify_steps, undefined);
        assert.ok(spec.timings.accepted_tokens! <= spec.timings.draft_tokens!);
        accepted += spec.timings.accepted_tokens!;
      }
      // (SmolLM2 copies the paragraph; the random tiny model copies nothing: the next test)
      if (SMOLLM2) assert.ok(accepted > 10, `${accepted} draft tokens accepted`);
    });

    test("answers held to four tokens (logit_bias) loop: drafts accepted, greedy and seeded as without speculation", async () => {
      // the model's logits still choose among the four: a row used at a wrong position shows
      const logit_bias = { "65": 100, "66": 100, "67": 100, "68": 100 };
      const small = name === "webgpu" || SMOLLM2;
      const samplings = small ? [{ temperature: 0 }, { temperature: 1, seed: 3 }] : [{ temperature: 0 }, { temperature: 1, seed: 3 }, { temperature: 1, seed: 4 }];
      for (const sampling of samplings) {
        const [plain, spec] = await both({ messages: PROMPTS[2]!.messages, ...sampling, logit_bias, max_tokens: small ? 20 : 40, logprobs: true });
        assert.deepEqual(spec.choices[0].logprobs!.content!.map((e) => e.token), plain.choices[0].logprobs!.content!.map((e) => e.token));
        assert.equal(spec.choices[0].message.content, plain.choices[0].message.content);
        assert.ok(spec.timings.accepted_tokens! > 0, `${JSON.stringify(sampling)}: ${JSON.stringify(spec.timings)}`);
        // logprobs need the logits on the CPU: WebGPU reads every verify step's rows
        if (name === "webgpu") assert.deepEqual(reads, [spec.timings.verify_steps, 0]);
      }
    });

    test("seeded sampling: the same answer", async () => {
      const p = PROMPTS[0]!;
      const [plain, spec] = await both({ messages: p.messages, temperature: 0.7, top_k: 8, seed: 3, max_tokens: most(p.max_tokens) });
      assert.equal(spec.choices[0].message.content, plain.choices[0].message.content);
      if (SMOLLM2) assert.ok(spec.timings.accepted_tokens! > 0, JSON.stringify(spec.timings));
    });

    // (last: it runs the backend behind the session's back, which then holds a stale cache)
    if (name !== "webgpu") {
      test("no verifyArgmax: its logits are in memory, greedy verify steps read the rows", () => {
        assert.notEqual(engine.backend.verifyArgmaxOnDevice, true);
        assert.equal(engine.backend.verifyArgmax, undefined);
      });
      return;
    }
    test("verifyArgmax: every row's token, as the CPU sampler's greedy choice from the rows", async () => {
      const backend = engine.backend;
      assert.equal(backend.verifyArgmaxOnDevice, true);
      const n = backend.verifyMaxTokens!;
      const tokens = Int32Array.from({ length: n }, (_, i) => (37 * i + 11) % 256);
      const greedy = (rows: Float32Array, count: number) => {
        const vocab = rows.length / count;
        return Array.from({ length: count }, (_, i) => new Sampler({ temperature: 0 }).choose(rows.slice(i * vocab, (i + 1) * vocab)).token);
      };
      const want = greedy(Float32Array.from(await backend.verify!(tokens, 0)), n);
      assert.deepEqual([...(await backend.verifyArgmax!(tokens, 0))], want);
      // fewer rows than the entry holds; at a later position
      const three = tokens.subarray(n - 3);
      const rows = Float32Array.from(await backend.verify!(three, n - 3));
      assert.deepEqual([...(await backend.verifyArgmax!(three, n - 3))], greedy(rows, 3));
    });
  });
}
