/**
 * response_format and tools through the engine (chat.completions.create), over a
 * backend whose logits are random (seeded by the token history, so a request is
 * reproducible): whatever the model prefers, the answer parses and validates against
 * the schema (ajv), tool calls come back in OpenAI's shape and go back in on the next
 * turn, a cut-off answer ends with finish_reason "length", and bad requests are
 * refused before anything runs. The byte tokenizer's ChatML template does not render
 * tools (the system-message fallback); a Qwen-style template does (test/chat-templates.ts).
 * The same on real models: tests/test_grammar.py.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import { createEngine, type Engine } from "../src/engine.js";
import { QWEN_STYLE_TEMPLATE } from "./chat-templates.js";
import { EOS, FakeBackend } from "./fake-backend.js";
import { type FakeBundle, type TestServer, makeChatBundle, serve } from "./fixtures.js";
import { collect } from "./helpers.js";

const VOCAB = 258;
const MESSAGES = [{ role: "user", content: "Describe a person as JSON" }];

/** Random logits from a hash of the history; the characters that close JSON are a little likelier. */
function randomModel(_step: number, history: number[]): Float32Array {
  let h = 0x9e3779b9;
  for (const t of history) h = Math.imul(h ^ t, 0x85ebca6b) ^ (h >>> 13);
  const l = new Float32Array(VOCAB);
  for (let i = 0; i < VOCAB; i++) {
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) + i;
    l[i] = ((h >>> 8) / 2 ** 24) * 8 - 4;
  }
  for (const c of '"}]') l[c.charCodeAt(0)]! += 3;
  l[EOS]! += 4;
  return l;
}

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 10 },
    age: { type: "integer", minimum: 0, maximum: 120 },
    pets: { type: "array", items: { enum: ["cat", "dog"] }, maxItems: 2 },
  },
  required: ["name", "age", "pets"],
  additionalProperties: false,
};
const WEATHER = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 8 }, unit: { enum: ["C", "F"] } }, required: ["city", "unit"], additionalProperties: false },
  },
};
const TIME = { type: "function" as const, function: { name: "get_time", parameters: { type: "object", properties: { zone: { enum: ["UTC"] } }, required: ["zone"] } } };

let bundle: FakeBundle;
let server: TestServer;
let engine: Engine;
let backend: FakeBackend;
const ajv = new Ajv({ strict: false });

before(async () => {
  bundle = makeChatBundle({ contextWindow: 1024 });
  server = await serve(bundle.dir);
  backend = new FakeBackend(randomModel, { vocab: VOCAB });
  engine = await createEngine(server.url, { backend, cache: null });
});
after(() => server.close());

describe("response_format on the engine", () => {
  test("json_schema: each answer parses and validates; streamed the same; n = 2 both", async () => {
    const validate = ajv.compile(PERSON);
    const response_format = { type: "json_schema" as const, json_schema: { name: "person", schema: PERSON, strict: true } };
    for (const seed of [1, 2, 3]) {
      const res = await engine.chat.completions.create({ messages: MESSAGES, response_format, temperature: 1, seed, max_tokens: 200 });
      const c = res.choices[0];
      assert.equal(c.finish_reason, "stop", c.message.content!);
      assert.ok(validate(JSON.parse(c.message.content!)), `${c.message.content}: ${ajv.errorsText(validate.errors)}`);
      const chunks = await collect(await engine.chat.completions.create({ messages: MESSAGES, response_format, temperature: 1, seed, max_tokens: 200, stream: true }));
      assert.equal(chunks.map((k) => k.choices[0].delta.content ?? "").join(""), c.message.content);
    }
    const two = await engine.chat.completions.create({ messages: MESSAGES, response_format, temperature: 1, seed: 9, max_tokens: 200, n: 2 });
    for (const c of two.choices) assert.ok(validate(JSON.parse(c.message.content!)), `${c.index}: ${c.message.content} ${[...c.message.content!].length}: ${ajv.errorsText(validate.errors)}`);
  });

  test("max_tokens cuts an answer off: finish_reason length, the JSON incomplete (as OpenAI)", async () => {
    const res = await engine.chat.completions.create({ messages: MESSAGES, response_format: { type: "json_schema", json_schema: { name: "person", schema: PERSON } }, max_tokens: 5, temperature: 1, seed: 1 });
    assert.equal(res.choices[0].finish_reason, "length");
    assert.equal(res.usage.completion_tokens, 5);
    assert.equal(res.choices[0].message.content!, '{"nam');
    assert.throws(() => JSON.parse(res.choices[0].message.content!));
  });

  test("json_object and a GBNF grammar", async () => {
    const obj = await engine.chat.completions.create({ messages: MESSAGES, response_format: { type: "json_object" }, temperature: 1, seed: 4, max_tokens: 300 });
    const v = JSON.parse(obj.choices[0].message.content!);
    assert.ok(v && typeof v === "object" && !Array.isArray(v), obj.choices[0].message.content!);
    const grammar = 'root ::= "The answer is " ("yes" | "no") "."';
    const g = await engine.chat.completions.create({ messages: MESSAGES, response_format: { type: "grammar", grammar }, temperature: 1, seed: 4 });
    assert.match(g.choices[0].message.content!, /^The answer is (yes|no)\.$/);
    assert.equal(g.choices[0].finish_reason, "stop");
  });

  test("a grammar that does not compile is refused before anything runs", async () => {
    const before = backend.calls.length;
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, response_format: { type: "grammar", grammar: "root ::= [" } }), /GrammarError: the grammar cannot be compiled: EBNF lexer error at line 1, column 11: Unterminated character class/);
    assert.equal(backend.calls.length, before);
  });
});

