/**
 * Prompt-lookup speculative decoding: the drafting index (src/prompt_lookup.ts) against
 * a plain scan of the sequence, and the session's use of it (src/session.ts) over the
 * fake backend, whose verify runs the drafted tokens one by one and checks every
 * position: the same requests with and without speculation must give the same answer
 * (text, finish_reason, token counts, logprobs), greedy and seeded, with max_tokens, stop
 * strings, n = 2, a grammar and an abort inside a verified run, while drafts are
 * actually accepted. The same on the real backends: speculative-backends.test.ts.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createEngine, type Engine, type EngineOptions, type RequestOptions } from "../src/engine.js";
import type { ChatCompletion, ChatCompletionChunk, ChatCompletionRequest } from "../src/openai.js";
import { DEFAULT_SPECULATIVE, DraftBudget, PromptLookup, speculativeOptions } from "../src/prompt_lookup.js";
import { EOS, FakeBackend } from "./fake-backend.js";
import { type FakeBundle, type TestServer, makeChatBundle, serve } from "./fixtures.js";

/** What follows the most recent earlier occurrence of the longest suffix n-gram, by a plain scan. */
function scanDraft(seq: number[], maxNgram: number, minNgram: number, maxDraft: number): number[] {
  for (let n = Math.min(maxNgram, seq.length); n >= minNgram; n--) {
    const suffix = seq.slice(seq.length - n);
    for (let end = seq.length - 1; end >= n; end--) {
      if (suffix.every((t, i) => seq[end - n + i] === t)) return seq.slice(end, Math.min(end + maxDraft, seq.length));
    }
  }
  return [];
}

describe("PromptLookup", () => {
  test("no earlier occurrence: no draft", () => {
    assert.deepEqual(new PromptLookup([1, 2, 3, 4, 5]).draft(), []);
    assert.deepEqual(new PromptLookup([]).draft(), []);
    assert.deepEqual(new PromptLookup([7]).draft(), []);
  });

  test("the longest suffix n-gram wins over a more recent shorter one", () => {
    const seq = [1, 2, 3, 9, 8, 5, 2, 3, 7, 6, 1, 2, 3];
    assert.deepEqual(new PromptLookup(seq, { maxNgram: 3, minNgram: 1, maxDraft: 3 }).draft(), [9, 8, 5]);
    // without 3-grams: [2, 3] most recently continued with 7
    assert.deepEqual(new PromptLookup(seq, { maxNgram: 2, minNgram: 1, maxDraft: 3 }).draft(), [7, 6, 1]);
  });

  test("the most recent occurrence; the draft stops at the end of the sequence", () => {
    const seq = [4, 5, 1, 1, 4, 5, 2, 4, 5];
    assert.deepEqual(new PromptLookup(seq, { maxNgram: 2, minNgram: 2, maxDraft: 8 }).draft(), [2, 4, 5]);
    assert.deepEqual(new PromptLookup(seq, { maxNgram: 2, minNgram: 2, maxDraft: 8 }).draft(2), [2, 4]);
    assert.deepEqual(new PromptLookup(seq, { maxNgram: 2, minNgram: 2, maxDraft: 1 }).draft(), [2]);
    assert.deepEqual(new PromptLookup(seq).draft(0), []);
  });

  test("minNgram: a single repeated token drafts only when it is 1", () => {
    const seq = [3, 8, 9, 6, 3];
    assert.deepEqual(new PromptLookup(seq, { minNgram: 1 }).draft(), [8, 9, 6, 3]);
    assert.deepEqual(new PromptLookup(seq, { minNgram: 2 }).draft(), []);
  });

  test("pushing token by token equals a plain scan at every length", () => {
    let h = 12345;
    const rand = (k: number) => ((h = (Math.imul(h, 1103515245) + 12345) >>> 0) >>> 8) % k;
    const cases: [number, number, number, number][] = [[3, 1, 5, 4], [4, 2, 8, 3], [2, 2, 3, 6], [1, 1, 2, 5]];
    for (const [maxNgram, minNgram, maxDraft, vocab] of cases) {
      const lookup = new PromptLookup([], { maxNgram, minNgram, maxDraft });
      const seq: number[] = [];
      for (let i = 0; i < 300; i++) {
        const t = rand(vocab);
        seq.push(t);
        lookup.push(t);
        assert.deepEqual(lookup.draft(), scanDraft(seq, maxNgram, minNgram, maxDraft), `at ${i} of ${seq} (${maxNgram}/${minNgram}/${maxDraft})`);
      }
      assert.equal(lookup.length, 300);
    }
  });

  test("DraftBudget: long drafts where a draft token is cheap, none where it costs a decode step", () => {
    const cheap = new DraftBudget();
    assert.equal(cheap.length(8), 8); // (nothing measured: the first draft measures)
    cheap.decoded(10);
    for (let i = 0; i < 5; i++) cheap.verified(8, 6, 10 + 8 * 0.3); // 0.3 ms a draft token, 6 of 8 accepted
    assert.ok(cheap.acceptance > 0.8);
    assert.equal(cheap.length(8), 8);
    assert.equal(cheap.length(3), 3);
    // a draft token costs as much as a decode step: drafting never pays
    const dear = new DraftBudget();
    dear.decoded(10);
    for (let i = 0; i < 5; i++) dear.verified(4, 3, 10 + 4 * 10);
    assert.equal(dear.length(8), 0);
    // unmeasured lengths: between measured neighbours, then along the last slope
    assert.equal(dear.cost(2), 30);
    assert.equal(dear.cost(6), 70);
    // cheap short drafts, dear long ones (a CPU backend): the short draft wins
    const cpu = new DraftBudget();
    cpu.decoded(10);
    for (let i = 0; i < 10; i++) {
      cpu.verified(8, 6, 60);
      cpu.verified(2, 2, 12);
    }
    assert.equal(cpu.length(8), 2);
    // half a step per token: short drafts while the acceptance is high, none once it is low
    const half = new DraftBudget();
    half.decoded(10);
    for (let i = 0; i < 20; i++) half.verified(4, 3, 10 + 4 * 5); // acceptance 3/4: best k = 1
    const k = half.length(8);
    assert.ok(k >= 1 && k < 8, `${k}`);
    half.restart();
    for (let i = 0; i < 20; i++) half.verified(2, 0, 10 + 2 * 5);
    assert.equal(half.length(8), 0);
    // declined drafts in a row: then a one-token probe
    const lengths = Array.from({ length: DraftBudget.PROBE_AFTER - 1 }, () => half.length(8)); // (one declined above)
    assert.equal(lengths.at(-1), 1);
    assert.equal(lengths.filter((n) => n > 0).length, 1);
  });

  test("options: defaults filled in; a bad one is a RangeError naming it", () => {
    assert.deepEqual(speculativeOptions({ maxDraft: 4, minNgram: undefined }), { ...DEFAULT_SPECULATIVE, maxDraft: 4 });
    assert.throws(() => speculativeOptions({ maxDraft: 0 }), /speculative\.maxDraft must be a positive integer, got 0/);
    assert.throws(() => speculativeOptions({ maxNgram: 1.5 }), /speculative\.maxNgram/);
    assert.throws(() => speculativeOptions({ maxNgram: 2, minNgram: 3 }), /minNgram \(3\) must not exceed maxNgram \(2\)/);
    assert.throws(() => speculativeOptions({ adaptive: "yes" as unknown as boolean }), /speculative\.adaptive must be true or false/);
  });
});

