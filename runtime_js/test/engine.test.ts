import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { createEngine, type Engine } from "../src/engine.js";
import type { ChatCompletion, ChatCompletionChunk } from "../src/openai.js";
import type { ProgressReport } from "../src/loader.js";
import { EOS, FakeBackend, spell } from "./fake-backend.js";
import { type FakeBundle, type TestServer, makeChatBundle, serve, tmpDir } from "./fixtures.js";
import { collect, runtimeDir } from "./helpers.js";

const REPLY = "Héllo wörld 👋🏽 日本 — done.";
const MESSAGES = [{ role: "user", content: "Say hello" }];

let bundle: FakeBundle;
let server: TestServer;

before(async () => {
  bundle = makeChatBundle();
  server = await serve(bundle.dir);
});
after(() => server.close());

async function engineWith(backend: FakeBackend, extra: Parameters<typeof createEngine>[1] = {}): Promise<Engine> {
  return createEngine(server.url, { backend, cache: null, ...extra });
}

describe("engine", () => {
  test("loads through the backend with progress, then answers in the OpenAI shape", async () => {
    const reports: ProgressReport[] = [];
    const backend = new FakeBackend(spell(REPLY));
    const engine = await engineWith(backend, { onProgress: (p) => reports.push(p) });
    const phases = [...new Set(reports.map((r) => r.phase))];
    assert.deepEqual(phases, ["manifest", "files", "backend", "weights", "ready"]);
    assert.equal(backend.committed.size, bundle.manifest.shards.length);

    const res: ChatCompletion = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 100 });
    assert.equal(res.object, "chat.completion");
    assert.equal(res.model, "fake-chat");
    assert.match(res.id, /^chatcmpl-/);
    assert.deepEqual(res.choices[0].message, { role: "assistant", content: REPLY, refusal: null });
    assert.equal(res.choices[0].finish_reason, "stop");
    const promptIds = engine.tokenizer.encodeChat(MESSAGES);
    const replyBytes = new TextEncoder().encode(REPLY).length;
    assert.deepEqual(res.usage, {
      prompt_tokens: promptIds.length,
      completion_tokens: replyBytes + 1,
      total_tokens: promptIds.length + replyBytes + 1,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    // the backend saw the rendered ChatML prompt
    assert.deepEqual(backend.kv.slice(0, promptIds.length), promptIds);
    assert.equal(engine.tokenizer.decode(promptIds, { skipSpecialTokens: false }), "<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\n");
  });

  test("streaming yields whole characters and the same text; the last chunk has finish_reason and usage", async () => {
    const engine = await engineWith(new FakeBackend(spell(REPLY)));
    const chunks = await collect(await engine.chat.completions.create({ messages: MESSAGES, stream: true }));
    assert.deepEqual(chunks[0]?.choices[0].delta, { role: "assistant", content: "" });
    const deltas = chunks.slice(1, -1).map((c) => c.choices[0].delta.content!);
    assert.equal(deltas.join(""), REPLY);
    assert.ok(deltas.every((d) => d.length > 0 && !d.includes("\uFFFD")));
    assert.ok(deltas.includes("👋") && deltas.includes("日"));
    const last = chunks.at(-1)!;
    assert.equal(last.object, "chat.completion.chunk");
    assert.equal(last.choices[0].finish_reason, "stop");
    assert.deepEqual(last.choices[0].delta, {});
    assert.equal(last.usage!.completion_tokens, new TextEncoder().encode(REPLY).length + 1);
    assert.ok(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null && !c.usage));
    assert.ok(chunks.every((c) => c.id === chunks[0]?.id));
  });

  test("max_tokens ends with finish_reason length", async () => {
    const engine = await engineWith(new FakeBackend(spell(REPLY)));
    const res = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 5 });
    assert.equal(res.choices[0].message.content, "Héll"); // é is two tokens
    assert.equal(res.choices[0].finish_reason, "length");
    assert.equal(res.usage.completion_tokens, 5);
  });

  test("stop strings cut the text, also across tokens, and end with finish_reason stop", async () => {
    const engine = await engineWith(new FakeBackend(spell(REPLY)));
    const res = await engine.chat.completions.create({ messages: MESSAGES, stop: ["wörld", "zzz"] });
    assert.equal(res.choices[0].message.content, "Héllo ");
    assert.equal(res.choices[0].finish_reason, "stop");
    const chunks = await collect(await engine.chat.completions.create({ messages: MESSAGES, stream: true, stop: "👋" }));
    assert.equal(chunks.map((c) => c.choices[0].delta.content ?? "").join(""), "Héllo wörld ");
  });

  test("the same seed gives the same text; sampling parameters reach the sampler", async () => {
    // Flat logits over 'a'..'z' (97..122), then EOS after 40 steps.
    const flat = (step: number) => {
      const l = new Float32Array(258).fill(-Infinity);
      if (step >= 40) l[EOS] = 0;
      else for (let i = 97; i <= 122; i++) l[i] = 0;
      return l;
    };
    const engine = await engineWith(new FakeBackend(flat));
    const ask = async (seed: number, extra = {}) =>
      (await engine.chat.completions.create({ messages: MESSAGES, temperature: 1, seed, ...extra })).choices[0].message.content!;
    const a = await ask(7);
    assert.match(a, /^[a-z]{40}$/);
    assert.equal(await ask(7), a);
    assert.notEqual(await ask(8), a);
    assert.equal(await ask(9, { top_k: 1 }), "a".repeat(40)); // top_k 1 is greedy
    const streamed = await collect(await engine.chat.completions.create({ messages: MESSAGES, temperature: 1, seed: 7, stream: true }));
    assert.equal(streamed.map((c) => c.choices[0].delta.content ?? "").join(""), a);
  });

  test("a follow-up turn prefills only the new tokens", async () => {
    const backend = new FakeBackend(spell("ok"));
    const engine = await engineWith(backend);
    const first = await engine.chat.completions.create({ messages: MESSAGES });
    const second = [...MESSAGES, { role: "assistant", content: first.choices[0].message.content! }, { role: "user", content: "again" }];
    await engine.chat.completions.create({ messages: second });
    const p1 = engine.tokenizer.encodeChat(MESSAGES).length;
    const p2 = engine.tokenizer.encodeChat(second).length;
    const [, past] = backend.calls.at(-1)!.split("@");
    assert.ok(Number(past) > p1, backend.calls.join(", "));
    assert.equal(backend.calls.at(-1), `prefill ${p2 - Number(past)}@${past}`);
  });

  test("interrupt() ends a running stream with finish_reason abort", async () => {
    const engine = await engineWith(new FakeBackend(() => 97, { delayMs: 1 }));
    const chunks: ChatCompletionChunk[] = [];
    for await (const c of await engine.chat.completions.create({ messages: MESSAGES, stream: true, max_tokens: 1000 })) {
      chunks.push(c);
      if (chunks.length === 5) engine.interrupt();
    }
    assert.equal(chunks.at(-1)!.choices[0].finish_reason, "abort");
    assert.ok(chunks.at(-1)!.usage!.completion_tokens < 10);
    // an interrupt before a request does not affect it
    const next = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 3 });
    assert.equal(next.choices[0].finish_reason, "length");
  });

  test("a request's signal rejects it with an AbortError, running or queued; the engine stays usable", async () => {
    const engine = await engineWith(new FakeBackend(() => 97, { delayMs: 1 }));
    const ctl = new AbortController();
    const running = engine.chat.completions.create({ messages: MESSAGES, max_tokens: 1000 }, { signal: ctl.signal });
    const queued = engine.generate("next", { max_tokens: 3, signal: ctl.signal });
    setTimeout(() => ctl.abort(), 15);
    await assert.rejects(running, { name: "AbortError" });
    await assert.rejects(queued, { name: "AbortError" });
    assert.equal((await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 2 })).choices[0].finish_reason, "length");
    const dead = new AbortController();
    dead.abort();
    await assert.rejects(engineWith(new FakeBackend(() => 97), { signal: dead.signal }), { name: "AbortError" });
  });

  test("requests run one at a time, in order", async () => {
    const engine = await engineWith(new FakeBackend(spell("xyz"), { delayMs: 1 }));
    const [a, b, c] = await Promise.all([
      engine.chat.completions.create({ messages: MESSAGES }),
      engine.generate("hello"),
      engine.chat.completions.create({ messages: [{ role: "user", content: "other" }], max_tokens: 2 }),
    ]);
    assert.equal(a.choices[0].message.content, "xyz");
    assert.equal(b, "xyz");
    assert.equal(c.choices[0].message.content, "xy");
  });

  test("generate() takes a raw prompt and streams through onText", async () => {
    const backend = new FakeBackend(spell("ünïcode"));
    const engine = await engineWith(backend);
    const parts: string[] = [];
    const text = await engine.generate("raw prompt", { onText: (d) => parts.push(d), max_tokens: 50 });
    assert.equal(text, "ünïcode");
    assert.equal(parts.join(""), text);
    assert.equal(new TextDecoder().decode(new Uint8Array(backend.kv.slice(0, 10))), "raw prompt");
  });

  test("the context window bounds prompt and generation", async () => {
    const small = makeChatBundle({ contextWindow: 48 });
    const srv = await serve(small.dir);
    try {
      const engine = await createEngine(srv.url, { backend: new FakeBackend(() => 97), cache: null });
      assert.equal(engine.contextWindow, 48);
      const res = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 1000 });
      const prompt = res.usage.prompt_tokens;
      assert.equal(res.usage.completion_tokens, 48 - prompt);
      assert.equal(res.choices[0].finish_reason, "length");
      await assert.rejects(engine.chat.completions.create({ messages: [{ role: "user", content: "x".repeat(60) }] }), /context window is 48/);
      const narrower = await createEngine(srv.url, { backend: new FakeBackend(() => 97, { contextWindow: 40 }), cache: null });
      assert.equal(narrower.contextWindow, 40);
    } finally {
      await srv.close();
    }
  });

  test("a backend error rejects the request and resets the cache; the engine keeps working", async () => {
    const backend = new FakeBackend(spell("abcdef"), { failDecodeAt: 28 });
    const engine = await engineWith(backend);
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES }), /device lost/);
    assert.equal(backend.calls.at(-1), "reset");
    const ok = await engine.chat.completions.create({ messages: MESSAGES, max_tokens: 2 });
    assert.equal(ok.choices[0].message.content, "ab");
  });

  test("bad requests are rejected before anything runs", async () => {
    const backend = new FakeBackend(spell("x"));
    const engine = await engineWith(backend);
    const calls = backend.calls.length;
    await assert.rejects(engine.chat.completions.create({ messages: [] }), /non-empty/);
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, n: 0 }), /n must be an integer in 1\.\.16/);
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES, temperature: -1 }), RangeError);
    await assert.rejects(engine.chat.completions.create({ messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] }), /only text parts/);
    assert.equal(backend.calls.length, calls);
    const parts = await engine.chat.completions.create({ messages: [{ role: "user", content: [{ type: "text", text: "Say " }, { type: "text", text: "hello" }] }] });
    assert.equal(parts.usage.prompt_tokens, engine.tokenizer.encodeChat(MESSAGES).length);
  });

  test("unload() frees the backend; later requests reject", async () => {
    const backend = new FakeBackend(() => 97, { delayMs: 1 });
    const engine = await engineWith(backend);
    const running = engine.chat.completions.create({ messages: MESSAGES, max_tokens: 1000 });
    await new Promise((r) => setTimeout(r, 20));
    await engine.unload();
    assert.equal((await running).choices[0].finish_reason, "abort");
    assert.equal(backend.calls.at(-1), "unload");
    await assert.rejects(engine.chat.completions.create({ messages: MESSAGES }), /unloaded/);
  });

  test("a failed load unloads the backend and names the shard", async () => {
    server.faults.set(bundle.manifest.shards[1].file, { fault: "corrupt", times: Infinity });
    const backend = new FakeBackend(spell("x"));
    try {
      await assert.rejects(engineWith(backend), /shard 1 .*sha256 mismatch/);
      assert.equal(backend.calls.at(-1), "unload");
      assert.ok(!backend.committed.has(1));
    } finally {
      server.faults.clear();
    }
  });

  test("a cached reload makes no shard or tokenizer request", async () => {
    const cacheDir = tmpDir();
    await createEngine(server.url, { backend: new FakeBackend(spell("x")), cacheDir });
    const n = server.log.length;
    const backend = new FakeBackend(spell("x"));
    await createEngine(server.url, { backend, cacheDir });
    assert.deepEqual(server.log.slice(n), ["manifest.json"]);
    assert.equal(backend.loadStats!.cachedShards, bundle.manifest.shards.length);
  });
});

describe("the built module", () => {
  test("dist/llmpack.js exports the API and runs a chat in Node", async () => {
    const mod = await import(pathToFileURL(path.join(runtimeDir(), "dist", "llmpack.js")).href);
    for (const name of ["createEngine", "registerBackend", "BundleLoader", "ShardLayout", "Sampler", "BundleTokenizer", "evalExpr"]) {
      assert.equal(typeof mod[name], "function", name);
    }
    mod.registerBackend("fake-test", () => new FakeBackend(spell("from the bundle")));
    const engine = await mod.createEngine(bundle.dir, { backend: "fake-test", cache: null });
    const res = await engine.chat.completions.create({ messages: MESSAGES });
    assert.equal(res.choices[0].message.content, "from the bundle");
    await assert.rejects(mod.createEngine(bundle.dir, { backend: "nope", cache: null }), /no backend named "nope"/);
  });
});
