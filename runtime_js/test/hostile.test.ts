/**
 * Hostile bundles and servers (issue 15): a manifest that names local files or other
 * servers, unlisted files, chat templates that would kill the process, huge prompts,
 * stalled transfers. Each is refused with a named error, and the process lives on.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createEngine } from "../src/engine.js";
import { BundleFileError, BundleLoader, BundlePathError, ShardError } from "../src/loader.js";
import { ManifestError, parseManifest } from "../src/manifest.js";
import { RegistryError, resolveRegistryModel } from "../src/registry.js";
import { ContextWindowError } from "../src/session.js";
import { ChatTemplate, TemplateError } from "../src/template.js";
import { FakeBackend, spell } from "./fake-backend.js";
import { type FakeBundle, RecordingSink, type TestServer, makeBundle, makeChatBundle, serve, tmpDir } from "./fixtures.js";

const sha256hex = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");
const SECRET = "root:x:0:0:secret-content";

/** A copy of `bundle`'s manifest with `edit` applied, written to a fresh folder that serves the same files. */
function withManifest(bundle: FakeBundle, edit: (m: any) => void): string {
  const m = structuredClone(bundle.manifest);
  edit(m);
  writeFileSync(path.join(bundle.dir, "manifest.json"), JSON.stringify(m));
  return bundle.dir;
}

/** Adds a file to the bundle folder and to its manifest's files, hashed. */
function addFile(bundle: FakeBundle, name: string, text: string): void {
  const data = Buffer.from(text);
  writeFileSync(path.join(bundle.dir, name), data);
  bundle.manifest.files.push({ path: name, bytes: data.length, sha256: sha256hex(data) });
  writeFileSync(path.join(bundle.dir, "manifest.json"), JSON.stringify(bundle.manifest));
}

describe("a bundle's files stay inside the bundle", () => {
  let bundle: FakeBundle;
  let server: TestServer;
  before(async () => {
    bundle = makeChatBundle();
    server = await serve(bundle.dir);
  });
  after(() => server.close());

  const outside = ["file:///etc/passwd", "/etc/passwd", "../manifest.json", "a/../../x", "http://127.0.0.1:1/x.json", "//evil.example/x", "%2e%2e/x", "a\\..\\x", "data:,hi", ""];

  test("the manifest parser refuses a tokenizer, config or shard file outside the bundle", () => {
    for (const bad of outside) {
      for (const edit of [
        (m: any) => (m.tokenizer.file = bad),
        (m: any) => (m.tokenizer.config_file = bad),
        (m: any) => (m.shards[0].file = bad),
        (m: any) => (m.files[0].path = bad),
      ]) {
        const m = structuredClone(bundle.manifest);
        edit(m);
        assert.throws(() => parseManifest(m), ManifestError, JSON.stringify(bad));
      }
    }
  });

  test("the loader resolves only paths under the bundle's URL (BundlePathError), without a request", async () => {
    const loader = await BundleLoader.open(server.url, { cache: null });
    const n = server.log.length;
    for (const bad of [...outside, "file:/etc/passwd", "shards/../../x"]) {
      assert.throws(() => loader.url(bad), BundlePathError, JSON.stringify(bad));
      await assert.rejects(loader.fetchFile(bad), BundlePathError, JSON.stringify(bad));
    }
    assert.deepEqual(server.log.slice(n), []);
    assert.equal(loader.url("kernels/a.wgsl"), `${server.url}kernels/a.wgsl`);
  });

  test("over HTTP, a manifest naming /etc/passwd loads nothing and echoes nothing", async () => {
    const dir = withManifest(bundle, (m) => (m.tokenizer.file = "file:///etc/passwd"));
    await assert.rejects(createEngine(server.url, { backend: new FakeBackend(spell("x")), cache: null }), (e: unknown) => {
      assert.ok(e instanceof ManifestError);
      assert.match(e.message, /tokenizer\.file/);
      assert.doesNotMatch(e.message, /root:/);
      return true;
    });
    writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(bundle.manifest));
  });

  test("a tokenizer file the manifest does not list (with a hash) is refused unread", async () => {
    writeFileSync(path.join(bundle.dir, "unlisted.json"), readFileSync(path.join(bundle.dir, "tokenizer.json")));
    withManifest(bundle, (m) => (m.tokenizer.file = "unlisted.json"));
    const n = server.log.length;
    await assert.rejects(createEngine(server.url, { backend: new FakeBackend(spell("x")), cache: null }), (e: unknown) => {
      assert.ok(e instanceof BundleFileError);
      assert.match(e.message, /not listed in the manifest's "files"/);
      return true;
    });
    assert.ok(!server.log.slice(n).includes("unlisted.json"), "never requested");
    writeFileSync(path.join(bundle.dir, "manifest.json"), JSON.stringify(bundle.manifest));
  });

  test("a listed file that is not JSON is refused without quoting it", async () => {
    addFile(bundle, "secret.json", SECRET);
    const loader = await BundleLoader.open(server.url, { cache: null });
    await assert.rejects(loader.fetchJson("secret.json"), (e: unknown) => {
      assert.ok(e instanceof BundleFileError);
      assert.doesNotMatch(e.message, /root|secret-content/);
      return true;
    });
  });

  test("a local bundle (file: URL) cannot reach files beside its folder either", async () => {
    const loader = await BundleLoader.open(bundle.dir, { cache: null });
    assert.throws(() => loader.url("../x.json"), BundlePathError);
    assert.throws(() => loader.url("file:///etc/passwd"), BundlePathError);
    assert.ok(loader.url("tokenizer.json").startsWith(`file://${bundle.dir}/`));
  });
});

