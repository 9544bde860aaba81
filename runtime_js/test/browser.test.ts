/**
 * The built module in headless Chromium (Debian's, driven by playwright-core): a page
 * and a Web Worker load a bundle with a scripted backend, and a reload is served
 * from the Cache API without any shard request. Needs Chromium (helpers.requireComponent).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { type Browser, type Page, chromium } from "playwright-core";
import { type FakeBundle, type TestServer, makeChatBundle, serve, tmpDir } from "./fixtures.js";
import { requireComponent, runtimeDir } from "./helpers.js";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const skip = requireComponent("chromium", !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}`);

const REPLY = "Grüße aus dem Browser 🌍";

/** Page-side code (runs in a page or a worker): a backend that spells REPLY byte by byte. */
const PAGE_LIB = `
export class SpellBackend {
  name = "spell"; kv = []; promptEnd = 0;
  constructor(text) { this.ids = [...new TextEncoder().encode(text)]; }
  async load(manifest, loader, opts) {
    this.stats = await loader.loadShards({ write() {}, commit() {} }, opts);
  }
  logits() {
    const step = this.kv.length - this.promptEnd;
    const l = new Float32Array(258);
    l[step < this.ids.length ? this.ids[step] : 257] = 5;
    return l;
  }
  async prefill(tokens, past) { this.kv.length = past; this.kv.push(...tokens); this.promptEnd = this.kv.length; return this.logits(); }
  async decode(token, pos) { this.kv.push(token); return this.logits(); }
  reset() { this.kv = []; }
  unload() {}
}
export async function run(text) {
  const { createEngine, hashMethod } = await import(new URL("/dist/llmpack.js", import.meta.url).href);
  const backend = new SpellBackend(text);
  const engine = await createEngine(new URL("/bundle/", import.meta.url).href, { backend });
  let streamed = "";
  for await (const c of await engine.chat.completions.create({ messages: [{ role: "user", content: "hi" }], stream: true })) {
    streamed += c.choices[0].delta.content ?? "";
  }
  return { streamed, stats: backend.stats, hashing: await hashMethod("auto", 1 << 20) };
}
export const SCHEMA = { type: "object", properties: { pick: { enum: ["tea", "coffee"] }, sugar: { type: "integer", minimum: 0, maximum: 3 }, note: { type: "string", maxLength: 6 } }, required: ["pick", "sugar", "note"], additionalProperties: false };
/** A json_schema answer sampled among the tokens the grammar allows (the grammar engine is dist/xgrammar.js). */
export async function structured() {
  const { createEngine } = await import(new URL("/dist/llmpack.js", import.meta.url).href);
  const engine = await createEngine(new URL("/bundle/", import.meta.url).href, { backend: new SpellBackend("") });
  const res = await engine.chat.completions.create({ messages: [{ role: "user", content: "hi" }], temperature: 1, seed: 3, max_tokens: 60,
    response_format: { type: "json_schema", json_schema: { name: "order", schema: SCHEMA } } });
  return { content: res.choices[0].message.content, finish: res.choices[0].finish_reason };
}
`;

let bundle: FakeBundle;
let server: TestServer;
let browser: Browser;
let page: Page;

describe("in Chromium", { skip }, () => {
  before(async () => {
    bundle = makeChatBundle();
    const root = tmpDir("llmpack-web-");
    symlinkSync(bundle.dir, path.join(root, "bundle"));
    symlinkSync(path.join(runtimeDir(), "dist"), path.join(root, "dist"));
    mkdirSync(path.join(root, "t"));
    writeFileSync(path.join(root, "t", "lib.js"), PAGE_LIB);
    writeFileSync(path.join(root, "index.html"), "<!doctype html><title>llmpack test</title>");
    server = await serve(root);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
    });
    page = await (await browser.newContext()).newPage();
    await page.goto(`${server.url}index.html`);
  });

  after(async () => {
    await browser?.close();
    await server?.close();
  });

  // The module URL is an argument so that esbuild leaves the import alone.
  const runInPage = () => page.evaluate(async ([lib, text]) => (await import(lib)).run(text), ["/t/lib.js", REPLY] as const);
  const shardRequests = () => server.log.filter((p) => p.startsWith("bundle/shards/")).length;

  test("a page streams a chat; the reload reads shards and tokenizer from the Cache API", async () => {
    const first = await runInPage();
    assert.equal(first.streamed, REPLY);
    assert.equal(first.hashing, "webcrypto"); // 127.0.0.1 is a secure context: shards verified by crypto.subtle
    assert.equal(first.stats.networkShards, bundle.manifest.shards.length);
    assert.equal(shardRequests(), bundle.manifest.shards.length);

    const n = server.log.length;
    const second = await runInPage();
    assert.equal(second.streamed, REPLY);
    assert.equal(second.stats.cachedShards, bundle.manifest.shards.length);
    assert.deepEqual(server.log.slice(n), ["bundle/manifest.json"]);
  });

  test("a Web Worker runs the same module", async () => {
    const out = await page.evaluate(async (text) => {
      const src = `import { run } from "${location.origin}/t/lib.js"; onmessage = async (e) => postMessage(await run(e.data));`;
      const worker = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), { type: "module" });
      return new Promise<{ streamed: string; hashing: string }>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(e.message));
        worker.postMessage(text);
      });
    }, REPLY);
    assert.equal(out.streamed, REPLY);
    assert.equal(out.hashing, "webcrypto");
  });

  test("response_format: the grammar engine loads as the runtime's chunk, in a page and in a Web Worker", async () => {
    const inPage = await page.evaluate(async (lib) => (await import(lib)).structured(), "/t/lib.js");
    const inWorker = await page.evaluate(async () => {
      const src = `import { structured } from "${location.origin}/t/lib.js"; onmessage = async () => postMessage(await structured());`;
      const worker = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), { type: "module" });
      return new Promise<{ content: string; finish: string }>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(e.message));
        worker.postMessage(null);
      });
    });
    for (const out of [inPage, inWorker]) {
      assert.equal(out.finish, "stop", out.content);
      const v = JSON.parse(out.content);
      assert.deepEqual(Object.keys(v), ["pick", "sugar", "note"]);
      assert.ok(["tea", "coffee"].includes(v.pick) && Number.isInteger(v.sugar) && v.sugar >= 0 && v.sugar <= 3, out.content);
      assert.ok(typeof v.note === "string" && [...v.note].length <= 6, out.content);
    }
    assert.ok(server.log.includes("dist/xgrammar.js"), server.log.join(" "));
  });
});
