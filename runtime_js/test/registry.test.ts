/**
 * Registry ids (src/registry.ts) against a registry laid out as docs/registry.md says:
 * once through the HTTP API's shape (GET /models/{id} with base_url) and once as plain
 * files on a static host (index.json; shards at the registry root). The real
 * `llmpack registry serve` is exercised by tests/test_runtime_e2e.py.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createEngine } from "../src/engine.js";
import { RegistryError, parseRegistryRef, resolveRegistryModel } from "../src/registry.js";
import { FakeBackend, spell } from "./fake-backend.js";
import { type FakeBundle, type TestServer, makeChatBundle, serve, tmpDir } from "./fixtures.js";

const MESSAGES = [{ role: "user", content: "hi" }];

/** A registry folder holding `bundle` as tiny@1 and tiny@2. */
function makeRegistry(bundle: FakeBundle): string {
  const root = tmpDir("llmpack-registry-");
  mkdirSync(path.join(root, "shards"));
  const versions: Record<string, unknown> = {};
  for (const v of ["1", "2"]) {
    const dir = path.join(root, "models", "tiny", v);
    mkdirSync(dir, { recursive: true });
    cpSync(path.join(bundle.dir, "manifest.json"), path.join(dir, "manifest.json"));
    for (const f of bundle.manifest.files) cpSync(path.join(bundle.dir, f.path), path.join(dir, f.path));
    const sha = createHash("sha256").update(readFileSync(path.join(dir, "manifest.json"))).digest("hex");
    versions[v] = { path: `models/tiny/${v}/`, manifest_sha256: sha };
  }
  for (const s of bundle.manifest.shards) cpSync(path.join(bundle.dir, s.file), path.join(root, s.file));
  writeFileSync(path.join(root, "index.json"), JSON.stringify({ format: "llmpack-registry", version: 1, models: { tiny: { latest: "2", versions } } }));
  return root;
}

/** Index entries of `root` */
function indexOf(root: string) {
  return JSON.parse(readFileSync(path.join(root, "index.json"), "utf8"));
}