// ---------------------------------------------------------------------------------------
// The session over the fake backend (byte tokenizer: one token per UTF-8 byte)

const VOCAB = 258;
const TYPOS = "The quick brwon fox jumsp over teh lazy dog, and then the quick brown fox sleeps under the old oak tree.";
const FIXED = "The quick brown fox jumps over the lazy dog, and then the quick brown fox sleeps under the old oak tree.";
const GROUNDED = [{ role: "user", content: `Fix the typos: ${TYPOS}` }];
const OPEN = [{ role: "user", content: "Tell me something." }];

/** The prompt's last "<|im_start|>assistant\n" ends here: the answer's bytes count from it. */
function answerStart(history: number[]): number {
  const bos = history.lastIndexOf(256);
  return bos < 0 ? history.length : bos + 1 + "assistant\n".length;
}

/**
 * A model that copies `target`: its next byte (then EOS) gets logit 8, every other token
 * noise in [-2, 2) from a hash of the whole history (a token fed at a wrong position
 * changes every later logit). A function of the history alone, as a real model is.
 */
function copyingModel(target: string): (step: number, history: number[]) => Float32Array {
  const bytes = new TextEncoder().encode(target);
  return (_step, history) => {
    let h = 0x9e3779b9;
    for (const t of history) h = Math.imul(h ^ t, 0x85ebca6b) ^ (h >>> 13);
    const l = new Float32Array(VOCAB);
    for (let i = 0; i < VOCAB; i++) {
      h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) + i;
      l[i] = ((h >>> 8) / 2 ** 24) * 4 - 2;
    }
    l[bytes[history.length - answerStart(history)] ?? EOS]! = 8;
    return l;
  };
}

let bundle: FakeBundle;
let server: TestServer;
before(async () => {
  bundle = makeChatBundle({ contextWindow: 512, generation: { max_new_tokens: 200 } });
  server = await serve(bundle.dir);
});
after(() => server.close());

type Backends = { plain: FakeBackend; spec: FakeBackend; off: Engine; on: Engine };

