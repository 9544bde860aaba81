/**
 * The chat API's request parameters on the engine, over a scripted backend whose logits
 * depend on the whole token history (so a wrong KV cache shows): logprobs and
 * top_logprobs (against a softmax of the backend's own logits), logit_bias, n > 1 from
 * one prefill, a request's AbortSignal, prefix reuse (cached_tokens) within the
 * backend's kvRewindLimit, extra LogitsProcessors, and the combinations refused.
 * test/chat-backends.test.ts runs the same parameters on the Wasm and WebGPU backends.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createEngine, type Engine } from "../src/engine.js";
import type { LogitsProcessor } from "../src/logits_processor.js";
import type { ChatCompletionChunk } from "../src/openai.js";
import { EOS, FakeBackend } from "./fake-backend.js";
import { type FakeBundle, type TestServer, makeChatBundle, serve } from "./fixtures.js";
import { collect } from "./helpers.js";

const MESSAGES = [{ role: "user", content: "Say hello" }];
const VOCAB = 258;

/** Logits over 'a'..'z' that depend on every token so far; EOS becomes likely after 12 generated tokens. */
function model(_step: number, history: number[]): Float32Array {
  const l = new Float32Array(VOCAB).fill(-Infinity);
  let h = 7;
  for (const t of history) h = (Math.imul(h, 31) + t) | 0;
  for (let i = 97; i <= 122; i++) l[i] = 2 * Math.sin(h * 0.001 + i * 1.7);
  l[EOS] = history.length > 60 ? 4 : -2;
  return l;
}

/** A backend that also keeps a copy of every logits vector it returned. */
class Recording extends FakeBackend {
  returned: Float32Array[] = [];
  constructor(opts: ConstructorParameters<typeof FakeBackend>[1] = {}) {
    super(model, opts);
  }
  override async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    return this.keep(await super.prefill(tokens, pastLen));
  }
  override async decode(token: number, pos: number): Promise<Float32Array> {
    return this.keep(await super.decode(token, pos));
  }
  private keep(l: Float32Array): Float32Array {
    this.returned.push(l.slice());
    return l;
  }
}

function logSoftmax(l: Float32Array): number[] {
  const finite = Array.from(l).filter((v) => v > -Infinity);
  const m = Math.max(...finite);
  const lse = m + Math.log(finite.reduce((a, v) => a + Math.exp(v - m), 0));
  return Array.from(l, (v) => v - lse);
}

let bundle: FakeBundle;
let server: TestServer;

before(async () => {
  bundle = makeChatBundle();
  server = await serve(bundle.dir);
});
after(() => server.close());

async function engineWith(backend: FakeBackend): Promise<Engine> {
  return createEngine(server.url, { backend, cache: null });
}