describe("tools on the engine", () => {
  test('tool_choice "required": tool_calls in OpenAI\'s shape; the round trip renders the call and the result', async () => {
    const validate = ajv.compile(WEATHER.function.parameters);
    const ask = [{ role: "user", content: "Weather in Oslo?" }];
    const res = await engine.chat.completions.create({ messages: ask, tools: [WEATHER, TIME], tool_choice: "required", temperature: 1, seed: 2, max_tokens: 200, parallel_tool_calls: false });
    const c = res.choices[0];
    assert.equal(c.finish_reason, "tool_calls", c.message.content ?? "");
    assert.equal(c.message.content, null);
    assert.equal(c.message.tool_calls!.length, 1);
    const call = c.message.tool_calls![0]!;
    assert.equal(call.type, "function");
    assert.match(call.id, /^call_/);
    const args = JSON.parse(call.function.arguments);
    if (call.function.name === "get_weather") assert.ok(validate(args), call.function.arguments);
    else assert.deepEqual(args, { zone: "UTC" });

    const next = [...ask, { role: "assistant", content: null, tool_calls: c.message.tool_calls }, { role: "tool", tool_call_id: call.id, content: '{"temp": 21}' }];
    const answer = await engine.chat.completions.create({ messages: next, tools: [WEATHER, TIME], tool_choice: "none", max_tokens: 4, temperature: 1, seed: 1 });
    assert.ok(["stop", "length"].includes(answer.choices[0].finish_reason));
    const prompt = engine.tokenizer.decode(backend.kv, { skipSpecialTokens: false });
    assert.ok(prompt.includes(`<tool_call>\n{"name":"${call.function.name}","arguments":${JSON.stringify(args)}}\n</tool_call>`), prompt);
    assert.ok(prompt.includes('<tool_response>\n{"temp": 21}\n</tool_response>'), prompt);
  });

  test("a named function, streamed: one tool_calls delta, finish_reason tool_calls", async () => {
    const chunks = await collect(
      await engine.chat.completions.create({ messages: [{ role: "user", content: "Time?" }], tools: [WEATHER, TIME], tool_choice: { type: "function", function: { name: "get_time" } }, temperature: 1, seed: 3, max_tokens: 100, stream: true }),
    );
    const deltas = chunks.flatMap((k) => k.choices[0].delta.tool_calls ?? []);
    assert.equal(deltas.length, 1);
    assert.equal(deltas[0]!.index, 0);
    assert.equal(deltas[0]!.function.name, "get_time");
    assert.deepEqual(JSON.parse(deltas[0]!.function.arguments), { zone: "UTC" });
    assert.equal(chunks.map((k) => k.choices[0].delta.content ?? "").join(""), "");
    assert.equal(chunks.at(-1)!.choices[0].finish_reason, "tool_calls");
  });

  test("a call cut off by max_tokens stays text, streamed or not (finish_reason length)", async () => {
    const req = { messages: [{ role: "user", content: "Time?" }], tools: [TIME], tool_choice: "required" as const, temperature: 1, seed: 3, max_tokens: 14 };
    const res = await engine.chat.completions.create(req);
    assert.equal(res.choices[0].finish_reason, "length");
    assert.equal(res.choices[0].message.tool_calls, undefined);
    assert.ok(res.choices[0].message.content!.startsWith("<tool_call>\n{"), res.choices[0].message.content!);
    const chunks = await collect(await engine.chat.completions.create({ ...req, stream: true }));
    assert.equal(chunks.map((k) => k.choices[0].delta.content ?? "").join(""), res.choices[0].message.content);
    assert.ok(chunks.every((k) => !k.choices[0].delta.tool_calls));
    assert.equal(chunks.at(-1)!.choices[0].finish_reason, "length");
  });

  test("unsupported combinations and bad tools are one-line errors", async () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ tools: [WEATHER], response_format: { type: "json_object" } }, /response_format and tools cannot be combined/],
      [{ tools: [WEATHER], tool_choice: { type: "function", function: { name: "nope" } } }, /"nope", which is not in tools/],
      [{ tool_choice: "auto" }, /tool_choice needs tools/],
      [{ messages: [{ role: "assistant", content: "", tool_calls: [{ id: "x", type: "function", function: { name: "f", arguments: "{" } }] }], tools: [WEATHER] }, /arguments is not JSON/],
    ];
    for (const [extra, message] of bad) await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, ...extra } as never), message);
  });
});