async function pair(backendOpts: ConstructorParameters<typeof FakeBackend>[1] = {}, engineOpts: EngineOptions = {}, target = FIXED): Promise<Backends> {
  const plain = new FakeBackend(copyingModel(target), { contextWindow: 512 });
  const spec = new FakeBackend(copyingModel(target), { contextWindow: 512, verifyMaxTokens: 16, ...backendOpts });
  const off = await createEngine(server.url, { backend: plain, cache: null });
  // (fixed draft lengths: adaptive ones follow the measured call times, which are noise here)
  const on = await createEngine(server.url, { backend: spec, cache: null, speculative: { adaptive: false }, ...engineOpts });
  return { plain, spec, off, on };
}

/** The parts of a completion that must not depend on speculation. */
function answer(r: ChatCompletion) {
  return {
    choices: r.choices.map((c) => ({ content: c.message.content, finish: c.finish_reason, logprobs: c.logprobs })),
    usage: r.usage,
    decodeTokens: r.timings.decode_tokens,
  };
}

async function same(b: Backends, req: ChatCompletionRequest, opts?: RequestOptions): Promise<ChatCompletion> {
  const off = (await b.off.chat.completions.create({ ...req, stream: false }, opts)) as ChatCompletion;
  const on = (await b.on.chat.completions.create({ ...req, stream: false }, opts)) as ChatCompletion;
  assert.deepEqual(answer(on), answer(off));
  assert.equal(off.timings.verify_steps, undefined);
  return on;
}

