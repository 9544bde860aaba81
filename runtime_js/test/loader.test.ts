import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { BundleLoader, ShardError, type ProgressReport } from "../src/loader.js";
import { DirectoryCache } from "../src/cache.js";
import { ManifestError } from "../src/manifest.js";
import { type HashMethod, WEBCRYPTO_MAX_BYTES, hashMethod, sha256Hex } from "../src/sha256.js";
import { type FakeBundle, RecordingSink, type TestServer, makeBundle, serve, tmpDir } from "./fixtures.js";

const SHARD = 4096;
const CHUNK = 512;

// Sizes chosen so that shards hold several tensors, parts need padding, one tensor
// spans three shards, and shard ends do not line up with the chunk size.
const TENSORS = [
  { name: "embed", parts: [1000, 333] },
  { name: "norm", parts: [64] },
  { name: "big", parts: [9000, 700] },
  { name: "a", parts: [2048] },
  { name: "b", parts: [1500, 20, 7] },
  { name: "c", parts: [3000] },
];

let bundle: FakeBundle;
let server: TestServer;

before(async () => {
  bundle = makeBundle(TENSORS, SHARD);
  server = await serve(bundle.dir);
});
after(() => server.close());

function shardPath(i: number): string {
  return bundle.manifest.shards[i].file;
}

async function load(
  opts: { cacheDir?: string | null; concurrency?: number; onSink?: (s: RecordingSink) => void; signal?: AbortSignal; onProgress?: (p: ProgressReport) => void; hashing?: HashMethod } = {},
) {
  const loader = await BundleLoader.open(server.url, {
    cache: opts.cacheDir ? await DirectoryCache.open(opts.cacheDir) : null,
    hashing: opts.hashing,
  });
  const sink = new RecordingSink(bundle, loader.layout);
  opts.onSink?.(sink);
  const result = loader.loadShards(sink, { chunkBytes: CHUNK, concurrency: opts.concurrency ?? 2, signal: opts.signal, onProgress: opts.onProgress });
  return { loader, sink, result };
}

