import { test } from "node:test";
import assert from "node:assert/strict";
import { ShardLayout } from "../src/layout.js";
import { BundleLoader, type ShardSink } from "../src/loader.js";
import { parseManifest } from "../src/manifest.js";
import { makeBundle } from "./fixtures.js";

const SHARD = 2048;
const bundle = makeBundle(
  [
    { name: "small", parts: [100, 30] },
    { name: "huge", parts: [5000, 1000] }, // 6120 bytes with padding: spans 3 shards
    { name: "tail", parts: [10] },
  ],
  SHARD,
);
const layout = new ShardLayout(parseManifest(bundle.manifest));

test("parts of a spanning tensor continue at offset 0 of the following shards", () => {
  assert.deepEqual(layout.shardsOfTensor(0), [0]);
  assert.deepEqual(layout.shardsOfTensor(1), [1, 2, 3]);
  assert.deepEqual(layout.shardsOfTensor(2), [4]);
  const spans = layout.partsInShard(3);
  // shard 3 holds the end of part 0 (bytes 4096..5000) and the start of part 1
  assert.deepEqual(spans[0], { tensor: 1, part: 0, offsetInPart: 2 * SHARD, offsetInShard: 0, bytes: 5000 - 2 * SHARD });
  const second = spans[1];
  assert.ok(second);
  assert.equal(second.part, 1);
  assert.equal(second.offsetInShard % 256, 0);
});

test("every part byte is covered exactly once, by route() and by partsInShard()", () => {
  const m = bundle.manifest;
  const covered = bundle.parts.map((ps) => ps.map((p) => new Uint8Array(p.length)));
  m.shards.forEach((s: { bytes: number }, i: number) => {
    for (let off = 0; off < s.bytes; off += 300) {
      const chunk = new Uint8Array(Math.min(300, s.bytes - off));
      layout.route(i, off, chunk, (t, p, o, bytes) => {
        const part = covered[t]?.[p];
        assert.ok(part, `tensor ${t} part ${p}`);
        const seen = part.subarray(o, o + bytes.length);
        seen.forEach((n, k) => (seen[k] = n + 1));
      });
    }
    for (const sp of layout.partsInShard(i)) assert.equal(sp.offsetInShard + sp.bytes <= s.bytes, true);
  });
  assert.ok(covered.flat().every((c) => c.every((v) => v === 1)));
  const total = bundle.parts.flat().reduce((a, p) => a + p.length, 0);
  const viaSpans = m.shards.reduce((a: number, _: unknown, i: number) => a + layout.partsInShard(i).reduce((b, sp) => b + sp.bytes, 0), 0);
  assert.equal(viaSpans, total);
});

test("staging strategy: copy a verified shard to its parts on commit", async () => {
  // The alternative to write-through that ShardSink documents: unverified bytes land
  // in a shard-sized staging area, and only commit() copies them to the weights.
  const loader = await BundleLoader.open(bundle.dir, { cache: null });
  const weights = bundle.parts.map((ps) => ps.map((p) => new Uint8Array(p.length)));
  const staging = bundle.manifest.shards.map((s: { bytes: number }) => new Uint8Array(s.bytes));
  const sink: ShardSink = {
    write: (shard, offset, chunk) => staging[shard]?.set(chunk, offset),
    commit: (shard) => {
      const stage = staging[shard];
      assert.ok(stage);
      for (const sp of loader.layout.partsInShard(shard)) {
        const part = weights[sp.tensor]?.[sp.part];
        assert.ok(part);
        part.set(stage.subarray(sp.offsetInShard, sp.offsetInShard + sp.bytes), sp.offsetInPart);
      }
    },
  };
  await loader.loadShards(sink, { chunkBytes: 256 });
  bundle.parts.forEach((ps, t) => ps.forEach((p, i) => assert.deepEqual(weights[t]?.[i], p)));
});
