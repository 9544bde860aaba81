/**
 * The chat parameters on the real backends: a tiny random Llama packaged by the Python
 * packager (test/tiny-bundle.ts), run on the Wasm backend in Node and on WebGPU through
 * Dawn (SwiftShader where there is no GPU). Where the backend matters: logprobs against
 * a softmax of the logits the backend returned, logit_bias, n = 2 (the KV cache rolled
 * back to the prompt) against separate requests, an aborted stream followed by a request
 * that must answer as on a fresh engine, prefix reuse (cached_tokens) with output equal
 * to a fresh engine's, and plan.json's kv_rewind_limit.
 */
import "./gpu-env.js";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Backend } from "../src/backend.js";
import { createEngine, type Engine } from "../src/engine.js";
import type { BundleLoader } from "../src/loader.js";
import type { Manifest } from "../src/manifest.js";
import type { ChatCompletion, ChatCompletionRequest, ChatCompletionTokenLogprob } from "../src/openai.js";
import { WasmBackend } from "../src/wasm/index.js";
import { WebGpuBackend } from "../src/webgpu/index.js";
import { tmpDir } from "./fixtures.js";
import { gpuSkip } from "./gpu-env.js";
import { collect, requireComponent } from "./helpers.js";
import { tinyBundle } from "./tiny-bundle.js";

const made = tinyBundle();
const skipPython = requireComponent("python", typeof made !== "string" && made.missing);
const BUNDLE = typeof made === "string" ? made : "";
const skipGpu = await gpuSkip();

/** A backend that keeps a copy of every logits vector it returns and the tokens it was given. */
class Recorder implements Backend {
  logits: Float32Array[] = [];
  fed: number[] = [];
  constructor(readonly inner: Backend) {}
  get name() {
    return this.inner.name;
  }
  get label() {
    return this.inner.label;
  }
  get contextWindow() {
    return this.inner.contextWindow;
  }
  get kvRewindLimit() {
    return this.inner.kvRewindLimit;
  }
  load(m: Manifest, loader: BundleLoader) {
    return this.inner.load(m, loader);
  }
  async prefill(tokens: Int32Array, past: number) {
    this.fed.push(...tokens);
    return this.keep(await this.inner.prefill(tokens, past));
  }
  async decode(token: number, pos: number) {
    this.fed.push(token);
    return this.keep(await this.inner.decode(token, pos));
  }
  reset() {
    this.inner.reset();
  }
  unload() {
    return this.inner.unload();
  }
  private keep(l: Float32Array) {
    this.logits.push(l.slice());
    return l;
  }
}

function logSoftmax(l: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of l) m = Math.max(m, v);
  let z = 0;
  for (const v of l) z += Math.exp(v - m);
  const lse = m + Math.log(z);
  return Float64Array.from(l, (v) => v - lse);
}

/** Logprob entries agree (same tokens, logprobs within tol). */
function sameLogprobs(a: ChatCompletionTokenLogprob[], b: ChatCompletionTokenLogprob[], tol = 1e-4): void {
  assert.equal(a.length, b.length);
  a.forEach((x, i) => {
    const y = b[i]!;
    assert.equal(x.token, y.token);
    assert.ok(Math.abs(x.logprob - y.logprob) <= tol, `${x.logprob} vs ${y.logprob} at ${i}`);
    assert.deepEqual(x.top_logprobs.map((t) => t.token), y.top_logprobs.map((t) => t.token));
  });
}

const SYSTEM = { role: "system", content: "You are a helpful assistant." };
const ASK_B = [SYSTEM, { role: "user", content: "What is the capital of France?" }];
const ASK_A = [SYSTEM, { role: "user", content: "Name three colours." }];

/** A copy of the bundle whose plan.json has kv_rewind_limit (manifest's file entry updated). */
function withRewindLimit(limit: number): string {
  const dir = path.join(tmpDir("llmpack-rewind-"), "bundle");
  cpSync(BUNDLE, dir, { recursive: true });
  const plan = JSON.parse(readFileSync(path.join(dir, "plan.json"), "utf8"));
  const text = JSON.stringify({ ...plan, kv_rewind_limit: limit });
  writeFileSync(path.join(dir, "plan.json"), text);
  const manifest = JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8"));
  const entry = manifest.files.find((f: { path: string }) => f.path === "plan.json");
  entry.bytes = Buffer.byteLength(text);
  entry.sha256 = createHash("sha256").update(text).digest("hex");
  writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(manifest));
  return dir;
}

