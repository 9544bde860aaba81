/**
 * Finite storage (issue 15): the Cache API store asks `navigator.storage.estimate()`
 * before storing shards and `persist()` once; a QuotaExceededError ends caching for the
 * load, never the load itself.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { CacheApiCache, type StorageLike } from "../src/cache.js";
import { BundleLoader } from "../src/loader.js";
import { type FakeBundle, RecordingSink, type TestServer, makeBundle, serve, tmpDir } from "./fixtures.js";

/** A Cache API stand-in: stores whole responses; `full` makes put() reject as a browser over quota does. */
class FakeCache {
  readonly entries = new Map<string, Uint8Array>();
  puts = 0;
  constructor(public full = false) {}
  async put(key: string, res: Response): Promise<void> {
    this.puts++;
    const data = new Uint8Array(await res.arrayBuffer());
    if (this.full) throw new DOMException("the quota has been exceeded", "QuotaExceededError");
    this.entries.set(key, data);
  }
  async match(key: string): Promise<Response | undefined> {
    const data = this.entries.get(key);
    return data ? new Response(data as Uint8Array<ArrayBuffer>) : undefined;
  }
  async delete(key: string): Promise<boolean> {
    return this.entries.delete(key);
  }
}

function fakeStorage(quota: number, usage: number) {
  const calls: string[] = [];
  const storage: StorageLike = {
    estimate: async () => (calls.push("estimate"), { quota, usage }),
    persisted: async () => (calls.push("persisted"), false),
    persist: async () => (calls.push("persist"), true),
  };
  return { storage, calls };
}

let bundle: FakeBundle;
let server: TestServer;
before(async () => {
  bundle = makeBundle([{ name: "a", parts: [4000] }, { name: "b", parts: [4000] }, { name: "c", parts: [4000] }], 4096, tmpDir());
  server = await serve(bundle.dir);
});
after(() => server.close());

async function loadWith(store: CacheApiCache) {
  const loader = await BundleLoader.open(server.url, { cache: store });
  const sink = new RecordingSink(bundle, loader.layout);
  const stats = await loader.loadShards(sink, { chunkBytes: 1024 });
  assert.ok(sink.committedTensorsMatch());
  return stats;
}

describe("Cache API storage limits", () => {
  test("estimate() first: only the shards that fit are stored; persist() is asked once", async () => {
    const cache = new FakeCache();
    const { storage, calls } = fakeStorage(100_000, 100_000 - 9000); // room for two 4000-byte shards
    await loadWith(new CacheApiCache(cache as unknown as Cache, storage));
    assert.equal(cache.entries.size, 2);
    assert.equal(cache.puts, 2);
    await loadWith(new CacheApiCache(cache as unknown as Cache, storage));
    assert.equal(calls.filter((c) => c === "persist").length, 1, calls.join(","));
    assert.ok(calls.filter((c) => c === "estimate").length >= 2);
  });

  test("a QuotaExceededError ends caching for the load, and the load completes", async () => {
    const cache = new FakeCache(true);
    const stats = await loadWith(new CacheApiCache(cache as unknown as Cache, fakeStorage(1e12, 0).storage));
    assert.equal(stats.networkShards, bundle.manifest.shards.length);
    assert.equal(cache.entries.size, 0);
    // (two shards are in flight at once: the second may have started before the first failed)
    assert.ok(cache.puts <= 2 && cache.puts < bundle.manifest.shards.length, `no write after the store said it is full (${cache.puts} puts)`);
  });

  test("without navigator.storage the store still works", async () => {
    const cache = new FakeCache();
    const store = new CacheApiCache(cache as unknown as Cache, undefined);
    assert.equal(await store.available(), null);
    await loadWith(store);
    assert.equal(cache.entries.size, bundle.manifest.shards.length);
    const n = server.log.length;
    const stats = await loadWith(store);
    assert.equal(stats.cachedShards, bundle.manifest.shards.length);
    assert.deepEqual(server.log.slice(n), ["manifest.json"]);
  });
});
