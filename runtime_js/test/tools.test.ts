/**
 * Tool calls (src/tools.ts): checking tools/tool_choice, the conversation as chat
 * templates take it (a Qwen-style template that renders `tools`, and SmolLM2's, which
 * does not: the system-message fallback), parsing calls out of generated text, and the
 * grammars that enforce tool_choice "required" and a named function, sampled with
 * random logits through the SmolLM2 tokenizer and checked with ajv.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { Ajv } from "ajv";
import { GrammarCompilerCache } from "../src/grammar/constraint.js";
import { grammarVocab } from "../src/grammar/vocab.js";
import { Prng, Sampler } from "../src/sampler.js";
import { ChatTemplate } from "../src/template.js";
import { BundleTokenizer } from "../src/tokenizer.js";
import { type FunctionTool, parseToolCalls, templateConversation, templateToolSupport, ToolCallStream, toolGrammar, type ToolPlan, toolPlan } from "../src/tools.js";
import { QWEN_STYLE_TEMPLATE } from "./chat-templates.js";
import { requireComponent } from "./helpers.js";
import { tokenizerCases } from "./reference.js";

const WEATHER: FunctionTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 16 }, unit: { enum: ["C", "F"] } }, required: ["city", "unit"], additionalProperties: false },
  },
};
const TIME: FunctionTool = {
  type: "function",
  function: { name: "get_time", parameters: { type: "object", properties: { zone: { enum: ["UTC", "CET"] } }, required: ["zone"], additionalProperties: false } },
};

const LLAMA3_STYLE = "{% if tools %}Environment: ipython{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}<|python_tag|>";

const cases = tokenizerCases();
const skip = requireComponent("python", typeof cases === "string" && cases);

const turn = [
  { role: "user", content: "Weather in Paris?" },
  { role: "assistant", content: "", tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","unit":"C"}' } }] },
  { role: "tool", content: '{"temp": 21}', tool_call_id: "call_1" },
];

describe("tools and tool_choice", () => {
  test("the template decides the format and whether tools are rendered natively", () => {
    assert.deepEqual(templateToolSupport(QWEN_STYLE_TEMPLATE), { native: true, format: "hermes" });
    assert.deepEqual(templateToolSupport(LLAMA3_STYLE), { native: true, format: "llama3_json" });
    assert.deepEqual(templateToolSupport("{% for m in messages %}{{ m.content }}{% endfor %}"), { native: false, format: "hermes" });
  });

  test("tool_choice forms, and bad combinations are one-line errors", () => {
    assert.equal(toolPlan({}, QWEN_STYLE_TEMPLATE), null);
    assert.equal(toolPlan({ tools: [WEATHER], tool_choice: "none" }, QWEN_STYLE_TEMPLATE), null);
    assert.equal(toolPlan({ tools: [WEATHER] }, QWEN_STYLE_TEMPLATE)?.choice, "auto");
    assert.equal(toolPlan({ tools: [WEATHER], tool_choice: "required" }, QWEN_STYLE_TEMPLATE)?.choice, "required");
    const named = toolPlan({ tools: [WEATHER, TIME], tool_choice: { type: "function", function: { name: "get_time" } } }, QWEN_STYLE_TEMPLATE)!;
    assert.equal(named.choice, "named");
    assert.deepEqual(named.tools, [TIME]);
    assert.throws(() => toolPlan({ tool_choice: "required" }, null), /tool_choice needs tools/);
    assert.throws(() => toolPlan({ tools: [WEATHER], tool_choice: { type: "function", function: { name: "nope" } } }, null), /"nope", which is not in tools/);
    assert.throws(() => toolPlan({ tools: [WEATHER], tool_choice: "always" }, null), /tool_choice must be/);
    assert.throws(() => toolPlan({ tools: [{ type: "function", function: { name: "a b" } }] }, null), /tools\[0\]\.function\.name/);
    assert.throws(() => toolPlan({ tools: [WEATHER, WEATHER] }, null), /two tools are named "get_weather"/);
    assert.throws(() => toolPlan({ tools: [{ type: "code_interpreter" }] }, null), /tools\[0\] must be/);
    assert.throws(() => toolPlan({ tools: [], tool_choice: "required" }, null), /at least one tool/);
  });

  test("a template that renders tools gets them, and earlier calls and results, as transformers passes them", () => {
    const plan = toolPlan({ tools: [WEATHER] }, QWEN_STYLE_TEMPLATE)!;
    const conv = templateConversation(turn, plan);
    assert.deepEqual(conv.tools, [WEATHER]);
    assert.deepEqual(conv.messages[1]!.tool_calls, [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: { city: "Paris", unit: "C" } } }]);
    const text = new ChatTemplate(QWEN_STYLE_TEMPLATE).render({ messages: conv.messages, tools: conv.tools, add_generation_prompt: true });
    assert.ok(text.includes(`<tools>\n${JSON.stringify(WEATHER)}`) || text.includes('"name": "get_weather"'), text);
    assert.ok(text.includes('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'), text);
    assert.ok(text.includes('<tool_response>\n{"temp": 21}\n</tool_response>'), text);
    assert.ok(text.endsWith("<|im_start|>assistant\n"));
  });

  test("a template without tool support: the tools in a system message, calls and results as Hermes text", { skip }, () => {
    const c = cases as Exclude<typeof cases, string>;
    const plan = toolPlan({ tools: [WEATHER], tool_choice: "required" }, c.chat_template)!;
    assert.equal(plan.native, false);
    const conv = templateConversation(turn, plan);
    assert.equal(conv.tools, undefined);
    const text = new ChatTemplate(c.chat_template).render({ messages: conv.messages, add_generation_prompt: true });
    assert.ok(text.startsWith("<|im_start|>system\nYou may call one or more functions"), text);
    assert.ok(text.includes(JSON.stringify(WEATHER)), text);
    assert.ok(text.includes('<|im_start|>assistant\n<tool_call>\n{"name":"get_weather","arguments":{"city":"Paris","unit":"C"}}\n</tool_call><|im_end|>'), text);
    assert.ok(text.includes("<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>"), text);
    assert.throws(() => templateConversation([{ role: "assistant", content: "", tool_calls: [{ function: { name: "f", arguments: "{bad" } }] }], plan), /messages\[0\]\.tool_calls\[0\]\.function\.arguments is not JSON/);
  });

  test('a follow-up without tools (tool_choice "none"): a template that renders calls and results still gets them as they are', () => {
    const native = templateConversation(turn, null, true);
    assert.equal(native.tools, undefined);
    assert.equal(native.messages[2]!.role, "tool");
    assert.equal(native.messages[2]!.tool_call_id, "call_1");
    const text = new ChatTemplate(QWEN_STYLE_TEMPLATE).render({ messages: native.messages, add_generation_prompt: true });
    assert.ok(!text.includes("<tools>"), text);
    assert.ok(text.includes('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'), text);
    assert.ok(text.includes('<tool_response>\n{"temp": 21}\n</tool_response>'), text);
    // a template that does not: Hermes text, and no system message about tools
    const plain = templateConversation(turn, null, false);
    assert.equal(plain.messages[0]!.role, "user");
    assert.equal(plain.messages[2]!.role, "user");
    assert.match(plain.messages[1]!.content, /^<tool_call>\n\{"name":"get_weather"/);
  });

  test("calls are parsed out of Hermes and Llama 3 JSON text; anything else stays content", () => {
    const hermes = toolPlan({ tools: [WEATHER, TIME] }, QWEN_STYLE_TEMPLATE)!;
    const r = parseToolCalls('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>', hermes);
    assert.equal(r.content, "Let me look.");
    assert.deepEqual(r.toolCalls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]), [["get_weather", { city: "Oslo", unit: "C" }], ["get_time", { zone: "UTC" }]]);
    assert.match(r.toolCalls[0]!.id, /^call_[0-9a-f]{24}$/);
    assert.deepEqual(parseToolCalls("no call here", hermes), { content: "no call here", toolCalls: [] });
    assert.equal(parseToolCalls('<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>', hermes).toolCalls.length, 0);
    const llama = toolPlan({ tools: [WEATHER] }, LLAMA3_STYLE)!;
    const l = parseToolCalls('{"name": "get_weather", "parameters": {"city": "Rome", "unit": "F"}}', llama);
    assert.equal(l.content, null);
    assert.deepEqual(JSON.parse(l.toolCalls[0]!.function.arguments), { city: "Rome", unit: "F" });
  });

  test("streaming holds back only what may be a call", () => {
    const plan = toolPlan({ tools: [WEATHER] }, QWEN_STYLE_TEMPLATE)!;
    const s = new ToolCallStream(plan);
    let streamed = "";
    for (const d of ["Sure", ", one moment. <", "tool_", "call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Oslo\", \"unit\": \"C\"}}\n</tool_call>"]) streamed += s.push(d);
    assert.equal(streamed, "Sure, one moment. ");
    const end = s.finish();
    assert.equal(end.content, "");
    assert.equal(end.toolCalls[0]!.function.name, "get_weather");
    const plain = new ToolCallStream(plan);
    assert.equal(plain.push("a < b") + plain.push(" and c"), "a < b and c");
    assert.deepEqual(plain.finish(), { content: "", toolCalls: [] });
  });
});

describe("tool_choice enforced by the grammar (SmolLM2 tokenizer, random logits)", { skip }, () => {
  const c = cases as Exclude<typeof cases, string>;
  const tok = skip
    ? (null as unknown as BundleTokenizer)
    : new BundleTokenizer(
        JSON.parse(readFileSync(path.join(c.dir, "tokenizer.json"), "utf8")),
        JSON.parse(readFileSync(path.join(c.dir, "tokenizer_config.json"), "utf8")),
        { file: "tokenizer.json", config_file: "tokenizer_config.json", chat_template: c.chat_template, bos_token: c.bos_token, eos_token: c.eos_token, add_bos_token: false },
        { eos_token_ids: [c.eos_token_id] },
      );
  const cache = skip ? (null as unknown as GrammarCompilerCache) : new GrammarCompilerCache(() => grammarVocab(tok.tokenizerJson, tok.tokens(), tok.specialTokenIds(), tok.eosTokenIds), 49152);
  const ajv = new Ajv({ strict: false });
  const validators = new Map([WEATHER, TIME].map((t) => [t.function.name, ajv.compile(t.function.parameters!)]));

  async function sample(plan: ToolPlan, seed: number): Promise<string> {
    const proc = await cache.processor(toolGrammar(plan)!);
    const rng = new Prng(seed);
    const sampler = new Sampler({ temperature: 1, seed });
    const boost = ['"', "}", "C", "UTC", ...tok.eosTokenIds].map((t) => (typeof t === "number" ? t : tok.tokenId(t))).filter((x): x is number => x !== undefined);
    const ids: number[] = [];
    for (let i = 0; i < 300; i++) {
      const logits = new Float32Array(49152);
      for (let j = 0; j < logits.length; j++) logits[j] = (rng.nextUint32() / 2 ** 31 - 1) * 8;
      for (const b of boost) logits[b] = logits[b]! + 8;
      proc.process(logits);
      const t = sampler.sample(logits);
      if (tok.eosTokenIds.has(t)) return tok.decode(ids);
      proc.accept(t);
      ids.push(t);
      if (proc.isDone()) return tok.decode(ids);
    }
    assert.fail(`no end within 300 tokens: ${tok.decode(ids)}`);
  }

  test('"required": one or more calls of known tools, with arguments valid against their schemas', async () => {
    const plan = toolPlan({ tools: [WEATHER, TIME], tool_choice: "required" }, QWEN_STYLE_TEMPLATE)!;
    for (let seed = 1; seed <= 3; seed++) {
      const text = await sample(plan, seed);
      const { toolCalls } = parseToolCalls(text, plan);
      assert.ok(toolCalls.length >= 1, text);
      for (const call of toolCalls) {
        const validate = validators.get(call.function.name)!;
        assert.ok(validate(JSON.parse(call.function.arguments)), `${text}: ${ajv.errorsText(validate.errors)}`);
      }
    }
  });

  test("a named function: exactly one call, of that function", async () => {
    const plan = toolPlan({ tools: [WEATHER, TIME], tool_choice: { type: "function", function: { name: "get_time" } } }, QWEN_STYLE_TEMPLATE)!;
    for (let seed = 1; seed <= 3; seed++) {
      const text = await sample(plan, seed);
      const { toolCalls, content } = parseToolCalls(text, plan);
      assert.equal(toolCalls.length, 1, text);
      assert.equal(toolCalls[0]!.function.name, "get_time");
      assert.ok(validators.get("get_time")!(JSON.parse(toolCalls[0]!.function.arguments)), text);
      assert.equal(content, null, text);
    }
  });

  test("Llama 3 JSON, named: one object with name and parameters", async () => {
    const plan = toolPlan({ tools: [WEATHER], tool_choice: "required" }, LLAMA3_STYLE)!;
    const text = await sample(plan, 5);
    const { toolCalls } = parseToolCalls(text, plan);
    assert.equal(toolCalls.length, 1, text);
    assert.ok(validators.get("get_weather")!(JSON.parse(toolCalls[0]!.function.arguments)), text);
  });

  test('"auto": free text is allowed, and a started <tool_call> must become a valid call', async () => {
    const plan = toolPlan({ tools: [WEATHER] }, QWEN_STYLE_TEMPLATE)!;
    const proc = await cache.processor(toolGrammar(plan)!);
    const free = new Float32Array(49152);
    proc.process(free);
    const allowed = free.filter((x) => x === 0).length;
    assert.ok(allowed > 40000, `only ${allowed} tokens allowed before any call`);
    for (const t of tok.encode("Checking. <tool_call>\n", { addSpecialTokens: false })) proc.accept(t);
    const inCall = new Float32Array(49152);
    proc.process(inCall);
    const next = [...inCall.keys()].filter((i) => inCall[i] === 0).map((i) => tok.decode([i]));
    assert.ok(next.length > 0 && next.every((s) => '{"name": "get_weather"'.startsWith(s) || s.trim() === "" || s.startsWith("{")), JSON.stringify(next.slice(0, 20)));
  });
});