/** The API's shape: GET /models/{id}; version files and shards under base_url. */
async function apiServer(root: string): Promise<TestServer & { close(): Promise<void> }> {
  const files = await serve(root);
  const log: string[] = [];
  const server = http.createServer(async (req, res) => {
    const p = new URL(req.url!, "http://x").pathname;
    log.push(p);
    const m = /^\/models\/([^/]+)$/.exec(p);
    if (m) {
      if (m[1] !== "tiny") {
        res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ detail: `no model ${m[1]}` }));
        return;
      }
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const entries = indexOf(root).models.tiny.versions;
      const versions = ["2", "1"].map((v) => ({ ...entries[v], version: v, latest: v === "2", base_url: `${base}/models/tiny/${v}/`, manifest_url: `${base}/models/tiny/${v}/manifest.json` }));
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ id: "tiny", latest: "2", versions }));
      return;
    }
    // files: version folder files, and the version's shards from the shared store
    const shard = /^\/models\/tiny\/\d+\/(shards\/.+)$/.exec(p);
    const upstream = await fetch(files.url + (shard ? shard[1] : p.slice(1)));
    res.writeHead(upstream.status).end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    ...files,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`,
    log,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await files.close();
    },
  };
}

describe("registry ids", () => {
  let bundle: FakeBundle;
  let root: string;
  let statics: TestServer;
  let api: Awaited<ReturnType<typeof apiServer>>;
  before(async () => {
    bundle = makeChatBundle();
    root = makeRegistry(bundle);
    statics = await serve(root);
    api = await apiServer(root);
  });
  after(async () => {
    await statics?.close();
    await api?.close();
  });

  test("parses registry:ID[@VERSION]", () => {
    assert.deepEqual(parseRegistryRef("registry:smollm2-135m@3"), { id: "smollm2-135m", version: "3" });
    assert.deepEqual(parseRegistryRef("registry:a.b_c"), { id: "a.b_c", version: null });
    assert.equal(parseRegistryRef("https://x/y/"), null);
    assert.throws(() => parseRegistryRef("registry:Upper"), RegistryError);
    assert.throws(() => parseRegistryRef("registry:ok@"), RegistryError);
  });

  test("through the HTTP API: latest, a pinned version, an unknown id", async () => {
    const latest = await resolveRegistryModel("registry:tiny", { registryUrl: api.url });
    assert.equal(latest.version, "2");
    assert.equal(latest.baseUrl, `${api.url}models/tiny/2/`);
    assert.equal(latest.fetch, undefined);
    const one = await resolveRegistryModel("registry:tiny@1", { registryUrl: api.url.slice(0, -1) });
    assert.equal(one.baseUrl, `${api.url}models/tiny/1/`);
    await assert.rejects(resolveRegistryModel("registry:tiny@9", { registryUrl: api.url }), /no version "9" of tiny \(it has 2, 1\)/);
    await assert.rejects(resolveRegistryModel("registry:nope", { registryUrl: api.url }), /no model nope/);
  });

  test("createEngine loads and chats by id through the API", async () => {
    const engine = await createEngine("registry:tiny@1", { registryUrl: api.url, backend: new FakeBackend(spell("by id")), cache: null });
    const res = await engine.chat.completions.create({ messages: MESSAGES });
    assert.equal(res.choices[0].message.content, "by id");
    assert.ok(api.log.includes("/models/tiny/1/manifest.json"));
    assert.equal(api.log.filter((p) => p.startsWith("/models/tiny/1/shards/")).length, bundle.manifest.shards.length);
    await assert.rejects(createEngine("registry:tiny", { backend: new FakeBackend(spell("x")), cache: null }), /pass \{registryUrl\}/);
  });

  test("on a static host: index.json, shards from the registry root", async () => {
    const backend = new FakeBackend(spell("static"));
    const engine = await createEngine("registry:tiny", { registryUrl: statics.url, backend, cache: null });
    const res = await engine.chat.completions.create({ messages: MESSAGES });
    assert.equal(res.choices[0].message.content, "static");
    assert.ok(statics.log.includes("models/tiny/2/manifest.json"));
    assert.equal(statics.requestsFor("shards/"), bundle.manifest.shards.length);
    await assert.rejects(resolveRegistryModel("registry:nope", { registryUrl: statics.url }), /has no model "nope"/);
    await assert.rejects(resolveRegistryModel("registry:x", { registryUrl: `${statics.url}models/` }), /is not an llmpack registry/);
  });

  test("a manifest that does not hash to the registry's entry is refused before any shard", async () => {
    const copy = tmpDir("llmpack-registry-tampered-");
    cpSync(root, copy, { recursive: true });
    const manifestPath = path.join(copy, "models", "tiny", "2", "manifest.json");
    const m = JSON.parse(readFileSync(manifestPath, "utf8"));
    m.generation = { ...m.generation, temperature: 2 };
    writeFileSync(manifestPath, JSON.stringify(m));
    for (const start of [serve, apiServer]) {
      const host = await start(copy);
      try {
        await assert.rejects(
          createEngine("registry:tiny@2", { registryUrl: host.url, backend: new FakeBackend(spell("x")), cache: null }),
          /models\/tiny\/2\/manifest\.json has sha256 [0-9a-f]{16}…, the registry says [0-9a-f]{16}…/,
        );
        assert.equal(host.log.filter((p) => p.includes("shards/")).length, 0);
        // the untouched version still loads from the same host
        const engine = await createEngine("registry:tiny@1", { registryUrl: host.url, backend: new FakeBackend(spell("ok")), cache: null });
        assert.equal((await engine.chat.completions.create({ messages: MESSAGES })).choices[0].message.content, "ok");
      } finally {
        await host.close();
      }
    }
  });
});
