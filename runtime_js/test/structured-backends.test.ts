/**
 * response_format on the real backends: the tiny random Llama of test/tiny-bundle.ts
 * (byte-level BPE, 320 tokens, a 96-token window) on the Wasm backend in Node and on
 * WebGPU through Dawn (SwiftShader where there is no GPU). The grammar sits between the
 * logits and the sampler, so each backend's answers must parse and validate (ajv) and
 * a grammar's answer must be in its language; sampling with a seed stays reproducible.
 * (Tool calls need a longer window than this bundle's for the tools' system message:
 * tests/test_grammar.py runs them with SmolLM2 on Wasm.)
 */
import "./gpu-env.js";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import type { Backend } from "../src/backend.js";
import { createEngine, type Engine } from "../src/engine.js";
import { WasmBackend } from "../src/wasm/index.js";
import { WebGpuBackend } from "../src/webgpu/index.js";
import { gpuSkip } from "./gpu-env.js";
import { requireComponent } from "./helpers.js";
import { tinyBundle } from "./tiny-bundle.js";

const made = tinyBundle();
const skipPython = requireComponent("python", typeof made !== "string" && made.missing);
const BUNDLE = typeof made === "string" ? made : "";
const skipGpu = await gpuSkip();

const SCHEMA = {
  type: "object",
  properties: { colour: { enum: ["red", "green", "blue"] }, n: { type: "integer", minimum: 0, maximum: 99 }, ok: { type: "boolean" } },
  required: ["colour", "n", "ok"],
  additionalProperties: false,
};
const MESSAGES = [{ role: "user", content: "A colour?" }];
const ajv = new Ajv({ strict: false });
const validate = ajv.compile(SCHEMA);

/** name, backend, skip, the seeds of the json_schema runs (fewer on SwiftShader: slow) */
const BACKENDS: [string, () => Backend, string | false, number[]][] = [
  ["wasm", () => new WasmBackend({ threads: 1 }), skipPython, [1, 2, 1]],
  ["webgpu", () => new WebGpuBackend(), skipPython || skipGpu, [1, 1]],
];

for (const [name, make, skip, seeds] of BACKENDS) {
  describe(`response_format on the ${name} backend`, { skip }, () => {
    let engine: Engine;
    before(async () => {
      engine = await createEngine(BUNDLE, { backend: make(), cache: null });
    });
    after(() => engine?.unload());

    test("json_schema: the answer validates; the same seed gives the same answer", async () => {
      const response_format = { type: "json_schema" as const, json_schema: { name: "pick", schema: SCHEMA } };
      const answers: string[] = [];
      for (const seed of seeds) {
        const res = await engine.chat.completions.create({ messages: MESSAGES, response_format, temperature: 1, seed, max_tokens: 40 });
        const c = res.choices[0];
        assert.equal(c.finish_reason, "stop", c.message.content!);
        assert.ok(validate(JSON.parse(c.message.content!)), `${c.message.content}: ${ajv.errorsText(validate.errors)}`);
        answers.push(c.message.content!);
      }
      assert.equal(answers.at(-1), answers[0]);
    });

    test("a GBNF grammar, greedy and streamed", async () => {
      const grammar = 'root ::= "It is " ("red" | "green" | "blue") ", " [1-9] "0%."';
      const chunks = [];
      for await (const k of await engine.chat.completions.create({ messages: MESSAGES, response_format: { type: "grammar", grammar }, temperature: 0, max_tokens: 40, stream: true })) chunks.push(k);
      const text = chunks.map((k) => k.choices[0].delta.content ?? "").join("");
      assert.match(text, /^It is (red|green|blue), [1-9]0%\.$/);
      assert.equal(chunks.at(-1)!.choices[0].finish_reason, "stop");
    });
  });
}