describe("loader over HTTP", () => {
  test("the fixture spans shards as the format says", () => {
    const big = bundle.manifest.tensors[2];
    assert.equal(big.offset, 0);
    assert.ok(big.bytes > 2 * SHARD);
    assert.ok(bundle.manifest.shards.length >= 5);
  });

  for (const concurrency of [1, 3]) {
    test(`streams every part intact, aligned, with progress (concurrency ${concurrency})`, async () => {
      server.faults.clear();
      const reports: ProgressReport[] = [];
      const { sink, result } = await load({ concurrency, onProgress: (p) => reports.push(p) });
      const stats = await result;
      assert.equal(stats.networkShards, bundle.manifest.shards.length);
      assert.equal(stats.refetches, 0);
      assert.equal(sink.committed.size, bundle.manifest.shards.length);
      assert.ok(sink.committedTensorsMatch());
      for (const c of sink.chunks) {
        assert.equal(c.offset % CHUNK, 0);
        const end = c.offset + c.length;
        assert.ok(c.length === CHUNK || end === bundle.manifest.shards[c.shard]?.bytes, "only a shard's last chunk is short");
      }
      const last = reports.at(-1)!;
      assert.equal(last.bytesDone, last.bytesTotal);
      assert.equal(last.shards, bundle.manifest.shards.length);
      let before = 0;
      for (const r of reports) {
        assert.ok(r.bytesDone >= before, "progress never goes back");
        before = r.bytesDone;
      }
    });
  }

  for (const hashing of ["node", "webcrypto", "js"] as const) {
    test(`verifies with ${hashing}: every part intact in aligned chunks, a corrupt shard refetched`, async () => {
      server.faults.clear();
      server.faults.set(shardPath(3), { fault: "corrupt", times: 1 });
      const { loader, sink, result } = await load({ hashing });
      const stats = await result;
      assert.equal(loader.hashing, hashing);
      assert.equal(stats.refetches, 1);
      assert.ok(sink.events.findIndex((e) => e.startsWith("discard 3") && e.includes("sha256 mismatch")) >= 0);
      assert.equal(sink.committed.size, bundle.manifest.shards.length);
      assert.ok(sink.committedTensorsMatch());
      for (const c of sink.chunks) assert.ok(c.length === CHUNK || c.offset + c.length === bundle.manifest.shards[c.shard]?.bytes);
    });
  }

  test("hash methods: the same digests; WebCrypto only up to its bound; node:crypto by default in Node", async () => {
    const data = new Uint8Array(100_000).map((_, i) => (i * 7) % 251);
    const digests = await Promise.all((["node", "webcrypto", "js"] as const).map((m) => sha256Hex(data, m)));
    assert.equal(new Set(digests).size, 1);
    assert.equal(await hashMethod("auto", 1), "node");
    assert.equal(await hashMethod("webcrypto", WEBCRYPTO_MAX_BYTES), "webcrypto");
    assert.equal(await hashMethod("webcrypto", WEBCRYPTO_MAX_BYTES + 1), "node");
    assert.equal(await hashMethod("js", 1), "js");
  });

  const recoverable = [
    ["corrupt", "sha256 mismatch"],
    ["drop", "transfer broke"],
    ["short", "server announces"],
    ["long", "more than the"],
  ] as const;

  for (const [fault, why] of recoverable) {
    test(`a shard that fails once (${fault}) is refetched and rewritten before commit`, async () => {
      server.faults.clear();
      server.faults.set(shardPath(1), { fault, times: 1 });
      const before = server.requestsFor(shardPath(1));
      const { sink, result } = await load();
      const stats = await result;
      assert.equal(stats.refetches, 1);
      assert.equal(server.requestsFor(shardPath(1)) - before, 2);
      const d = sink.events.findIndex((e) => e.startsWith("discard 1"));
      assert.ok(d >= 0 && sink.events[d]?.includes(why), sink.events[d]);
      assert.ok(d < sink.events.indexOf("commit 1"));
      assert.ok(sink.committedTensorsMatch());
    });

    test(`a shard that keeps failing (${fault}) rejects the load naming it and is never committed`, async () => {
      server.faults.clear();
      server.faults.set(shardPath(2), { fault, times: Infinity });
      const { sink, result } = await load();
      await assert.rejects(result, (e: unknown) => {
        assert.ok(e instanceof ShardError);
        assert.equal(e.shard, 2);
        assert.match(e.message, new RegExp(`^shard 2 \\(${shardPath(2).replace(/\./g, "\\.")}\\): `));
        assert.match(e.message, new RegExp(why));
        return true;
      });
      assert.ok(!sink.committed.has(2));
    });
  }

  test("an HTTP error names the shard", async () => {
    server.faults.clear();
    server.faults.set(shardPath(0), { fault: "404", times: Infinity });
    const { result } = await load();
    await assert.rejects(result, /shard 0 .*HTTP 404/);
  });

  test("abort rejects with the signal's reason", async () => {
    server.faults.clear();
    const ctl = new AbortController();
    server.beforeResponse = (p) => {
      if (p === shardPath(2)) ctl.abort();
    };
    try {
      const { result } = await load({ signal: ctl.signal });
      await assert.rejects(result, { name: "AbortError" });
    } finally {
      server.beforeResponse = undefined;
    }
  });

  test("manifest: unknown version and format are rejected", async () => {
    const dir = tmpDir();
    const m = { ...bundle.manifest, version: 2 };
    writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(m));
    await assert.rejects(BundleLoader.open(dir, { cache: null }), (e: unknown) => e instanceof ManifestError && /version 2/.test(e.message));
    writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ ...m, version: 1, format: "other" }));
    await assert.rejects(BundleLoader.open(dir, { cache: null }), /not an llmpack bundle/);
    writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ ...m, version: 1, tensors: [{ ...m.tensors[0], offset: 1 << 30 }] }));
    await assert.rejects(BundleLoader.open(dir, { cache: null }), /past the end of shard 0/);
    const big = m.tensors[2];
    writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ ...m, version: 1, tensors: [{ ...big, bytes: big.bytes + 100 * SHARD }] }));
    await assert.rejects(BundleLoader.open(dir, { cache: null }), /runs past the last shard/);
  });

  test("bundle files are verified against the manifest", async () => {
    server.faults.clear();
    const loader = await BundleLoader.open(server.url, { cache: null });
    assert.deepEqual(await loader.fetchJson("extra.json"), { hello: "world" });
    server.faults.set("extra.json", { fault: "corrupt", times: Infinity });
    await assert.rejects(loader.fetchFile("extra.json"), /extra\.json failed verification/);
    server.faults.clear();
  });
});