describe("chat templates run under limits", () => {
  const render = (src: string, limits = {}) => new ChatTemplate(src).render({ messages: [{ role: "user", content: "hi" }] }, limits);

  test("range(1000000000) is refused at once, and the process lives on", () => {
    const t0 = performance.now();
    assert.throws(() => render("{% for i in range(1000000000) %}{% endfor %}"), (e: unknown) => {
      assert.ok(e instanceof TemplateError);
      assert.match(e.message, /range\(\) of 1000000000 items/);
      return true;
    });
    assert.ok(performance.now() - t0 < 500);
  });

  test("nested loops stop at the time or step budget", () => {
    const t0 = performance.now();
    assert.throws(() => render("{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}", { maxMs: 200 }), /ran for more than 200 ms|more than \d+ steps|built a string/);
    assert.ok(performance.now() - t0 < 2000);
    assert.throws(() => render("{% for i in range(1000) %}{% for j in range(1000) %}{{ j }}{% endfor %}{% endfor %}", { maxSteps: 10_000 }), /more than 10000 steps/);
  });

  test("strings that double past the output cap are refused", () => {
    const src = "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}";
    assert.throws(() => render(src), (e: unknown) => e instanceof TemplateError && /built a string of \d+ characters/.test(e.message));
  });

  test("a width filter that would multiply the output is refused before it runs", () => {
    for (const src of ["{{ 'a\nb'|indent(200000000) }}", "{{ messages|tojson(indent=200000000) }}", "{% filter indent(width=5000) %}x\ny{% endfilter %}"]) {
      assert.throws(() => render(src), /with a width of \d+, over the limit of 1000/, src);
    }
    assert.equal(render("{{ 'a\nb'|indent(2) }}"), "a\n  b");
  });

  test("unbounded recursion, a bad range, raise_exception and syntax errors are TemplateErrors", () => {
    assert.throws(() => render("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"), TemplateError);
    assert.throws(() => render("{{ range(0, 10, 0) }}"), /step must not be zero/);
    assert.throws(() => render("{{ raise_exception('no system role') }}"), /refused the conversation: no system role/);
    assert.throws(() => new ChatTemplate("{% for %}"), TemplateError);
  });

  test("a well-behaved template renders as before (range, loop, strftime_now)", () => {
    const out = render("{% for m in messages %}{{ loop.index }}:{{ m.content }}{% endfor %}|{{ range(3)|join(',') }}|{{ range(5, 0, -2)|join(',') }}|{{ strftime_now('%Y')|length }}");
    assert.equal(out, "1:hi|0,1,2|5,3,1|4");
  });

  test("through the engine: the request rejects with TemplateError, the engine keeps working", async () => {
    const bundle = makeChatBundle();
    withManifest(bundle, (m) => (m.tokenizer.chat_template = "{% for i in range(1000000000) %}x{% endfor %}"));
    const server = await serve(bundle.dir);
    try {
      const engine = await createEngine(server.url, { backend: new FakeBackend(spell("ok")), cache: null });
      await assert.rejects(engine.chat.completions.create({ messages: [{ role: "user", content: "hi" }] }), TemplateError);
      assert.equal(await engine.generate("hi", { max_tokens: 4 }), "ok");
    } finally {
      await server.close();
    }
  });
});

describe("prompts are capped in characters before tokenizing", () => {
  test("a 1 MiB prompt is refused at once with ContextWindowError, for generate and chat", async () => {
    const bundle = makeChatBundle({ contextWindow: 256 });
    const server = await serve(bundle.dir);
    try {
      const engine = await createEngine(server.url, { backend: new FakeBackend(spell("ok")), cache: null });
      const huge = "a".repeat(1 << 20);
      const t0 = performance.now();
      await assert.rejects(engine.generate(huge), (e: unknown) => {
        assert.ok(e instanceof ContextWindowError);
        assert.match(e.message, /1048576 characters; .* 256 tokens holds at most 8192/);
        return true;
      });
      await assert.rejects(engine.chat.completions.create({ messages: [{ role: "user", content: huge }] }), ContextWindowError);
      assert.ok(performance.now() - t0 < 1000, "refused before tokenizing");
      assert.equal(await engine.generate("hi", { max_tokens: 4 }), "ok");
    } finally {
      await server.close();
    }
  });
});