describe("chat parameters", () => {
  test("logprobs: each token's logprob and top_logprobs are the softmax of the backend's logits", async () => {
    const backend = new Recording();
    const engine = await engineWith(backend);
    const res = await engine.chat.completions.create({ messages: MESSAGES, temperature: 0.8, seed: 3, max_tokens: 8, logprobs: true, top_logprobs: 5 });
    const content = res.choices[0].logprobs!.content!;
    assert.equal(content.length, 8);
    assert.equal(res.choices[0].logprobs!.refusal, null);
    assert.equal(content.map((c) => c.token).join(""), res.choices[0].message.content);
    content.forEach((entry, i) => {
      const want = logSoftmax(backend.returned[i]!);
      const id = entry.bytes![0]!; // one byte per token
      assert.deepEqual(entry.bytes, [...new TextEncoder().encode(entry.token)]);
      assert.ok(Math.abs(entry.logprob - want[id]!) < 1e-5, `${entry.logprob} vs ${want[id]}`);
      assert.equal(entry.top_logprobs.length, 5);
      const best = want.map((v, t) => [v, t] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 5);
      assert.deepEqual(entry.top_logprobs.map((t) => t.bytes![0]), best.map(([, t]) => t));
      entry.top_logprobs.forEach((t, k) => assert.ok(Math.abs(t.logprob - best[k]![0]) < 1e-5));
    });
    // streamed: the same entries, spread over the content chunks
    const chunks = await collect(await engine.chat.completions.create({ messages: MESSAGES, temperature: 0.8, seed: 3, max_tokens: 8, logprobs: true, top_logprobs: 5, stream: true }));
    const streamed = chunks.flatMap((c) => c.choices[0].logprobs?.content ?? []);
    assert.deepEqual(streamed, content);
    // without top_logprobs: empty lists; without logprobs: null
    const plain = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 3, logprobs: true });
    assert.deepEqual(plain.choices[0].logprobs!.content!.map((c) => c.top_logprobs), [[], [], []]);
    assert.equal((await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 3 })).choices[0].logprobs, null);
    // a token holding part of a character: U+FFFD as text, its exact byte
    assert.deepEqual(engine.tokenizer.tokenPiece(0xc3), { text: "\uFFFD", bytes: [0xc3] });
    assert.deepEqual(engine.tokenizer.tokenPiece(32), { text: " ", bytes: [32] });
    assert.deepEqual(engine.tokenizer.tokenPiece(EOS), { text: "<|im_end|>", bytes: [...new TextEncoder().encode("<|im_end|>")] });
  });

  test("logit_bias forces and forbids tokens; logprobs then reflect the bias", async () => {
    const engine = await engineWith(new Recording());
    const forced = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 6, logit_bias: { "120": 100 }, logprobs: true });
    assert.equal(forced.choices[0].message.content, "xxxxxx");
    assert.ok(forced.choices[0].logprobs!.content!.every((c) => c.logprob > -1e-6));
    const free = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 30, temperature: 0 });
    const banned = free.choices[0].message.content![0]!;
    const without = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 30, temperature: 0, logit_bias: { [String(banned.charCodeAt(0))]: -100 } });
    assert.ok(!without.choices[0].message.content!.includes(banned), without.choices[0].message.content!);
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, logit_bias: { "258": 5 } }), /logit_bias: token id 258 is outside the vocabulary \(0\.\.257\)/);
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, logit_bias: { x: 5 } }), /key "x" is not a token id/);
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, logit_bias: { "5": -101 } }), /-100\.\.100/);
  });

  test("n = 2: one prefill, the cache rolled back for the second choice; equal to two requests with seeds s and s + 1", async () => {
    const backend = new Recording();
    const engine = await engineWith(backend);
    const ask = { messages: MESSAGES, temperature: 1, max_tokens: 10 };
    const before = backend.calls.length;
    const both = await engine.chat.completions.create({ ...ask, n: 2, seed: 11 });
    const calls = backend.calls.slice(before);
    const prompt = both.usage.prompt_tokens;
    // the second choice's first token: a decode step rolled back to the prompt's end
    assert.deepEqual(calls.filter((c) => c.startsWith("prefill") || c.startsWith("decode")), [`prefill ${prompt}@0`, `decode 1@${prompt}`]);
    assert.deepEqual(both.choices.map((c) => c.index), [0, 1]);
    engine.interrupt(); // (nothing runs: no effect)
    const a = await engine.chat.completions.create({ ...ask, seed: 11 });
    const b = await engine.chat.completions.create({ ...ask, seed: 12 });
    assert.equal(both.choices[0].message.content, a.choices[0].message.content);
    assert.equal(both.choices[1]!.message.content, b.choices[0].message.content);
    assert.notEqual(a.choices[0].message.content, b.choices[0].message.content);
    assert.equal(both.usage.completion_tokens, a.usage.completion_tokens + b.usage.completion_tokens);
    // streamed: choice indexes on every chunk, the same texts, one finish_reason per choice
    const chunks = await collect(await engine.chat.completions.create({ ...ask, n: 2, seed: 11, stream: true }));
    for (const i of [0, 1]) {
      const mine = chunks.filter((c) => c.choices[0].index === i);
      assert.equal(mine.map((c) => c.choices[0].delta.content ?? "").join(""), both.choices[i]!.message.content);
      assert.deepEqual(mine.filter((c) => c.choices[0].finish_reason).map((c) => c.choices[0].finish_reason), [both.choices[i]!.finish_reason]);
    }
    assert.ok(chunks.at(-1)!.usage);
  });

  test("prefix reuse: the longest common prefix stays cached (cached_tokens), output as from a fresh engine", async () => {
    const backend = new Recording();
    const engine = await engineWith(backend);
    const cats = [{ role: "user", content: "Tell me a story about cats" }];
    const first = await engine.chat.completions.create({ messages: cats, max_tokens: 5 });
    assert.equal(first.usage.prompt_tokens_details!.cached_tokens, 0);
    // not a continuation: the last message differs after a shared start
    const other = [{ role: "user", content: "Tell me a story about dogs" }];
    const second = await engine.chat.completions.create({ messages: other, max_tokens: 5 });
    const ids = [cats, other].map((m) => engine.tokenizer.encodeChat(m));
    let shared = 0;
    while (ids[0]![shared] === ids[1]![shared]) shared++;
    assert.equal(shared, 1 + "user\nTell me a story about ".length); // <|im_start|>, then a token per byte
    assert.equal(second.usage.prompt_tokens_details!.cached_tokens, shared);
    assert.ok(backend.calls.includes(`prefill ${second.usage.prompt_tokens - shared}@${shared}`), backend.calls.join(" "));
    const fresh = await (await engineWith(new Recording())).chat.completions.create({ messages: other, max_tokens: 5 });
    assert.equal(second.choices[0].message.content, fresh.choices[0].message.content);
  });

  test("kvRewindLimit: a rollback past it prefills afresh (prefix reuse and n > 1)", async () => {
    const backend = new Recording({ kvRewindLimit: 3 });
    const engine = await engineWith(backend);
    const a = await engine.chat.completions.create({ messages: [{ role: "user", content: "Tell me a story about cats" }], max_tokens: 2 });
    // the cache holds the prompt and 1 decoded token: a different last word rolls back 5 > 3 positions
    const b = await engine.chat.completions.create({ messages: [{ role: "user", content: "Tell me a story about dogs" }], max_tokens: 2 });
    assert.equal(b.usage.prompt_tokens_details!.cached_tokens, 0);
    assert.equal(backend.calls.filter((c) => c.startsWith("prefill")).at(-1), `prefill ${b.usage.prompt_tokens}@0`);
    // a follow-up within the limit reuses: the cache holds b's prompt + 1 token; the next prompt shares all of b's prompt
    const c = await engine.chat.completions.create({ messages: [{ role: "user", content: "Tell me a story about dogs" }], max_tokens: 2 });
    assert.equal(c.usage.prompt_tokens_details!.cached_tokens, c.usage.prompt_tokens - 1);
    // n = 2 with 6 tokens per choice: rolling back 5 > 3 positions means prefilling the prompt again
    const n = backend.calls.length;
    const two = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 6, n: 2, seed: 1, temperature: 1 });
    const p = two.usage.prompt_tokens;
    assert.deepEqual(backend.calls.slice(n).filter((x) => x.startsWith("prefill")), [`prefill ${p}@0`, `prefill ${p}@0`]);
    const lone = await (await engineWith(new Recording())).chat.completions.create({ messages: MESSAGES, max_tokens: 6, seed: 2, temperature: 1 });
    assert.equal(two.choices[1]!.message.content, lone.choices[0].message.content);
    assert.ok(a.choices[0].message.content!.length > 0);
  });

  test("a request's signal aborts a stream mid-way (AbortError); the next request runs normally", async () => {
    const backend = new FakeBackend(() => 97, { delayMs: 1 });
    const engine = await engineWith(backend);
    const ctl = new AbortController();
    const seen: ChatCompletionChunk[] = [];
    await assert.rejects(
      (async () => {
        for await (const c of await engine.chat.completions.create({ messages: MESSAGES, stream: true, max_tokens: 1000 }, { signal: ctl.signal })) {
          seen.push(c);
          if (seen.length === 4) ctl.abort();
        }
      })(),
      { name: "AbortError" },
    );
    assert.equal(seen.length, 4);
    assert.ok(seen.every((c) => c.choices[0].finish_reason === null));
    const next = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 3 });
    assert.equal(next.choices[0].message.content, "aaa");
    // the aborted request's tokens stay usable as a cached prefix
    assert.ok(next.usage.prompt_tokens_details!.cached_tokens > 0);
    // generate(): the same
    const gen = new AbortController();
    const parts: string[] = [];
    const running = engine.generate("raw", { max_tokens: 1000, signal: gen.signal, onText: (d) => parts.push(d) === 3 && gen.abort() });
    await assert.rejects(running, { name: "AbortError" });
    assert.equal(parts.length, 3);
    assert.equal(await engine.generate("raw", { max_tokens: 2 }), "aa");
  });

  test("extra LogitsProcessors: one set per choice, run after logit_bias, isDone() ends the choice", async () => {
    const made: number[] = [];
    /** allows only "o", then "k", then done */
    const factory = (choice: number): LogitsProcessor[] => {
      made.push(choice);
      const script = [111, 107];
      let at = 0;
      return [
        {
          process(l) {
            const keep = script[at]!;
            for (let i = 0; i < l.length; i++) if (i !== keep) l[i] = -Infinity;
          },
          accept(t) {
            assert.equal(t, script[at]);
            at++;
          },
          isDone: () => at === script.length,
        },
      ];
    };
    const engine = await engineWith(new Recording());
    const res = await engine.chat.completions.create({ messages: MESSAGES, n: 2, temperature: 1, seed: 5, logit_bias: { "120": 100 } }, { logitsProcessors: factory });
    assert.deepEqual(made, [0, 1]);
    assert.deepEqual(res.choices.map((c) => [c.message.content, c.finish_reason]), [["ok", "stop"], ["ok", "stop"]]);
    assert.equal(res.usage.completion_tokens, 4);
    made.length = 0;
    assert.equal(await engine.generate("raw", { logitsProcessors: factory }), "ok");
    assert.deepEqual(made, [0]);
  });

  test("unsupported combinations are refused before anything runs, naming the fix", async () => {
    const backend = new Recording();
    const engine = await engineWith(backend);
    const calls = backend.calls.length;
    const bad: [object, RegExp][] = [
      [{ top_logprobs: 3 }, /top_logprobs needs logprobs: true/],
      [{ logprobs: true, top_logprobs: 21 }, /top_logprobs must be an integer in 0\.\.20/],
      [{ n: 17 }, /n must be an integer in 1\.\.16/],
      [{ n: 1.5 }, /n must be an integer/],
      [{ functions: [{ name: "f" }] }, /functions is not supported/],
      [{ response_format: { type: "yaml" } }, /response_format type "yaml" is not supported/],
      [{ tool_choice: "required" }, /tool_choice needs tools/],
      [{ response_format: { type: "json_object" }, tools: [{ type: "function", function: { name: "f" } }] }, /response_format and tools cannot be combined/],
    ];
    for (const [extra, message] of bad) await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, ...extra } as never), message);
    await assert.rejects(engine.generate("x", { n: 2 }), /use chat\.completions\.create for n > 1 or logprobs/);
    await assert.rejects(engine.generate("x", { logprobs: true }), /use chat\.completions\.create/);
    assert.equal(backend.calls.length, calls);
  });
});