describe("persistent cache", () => {
  test("a second load makes no shard request; a rotten entry is refetched", async () => {
    server.faults.clear();
    const cacheDir = tmpDir();
    const first = await load({ cacheDir });
    assert.equal((await first.result).networkShards, bundle.manifest.shards.length);
    assert.equal(readdirSync(cacheDir).filter((f) => f.endsWith(".bin")).length, new Set(bundle.manifest.shards.map((s: any) => s.sha256)).size);
    assert.ok(!readdirSync(cacheDir).some((f) => f.includes("partial")));

    const n = server.log.length;
    const second = await load({ cacheDir });
    const stats = await second.result;
    assert.deepEqual(server.log.slice(n), ["manifest.json"]);
    assert.equal(stats.cachedShards, bundle.manifest.shards.length);
    assert.equal(stats.networkBytes, 0);
    assert.ok(second.sink.committedTensorsMatch());

    // Flip a byte of a cached shard: it is re-hashed on read, dropped and fetched again.
    const sha = bundle.manifest.shards[3].sha256;
    const file = path.join(cacheDir, `${sha}.bin`);
    const data = readFileSync(file);
    data.writeUInt8(data.readUInt8(10) ^ 1, 10);
    writeFileSync(file, data);
    const m = server.log.length;
    const third = await load({ cacheDir });
    const s3 = await third.result;
    assert.deepEqual(server.log.slice(m), ["manifest.json", shardPath(3)]);
    assert.equal(s3.networkShards, 1);
    assert.ok(third.sink.events.some((e) => e.startsWith("discard 3")));
    assert.ok(third.sink.committedTensorsMatch());
    assert.ok(readFileSync(file).equals(readFileSync(path.join(bundle.dir, shardPath(3)))));
  });

  test("an interrupted load resumes without refetching verified shards; nothing unverified is stored", async () => {
    server.faults.clear();
    const cacheDir = tmpDir();
    const ctl = new AbortController();
    server.faults.set(shardPath(2), { fault: "corrupt", times: Infinity });
    const first = await load({
      cacheDir,
      concurrency: 1,
      signal: ctl.signal,
      onSink: (s) => (s.onCommit = (i) => i === 1 && ctl.abort()),
    });
    await assert.rejects(first.result, { name: "AbortError" });
    const stored = readdirSync(cacheDir);
    assert.deepEqual(stored.sort(), [0, 1].map((i) => `${bundle.manifest.shards[i].sha256}.bin`).sort());

    server.faults.clear();
    const n = server.log.length;
    const second = await load({ cacheDir, concurrency: 1 });
    const stats = await second.result;
    assert.equal(stats.cachedShards, 2);
    const fetched = server.log.slice(n).filter((p) => p.startsWith("shards/"));
    assert.deepEqual(fetched, bundle.manifest.shards.slice(2).map((s: any) => s.file));
    assert.ok(second.sink.committedTensorsMatch());
  });

  test("a corrupt shard never enters the cache", async () => {
    const cacheDir = tmpDir();
    server.faults.clear();
    server.faults.set(shardPath(0), { fault: "corrupt", times: Infinity });
    const { result } = await load({ cacheDir, concurrency: 1 });
    await assert.rejects(result, ShardError);
    assert.ok(!readdirSync(cacheDir).includes(`${bundle.manifest.shards[0].sha256}.bin`));
    assert.ok(!readdirSync(cacheDir).some((f) => f.includes("partial")));
    server.faults.clear();
  });
});

describe("bundle location", () => {
  test("a folder path, a file: URL and a manifest URL all load in Node", async () => {
    for (const where of [bundle.dir, `file://${bundle.dir}/`, `${server.url}manifest.json`]) {
      const loader = await BundleLoader.open(where, { cache: null });
      const sink = new RecordingSink(bundle, loader.layout);
      await loader.loadShards(sink, { chunkBytes: CHUNK });
      assert.ok(sink.committedTensorsMatch(), where);
      assert.equal(sink.committed.size, bundle.manifest.shards.length);
    }
  });
});