const BACKENDS: [string, () => Backend, string | false][] = [
  ["wasm", () => new WasmBackend({ threads: 1 }), skipPython],
  ["webgpu", () => new WebGpuBackend(), skipPython || skipGpu],
];

for (const [name, make, skip] of BACKENDS) {
  describe(`chat parameters on the ${name} backend`, { skip }, () => {
    let engine: Engine;
    let rec: Recorder;
    /** B answered by the engine while its cache was empty */
    let freshB: ChatCompletion;
    /** the token ids of B's first step, most likely first */
    let firstStep: number[];
    const askB = { messages: ASK_B, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 4 } satisfies ChatCompletionRequest;

    before(async () => {
      rec = new Recorder(make());
      engine = await createEngine(BUNDLE, { backend: rec, cache: null });
      freshB = await engine.chat.completions.create(askB);
      const l0 = rec.logits[0]!;
      firstStep = Array.from(l0.keys()).sort((x, y) => l0[y]! - l0[x]! || x - y);
      assert.equal(freshB.usage.prompt_tokens_details!.cached_tokens, 0);
    });
    after(() => engine?.unload());

    test("logprobs, streamed and not: the softmax of the backend's logits", async () => {
      for (const stream of [false, true]) {
        const n = rec.logits.length;
        const fed = rec.fed.length;
        const req = { messages: ASK_A, max_tokens: 6, temperature: 0.9, seed: 4, logprobs: true, top_logprobs: 3 };
        const content = stream
          ? (await collect(await engine.chat.completions.create({ ...req, stream: true }))).flatMap((c) => c.choices[0].logprobs?.content ?? [])
          : (await engine.chat.completions.create(req)).choices[0].logprobs!.content!;
        assert.equal(content.length, 6);
        const logits = rec.logits.slice(n);
        // the tokens chosen: each step's token is fed to the next call
        const chosen = rec.fed.slice(fed).slice(-5);
        content.forEach((entry, i) => {
          const want = logSoftmax(logits[i]!);
          const best = Array.from(want.keys()).sort((x, y) => want[y]! - want[x]! || x - y).slice(0, 3);
          assert.deepEqual(entry.top_logprobs.map((t) => t.token), best.map((id) => engine.tokenizer.tokenPiece(id).text));
          entry.top_logprobs.forEach((t, k) => assert.ok(Math.abs(t.logprob - want[best[k]!]!) < 1e-6));
          if (i < chosen.length) {
            const id = chosen[i]!;
            assert.equal(entry.token, engine.tokenizer.tokenPiece(id).text);
            assert.deepEqual(entry.bytes, engine.tokenizer.tokenPiece(id).bytes);
            assert.ok(Math.abs(entry.logprob - want[id]!) < 1e-6);
          }
        });
      }
    });

    test("logprobs' bytes spell the answer", () => {
      const bytes = freshB.choices[0].logprobs!.content!.flatMap((c) => c.bytes!);
      assert.equal(new TextDecoder().decode(Uint8Array.from(bytes)), freshB.choices[0].message.content);
    });

    test("logit_bias forces and forbids a token", async () => {
      const [best, second] = firstStep.map((id) => engine.tokenizer.tokenPiece(id).text);
      assert.equal(freshB.choices[0].logprobs!.content![0]!.token, best);
      const banned = await engine.chat.completions.create({ ...askB, logit_bias: { [String(firstStep[0])]: -100 } });
      const tokens = banned.choices[0].logprobs!.content!.map((c) => c.token);
      assert.ok(!tokens.includes(best!), tokens.join("|"));
      // greedy falls to the runner-up of the first step
      assert.equal(tokens[0], second);
      const forced = await engine.chat.completions.create({ ...askB, logit_bias: { "300": 100 } });
      const piece = engine.tokenizer.tokenPiece(300).text;
      assert.deepEqual(forced.choices[0].logprobs!.content!.map((c) => c.token), Array(8).fill(piece));
      assert.ok(forced.choices[0].logprobs!.content!.every((c) => c.logprob > -1e-3));
      await assert.rejects(engine.chat.completions.create({ ...askB, logit_bias: { "320": 1 } }), /token id 320 is outside the vocabulary \(0\.\.319\)/);
    });

    test("n = 2 equals two requests with seeds s and s + 1", async () => {
      const req = { messages: ASK_A, max_tokens: 7, temperature: 1, logprobs: true };
      const both = await engine.chat.completions.create({ ...req, n: 2, seed: 21 });
      const one = await engine.chat.completions.create({ ...req, seed: 21 });
      const two = await engine.chat.completions.create({ ...req, seed: 22 });
      assert.equal(both.choices[0].message.content, one.choices[0].message.content);
      assert.equal(both.choices[1]!.message.content, two.choices[0].message.content);
      sameLogprobs(both.choices[0].logprobs!.content!, one.choices[0].logprobs!.content!);
      sameLogprobs(both.choices[1]!.logprobs!.content!, two.choices[0].logprobs!.content!);
      const chunks = await collect(await engine.chat.completions.create({ ...req, n: 2, seed: 21, stream: true }));
      const text = (i: number) => chunks.filter((c) => c.choices[0].index === i).map((c) => c.choices[0].delta.content ?? "").join("");
      assert.deepEqual([text(0), text(1)], both.choices.map((c) => c.message.content));
    });

    test("prefix reuse: a prompt sharing a prefix answers as on a fresh engine, cached_tokens = the shared prefix", async () => {
      await engine.chat.completions.create({ messages: ASK_A, max_tokens: 4, temperature: 0 });
      const again = await engine.chat.completions.create(askB);
      const a = engine.tokenizer.encodeChat(ASK_A);
      const b = engine.tokenizer.encodeChat(ASK_B);
      let shared = 0;
      while (a[shared] === b[shared]) shared++;
      assert.ok(shared > 5 && shared < b.length);
      assert.equal(again.usage.prompt_tokens_details!.cached_tokens, shared);
      assert.equal(again.choices[0].message.content, freshB.choices[0].message.content);
      sameLogprobs(again.choices[0].logprobs!.content!, freshB.choices[0].logprobs!.content!);
    });

    test("an aborted stream, then a request that answers as on a fresh engine", async () => {
      const ctl = new AbortController();
      let chunks = 0;
      await assert.rejects(
        (async () => {
          const stream = await engine.chat.completions.create({ messages: ASK_A, max_tokens: 40, temperature: 1, seed: 1, stream: true }, { signal: ctl.signal });
          for await (const _ of stream) if (++chunks === 3) ctl.abort();
        })(),
        { name: "AbortError" },
      );
      assert.equal(chunks, 3);
      const next = await engine.chat.completions.create(askB);
      assert.equal(next.choices[0].message.content, freshB.choices[0].message.content);
      sameLogprobs(next.choices[0].logprobs!.content!, freshB.choices[0].logprobs!.content!);
    });

    // (a second engine: on Wasm only, where it loads in a blink; WebGPU reads the field the
    // same way, by parsePlan, and a second load would compile every kernel again on SwiftShader)
    if (name !== "wasm") return;
    test("plan.json's kv_rewind_limit: rollbacks past it prefill afresh, with the same output", async () => {
      const limited = new Recorder(make());
      const other = await createEngine(withRewindLimit(2), { backend: limited, cache: null });
      try {
        assert.equal(other.backend.kvRewindLimit, 2);
        const req = { messages: ASK_A, max_tokens: 5, temperature: 1, seed: 21, n: 2 };
        const mine = await other.chat.completions.create(req);
        const p = mine.usage.prompt_tokens;
        // the second choice rolls back 4 positions: the prompt is prefilled again
        assert.equal(limited.fed.length, 2 * p + 4 + 4);
        const theirs = await engine.chat.completions.create(req);
        assert.deepEqual(mine.choices.map((c) => c.message.content), theirs.choices.map((c) => c.message.content));
        // B after A shares a prefix, but the rollback passes the limit: nothing is reused
        const b = await other.chat.completions.create(askB);
        assert.equal(b.usage.prompt_tokens_details!.cached_tokens, 0);
        assert.equal(b.choices[0].message.content, freshB.choices[0].message.content);
      } finally {
        await other.unload();
      }
    });
  });
}