describe("speculative decoding in the session (fake backend)", () => {
  test("greedy, grounded: the same answer in fewer backend calls; drafts accepted", async () => {
    const b = await pair();
    const on = await same(b, { messages: GROUNDED, temperature: 0 });
    assert.equal(on.choices[0].message.content, FIXED);
    const t = on.timings;
    assert.ok(t.verify_steps! > 0 && t.accepted_tokens! > 40, JSON.stringify(t));
    assert.ok(t.accepted_tokens! <= t.draft_tokens!);
    assert.ok(b.spec.runs < b.plain.runs / 2, `${b.spec.runs} backend calls against ${b.plain.runs}`);
    // every verify fits the backend's limit
    for (const c of b.spec.calls) if (c.startsWith("verify")) assert.ok(Number(c.split(" ")[1]!.split("@")[0]) <= 16, c);
    // the cache holds the prompt and the answer (a rejected draft's rows were overwritten)
    const prompt = b.on.tokenizer.encodeChat(GROUNDED);
    const reply = [...new TextEncoder().encode(FIXED)];
    assert.deepEqual(b.spec.kv.slice(0, prompt.length + reply.length), [...prompt, ...reply]);
  });

  test("seeded sampling at temperature 1, with logprobs: the same tokens and logprobs", async () => {
    const b = await pair();
    for (const seed of [1, 2, 3]) {
      const on = await same(b, { messages: GROUNDED, temperature: 1, seed, logprobs: true, top_logprobs: 2 });
      assert.ok(on.timings.accepted_tokens! > 0, `seed ${seed}: ${JSON.stringify(on.timings)}`);
    }
  });

  test("adaptive draft lengths (the default): the same answers", async () => {
    const b = await pair({}, { speculative: true });
    await same(b, { messages: GROUNDED, temperature: 0 });
    await same(b, { messages: GROUNDED, temperature: 1, seed: 1 });
  });

  test("an open-ended prompt (nothing to copy) and the engine default off", async () => {
    const b = await pair();
    await same(b, { messages: OPEN, temperature: 0 });
    const engine = await createEngine(server.url, { backend: new FakeBackend(copyingModel(FIXED), { verifyMaxTokens: 16 }), cache: null });
    const r = await engine.chat.completions.create({ messages: GROUNDED, temperature: 0 });
    assert.equal(r.timings.verify_steps, undefined);
    assert.ok(!(engine.backend as FakeBackend).calls.some((c) => c.startsWith("verify")));
    // on for one request
    const one = await engine.chat.completions.create({ messages: GROUNDED, temperature: 0 }, { speculative: { maxDraft: 4, adaptive: false } });
    assert.equal(one.choices[0].message.content, FIXED);
    assert.ok(one.timings.accepted_tokens! > 0);
    assert.ok((engine.backend as FakeBackend).calls.every((c) => !c.startsWith("verify") || Number(c.split(" ")[1]!.split("@")[0]) <= 5));
  });

  test("max_tokens reached inside a verified run; a stop string inside one", async () => {
    const b = await pair();
    for (const max_tokens of [1, 2, 37, 61]) {
      const on = await same(b, { messages: GROUNDED, temperature: 0, max_tokens });
      assert.equal(on.usage.completion_tokens, max_tokens);
      assert.equal(on.choices[0].finish_reason, "length");
    }
    const on = await same(b, { messages: GROUNDED, temperature: 0, stop: ["the old"] });
    assert.equal(on.choices[0].message.content, FIXED.slice(0, FIXED.indexOf("the old")));
    assert.equal(on.choices[0].finish_reason, "stop");
  });

  test("greedy where the backend picks the tokens (decodeArgmax, verifyArgmax): the same answers; rows only for logprobs or processors", async () => {
    const b = await pair({ argmax: true });
    const count = (kind: string) => b.spec.calls.filter((c) => c.startsWith(`${kind} `)).length;
    const greedy = async (req: Partial<ChatCompletionRequest>) => {
      b.spec.calls.length = 0;
      return same(b, { messages: GROUNDED, temperature: 0, ...req });
    };
    const on = await greedy({});
    assert.equal(on.choices[0].message.content, FIXED);
    assert.ok(on.timings.accepted_tokens! > 40, JSON.stringify(on.timings));
    assert.equal(count("verifyArgmax"), on.timings.verify_steps);
    assert.equal(count("verify"), 0);
    for (const req of [{ max_tokens: 1 }, { max_tokens: 2 }, { max_tokens: 37 }, { max_tokens: 61 }, { stop: ["the old"] }]) {
      const r = await greedy(req);
      assert.equal(count("verifyArgmax"), r.timings.verify_steps ?? 0, JSON.stringify(req));
    }
    // logprobs, logit_bias (a processor): the rows are read, as without the backend's argmax
    for (const req of [{ logprobs: true }, { logit_bias: { "200": -100 } }]) {
      const r = await greedy(req);
      assert.ok(r.timings.verify_steps! > 0 && count("verify") === r.timings.verify_steps, JSON.stringify(req));
      assert.equal(count("verifyArgmax"), 0, JSON.stringify(req));
    }
  });

  test("n = 2 seeded: each choice as without speculation", async () => {
    const b = await pair();
    const on = await same(b, { messages: GROUNDED, temperature: 1, seed: 7, n: 2 });
    assert.ok(on.timings.accepted_tokens! > 0);
  });

  test("kvRewindLimit and verifyMaxTokens bound the draft", async () => {
    const b = await pair({ kvRewindLimit: 2, verifyMaxTokens: 16 });
    const on = await same(b, { messages: GROUNDED, temperature: 1, seed: 5 });
    assert.ok(on.timings.accepted_tokens! > 0);
    const sizes = b.spec.calls.filter((c) => c.startsWith("verify")).map((c) => Number(c.split(" ")[1]!.split("@")[0]));
    assert.ok(sizes.length && Math.max(...sizes) === 3, `${sizes}`);
    // a backend that verifies at most one token has nothing to draft with: plain decoding
    const one = await pair({ verifyMaxTokens: 1 });
    const r = await same(one, { messages: GROUNDED, temperature: 0 });
    assert.equal(r.timings.verify_steps, undefined);
  });

  test("json_object grammar: the same answer, drafts accepted", async () => {
    const json = JSON.stringify({ fixed: FIXED });
    const b = await pair({}, {}, json);
    const messages = [{ role: "user", content: `Copy: ${json}` }];
    const on = await same(b, { messages, temperature: 0, response_format: { type: "json_object" } });
    assert.equal(on.choices[0].message.content, json);
    assert.ok(on.timings.accepted_tokens! > 40, JSON.stringify(on.timings));
  });

  test("an abort inside a verified run; the next request answers as on a fresh engine", async () => {
    const b = await pair({ delayMs: 3 });
    await b.off.chat.completions.create({ messages: GROUNDED, temperature: 0 }); // (the same cached prompt for both)
    const ctl = new AbortController();
    const chunks: ChatCompletionChunk[] = [];
    await assert.rejects(async () => {
      for await (const c of await b.on.chat.completions.create({ messages: GROUNDED, temperature: 0, stream: true }, { signal: ctl.signal })) {
        chunks.push(c);
        if (chunks.length === 30) ctl.abort();
      }
    }, { name: "AbortError" });
    const text = chunks.map((c) => c.choices[0].delta.content ?? "").join("");
    assert.ok(FIXED.startsWith(text) && text.length >= 28, text);
    await same(b, { messages: GROUNDED, temperature: 1, seed: 9 });
  });

  test("bad options are refused before anything runs", async () => {
    await assert.rejects(createEngine(server.url, { backend: new FakeBackend(copyingModel(FIXED)), cache: null, speculative: { maxDraft: -1 } }), RangeError);
    const b = await pair();
    await assert.rejects(b.on.chat.completions.create({ messages: GROUNDED }, { speculative: { minNgram: 0 } }), /speculative\.minNgram/);
    assert.equal(b.spec.calls.filter((c) => !c.startsWith("reset")).length, 0);
  });
});
