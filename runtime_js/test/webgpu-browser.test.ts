/**
 * The WebGPU backend in headless Chromium (Debian's, SwiftShader's WebGPU adapter),
 * in a page and in a module Web Worker, on the synthetic plan bundle (no Wasm kernels):
 * the built module passes over the software adapter, finds no other backend, takes it
 * after all (saying why), and computes the expected logits. Skipped where Chromium is
 * missing or its WebGPU has no adapter.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type BrowserContext, type Page, chromium } from "playwright-core";
import { type TestServer, serve, tmpDir } from "./fixtures.js";
import { allowedMissing, requireComponent, runtimeDir } from "./helpers.js";
import { type PlanBundle, expectedLogits, makePlanBundle } from "./plan-fixture.js";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const skip = requireComponent("chromium", !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}`);
const ARGS = ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"];

const PROMPT = [5, 40, 63, 0, 33, 2, 17, 50, 9, 41];

/** Page-side code (a page or a worker). */
const PAGE_LIB = `
export async function run() {
  const m = await import(new URL("/dist/llmpack.js", import.meta.url).href);
  if (!navigator.gpu || !(await navigator.gpu.requestAdapter())) return { noAdapter: true };
  const engine = await m.createEngine(new URL("/bundle/", import.meta.url).href);
  const b = engine.backend;
  const prefill = [...(await b.prefill(Int32Array.from(${JSON.stringify(PROMPT)}), 3))];
  const decode = [...(await b.decode(7, 13))];
  const out = { name: b.name, label: b.label, prefill, decode, cached: b.loadStats.cachedShards, adapter: b.adapter, reason: engine.backendInfo.reason };
  await engine.unload();
  return out;
}
`;

describe("WebGPU in Chromium", { skip }, () => {
  let bundle: PlanBundle;
  let server: TestServer;
  let context: BrowserContext;
  let page: Page;
  let userDir: string;

  before(async () => {
    bundle = makePlanBundle();
    const root = tmpDir("llmpack-webgpu-web-");
    symlinkSync(bundle.dir, path.join(root, "bundle"));
    symlinkSync(path.join(runtimeDir(), "dist"), path.join(root, "dist"));
    mkdirSync(path.join(root, "t"));
    writeFileSync(path.join(root, "t", "lib.js"), PAGE_LIB);
    writeFileSync(path.join(root, "index.html"), '<!doctype html><link rel=icon href="data:,"><title>llmpack webgpu test</title>');
    server = await serve(root);
    userDir = mkdtempSync(path.join(os.tmpdir(), "llmpack-chromium-"));
    context = await chromium.launchPersistentContext(userDir, { executablePath: CHROMIUM, headless: true, args: ARGS });
    page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`${server.url}index.html`);
  });

  after(async () => {
    await context?.close();
    await server?.close();
    if (userDir) rmSync(userDir, { recursive: true, force: true });
  });

  const check = (out: any, t: { skip(msg: string): void }) => {
    if (out.noAdapter) {
      if (allowedMissing("chromium")) return t.skip("this Chromium has no WebGPU adapter (allowed by LLMPACK_ALLOW_MISSING)");
      assert.fail("this Chromium has no WebGPU adapter; set LLMPACK_ALLOW_MISSING=chromium to skip");
    }
    assert.equal(out.name, "webgpu");
    assert.equal(out.label, "WebGPU f32");
    assert.equal(out.adapter.isFallbackAdapter, true, JSON.stringify(out.adapter)); // SwiftShader
    assert.match(out.reason, /^webgpu: the WebGPU adapter \(.+\) is a software renderer on the CPU.*; wasm: the bundle has no Wasm kernels/);
    assert.deepEqual(out.prefill, [...expectedLogits(bundle, PROMPT.at(-1)!, 3 + 8)]);
    assert.deepEqual(out.decode, [...expectedLogits(bundle, 7, 13)]);
  };

  test("a page runs the plan", async (t) => {
    const out = await page.evaluate(async (lib) => (await import(lib)).run(), "/t/lib.js");
    check(out, t);
  });

  test("a module Web Worker runs the plan, its shards from the page's Cache API", async (t) => {
    const n = server.log.length;
    const out = await page.evaluate(async () => {
      const src = `import { run } from "${location.origin}/t/lib.js"; onmessage = async () => postMessage(await run());`;
      const worker = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), { type: "module" });
      return new Promise<any>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(e.message));
        worker.postMessage(null);
      });
    });
    check(out, t);
    if (!out.noAdapter) {
      assert.equal(out.cached, bundle.manifest.shards.length);
      assert.equal(server.log.slice(n).filter((p) => p.startsWith("bundle/shards/")).length, 0);
    }
  });
});