describe("tools through a template that renders them", () => {
  let qwen: TestServer;
  let qwenEngine: Engine;
  let qwenBackend: FakeBackend;
  before(async () => {
    qwen = await serve(makeChatBundle({ contextWindow: 2048, chatTemplate: QWEN_STYLE_TEMPLATE }).dir);
    qwenBackend = new FakeBackend(randomModel, { vocab: VOCAB });
    qwenEngine = await createEngine(qwen.url, { backend: qwenBackend, cache: null });
  });
  after(() => qwen.close());

  test("the template gets `tools`, then the call (arguments as an object) and the tool's result", async () => {
    const ask = [{ role: "system", content: "Be brief." }, { role: "user", content: "Weather in Oslo?" }];
    const res = await qwenEngine.chat.completions.create({ messages: ask, tools: [WEATHER], tool_choice: "required", temperature: 1, seed: 5, max_tokens: 120 });
    let prompt = qwenEngine.tokenizer.decode(qwenBackend.kv.slice(0, res.usage.prompt_tokens), { skipSpecialTokens: false });
    assert.ok(prompt.startsWith("<|im_start|>system\nBe brief.\n\n# Tools\n"), prompt);
    assert.match(prompt, /<tools>\s*\{"type": "function", "function": \{"name": "get_weather", "description": "Weather in a city", "parameters": \{/);
    const c = res.choices[0];
    assert.equal(c.finish_reason, "tool_calls", c.message.content ?? "");
    const call = c.message.tool_calls![0]!;
    assert.equal(call.function.name, "get_weather");
    const args = JSON.parse(call.function.arguments);
    assert.ok(ajv.validate(WEATHER.function.parameters, args), call.function.arguments);

    const next = [...ask, { role: "assistant", content: null, tool_calls: c.message.tool_calls }, { role: "tool", tool_call_id: call.id, content: "sunny" }];
    const answer = await qwenEngine.chat.completions.create({ messages: next, max_tokens: 2, temperature: 1, seed: 1 });
    prompt = qwenEngine.tokenizer.decode(qwenBackend.kv.slice(0, answer.usage.prompt_tokens), { skipSpecialTokens: false });
    const rendered = `<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": ${JSON.stringify(args).replace(/":/g, '": ').replace(/,"/g, ', "')}}\n</tool_call>\n<|im_end|>`;
    assert.ok(prompt.includes(rendered), `${prompt}\n--- expected ---\n${rendered}`);
    assert.ok(prompt.includes("<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>"), prompt);
    assert.ok(!prompt.includes("<tools>"), "a follow-up without tools renders none");
  });
});