describe("stalled transfers", () => {
  /** A server for one bundle whose shard 0 stalls (headers, half the body, then nothing) `stalls` times. */
  async function stallingServer(root: string, shard: string, mode: "body" | "headers", stalls: number) {
    let left = stalls;
    const log: string[] = [];
    const server = http.createServer((req, res) => {
      const p = decodeURIComponent(new URL(req.url!, "http://x").pathname).replace(/^\//, "");
      log.push(p);
      let data: Buffer;
      try {
        data = readFileSync(path.join(root, p));
      } catch {
        res.writeHead(404).end();
        return;
      }
      if (p === shard && left > 0) {
        left--;
        if (mode === "body") {
          res.writeHead(200, { "content-length": data.length });
          res.write(data.subarray(0, data.length >> 1));
        }
        return; // and never finish
      }
      res.writeHead(200, { "content-length": data.length }).end(data);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const close = () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
    return { url, log, close };
  }

  const bundle = makeBundle([{ name: "a", parts: [6000] }, { name: "b", parts: [3000] }], 8192, tmpDir());
  const shard0 = bundle.manifest.shards[0].file;
  const fast = { stallMs: 150, retryDelayMs: 10, chunkBytes: 1024 };

  for (const mode of ["body", "headers"] as const) {
    test(`a transfer that stalls (${mode}) once is aborted and retried`, async () => {
      const s = await stallingServer(bundle.dir, shard0, mode, 1);
      try {
        const loader = await BundleLoader.open(s.url, { cache: null });
        const sink = new RecordingSink(bundle, loader.layout);
        const stats = await loader.loadShards(sink, fast);
        assert.equal(stats.refetches, 1);
        assert.ok(sink.committedTensorsMatch());
        assert.ok(sink.events.some((e) => /discard 0: no data for 0.15 s/.test(e)), sink.events.join("; "));
      } finally {
        await s.close();
      }
    });
  }

  test("a manifest or bundle file that never comes fails after the stall limit", async () => {
    const server = await serve(bundle.dir);
    try {
      server.beforeResponse = (p) => (p === "manifest.json" ? new Promise(() => {}) : undefined);
      await assert.rejects(BundleLoader.open(server.url, { cache: null, stallMs: 150 }), (e: unknown) => e instanceof BundleFileError && /stalled/.test(e.message));
      server.beforeResponse = (p) => (p === "extra.json" ? new Promise(() => {}) : undefined);
      const loader = await BundleLoader.open(server.url, { cache: null, stallMs: 150 });
      await assert.rejects(loader.fetchFile("extra.json"), (e: unknown) => e instanceof BundleFileError && /stalled/.test(e.message));
    } finally {
      await server.close();
    }
  });

  test("a transfer that keeps stalling fails with a ShardError after a few tries with backoff", async () => {
    const s = await stallingServer(bundle.dir, shard0, "body", Infinity);
    try {
      const loader = await BundleLoader.open(s.url, { cache: null });
      const t0 = performance.now();
      await assert.rejects(loader.loadShards(new RecordingSink(bundle, loader.layout), { ...fast, networkRetries: 2 }), (e: unknown) => {
        assert.ok(e instanceof ShardError);
        assert.equal(e.shard, 0);
        assert.match(e.message, /no data for 0.15 s \(stalled\) after \d+ of \d+ bytes \(3 attempts\); check the connection/);
        return true;
      });
      // 3 stalls of 150 ms and backoffs of 10 + 20 ms
      assert.ok(performance.now() - t0 >= 450);
      assert.equal(s.log.filter((p) => p === shard0).length, 3);
    } finally {
      await s.close();
    }
  });
});

describe("a hostile registry", () => {
  /** A fetch that answers the registry API (`models/x`) or a static index with `json`. */
  const registry = (api: unknown, index: unknown) => async (url: string) => {
    if (url.endsWith("/models/x")) return new Response(JSON.stringify(api), { status: api ? 200 : 404 });
    if (url.endsWith("/index.json")) return new Response(JSON.stringify(index), { status: 200 });
    return new Response(null, { status: 404 });
  };

  test("cannot send the runtime to a local file or outside a static registry", async () => {
    const root = "http://127.0.0.1:9/reg/";
    for (const base of ["file:///etc/", "data:,x", "javascript:alert(1)"]) {
      const fetch = registry({ latest: "1", versions: [{ version: "1", base_url: base }] }, null);
      await assert.rejects(resolveRegistryModel("registry:x", { registryUrl: root, fetch }), (e: unknown) => e instanceof RegistryError && /may not name/.test(e.message), base);
    }
    for (const p of ["../../etc/", "file:///etc/", "http://evil.example/x/"]) {
      const index = { format: "llmpack-registry", models: { x: { latest: "1", versions: { "1": { path: p } } } } };
      await assert.rejects(resolveRegistryModel("registry:x", { registryUrl: root, fetch: registry(null, index) }), RegistryError, p);
    }
    // a CDN over https is fine
    const ok = await resolveRegistryModel("registry:x", { registryUrl: root, fetch: registry({ latest: "1", versions: [{ version: "1", base_url: "https://cdn.example/m/1/" }] }, null) });
    assert.equal(ok.baseUrl, "https://cdn.example/m/1/");
  });
});
