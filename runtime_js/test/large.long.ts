/**
 * A bundle past 4 GiB (17 shards of 256 MiB, tensors spanning shards) streams through
 * the loader into a sink with no ArrayBuffer growing with the model: DESIGN.md's
 * "models past 2 GiB and 4 GiB must load". Shard bytes are generated on the fly (a
 * rotated 1 MiB random block per MiB), so nothing of that size touches the disk; their
 * hashes come from node:crypto over the same generator (before the timed load). The
 * loader verifies with node:crypto too (its default in Node; `LLMPACK_HASHING=js` or
 * `webcrypto` picks another method); the MB/s of the load are printed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { BundleLoader, type ShardSink } from "../src/loader.js";
import type { HashMethod } from "../src/sha256.js";

const MiB = 1 << 20;
const SHARD = 256 * MiB;
const SHARDS = 17; // 4.25 GiB: stream coordinates and byte counts pass 2^32
const BASE = randomBytes(MiB);

/** Block j (1 MiB) of shard i is BASE rotated left by rot(i, j) bytes. */
const rot = (i: number, j: number) => ((i * 131 + j * 17) * 4096) % MiB;
const blockHalves = (i: number, j: number): [Buffer, Buffer] => [BASE.subarray(rot(i, j)), BASE.subarray(0, rot(i, j))];

function shardSha256(i: number): string {
  const h = createHash("sha256");
  for (let j = 0; j < SHARD / MiB; j++) for (const half of blockHalves(i, j)) h.update(half);
  return h.digest("hex");
}

/** Tensor sizes in MiB, laid out as the packager does: one larger than a shard starts at offset 0. */
function tensors(): { shard: number; offset: number; bytes: number }[] {
  const out: { shard: number; offset: number; bytes: number }[] = [];
  for (let g = 0; g < 3; g++) {
    const s = 5 * g;
    out.push({ shard: s, offset: 0, bytes: 640 * MiB }); // shards s, s+1 and half of s+2
    out.push({ shard: s + 2, offset: 128 * MiB, bytes: 128 * MiB });
    out.push({ shard: s + 3, offset: 0, bytes: 512 * MiB }); // shards s+3, s+4
  }
  out.push({ shard: 15, offset: 0, bytes: 256 * MiB });
  out.push({ shard: 16, offset: 0, bytes: 128 * MiB }, { shard: 16, offset: 128 * MiB, bytes: 128 * MiB });
  return out;
}

function manifest() {
  const shards = Array.from({ length: SHARDS }, (_, i) => {
    const sha256 = shardSha256(i);
    return { file: `shards/${sha256}.bin`, bytes: SHARD, sha256 };
  });
  const records = tensors().map((t, k) => ({
    name: `t${k}`, shape: [t.bytes / 4], format: "f32", ...t,
    parts: [{ name: "p0", dtype: "u32", shape: [t.bytes / 4], offset: 0, bytes: t.bytes }],
  }));
  return {
    format: "llmpack-bundle", version: 1, generator: "test",
    model: { name: "huge", architecture: "llama", config: { vocab_size: 8, hidden_size: 4, num_hidden_layers: 1, max_position_embeddings: 64 } },
    quantization: { scheme: "f32", compute: "f32" },
    tokenizer: { file: "tokenizer.json", config_file: null, chat_template: null, bos_token: null, eos_token: null, add_bos_token: false },
    generation: { eos_token_ids: [0], bos_token_id: null, temperature: 0, top_p: 1, top_k: 0, repetition_penalty: 1, max_new_tokens: 8 },
    tensors: records, shards, files: [],
    memory: { weights_bytes: SHARDS * SHARD, kv_cache_bytes_per_token: 0, context_window: 64, estimate_bytes: SHARDS * SHARD },
  };
}

test("a 4.25 GiB bundle streams through in chunks, with memory flat", async () => {
  const m = manifest();
  const byFile = new Map(m.shards.map((s, i) => [`/${s.file}`, i]));
  const server = http.createServer(async (req, res) => {
    if (req.url === "/manifest.json") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(m));
      return;
    }
    const i = byFile.get(req.url!);
    if (i === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": SHARD, "content-type": "application/octet-stream" });
    for (let j = 0; j < SHARD / MiB; j++) {
      const [a, b] = blockHalves(i, j);
      res.write(a);
      if (!res.write(b)) await new Promise((r) => res.once("drain", r));
    }
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    const hashing = (process.env.LLMPACK_HASHING || "auto") as HashMethod | "auto";
    const loader = await BundleLoader.open(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, { cache: null, hashing });
    let maxArrayBuffers = 0;
    let maxChunk = 0;
    let chunks = 0;
    const written = new Array(SHARDS).fill(0);
    const committed: number[] = [];
    const tensorBytes = new Array(m.tensors.length).fill(0);
    const sink: ShardSink = {
      write(shard, offset, chunk) {
        // chunks are MiB-aligned, so each is one generated block: compare it whole
        assert.equal(offset % MiB, 0);
        const [a, b] = blockHalves(shard, offset / MiB);
        assert.ok(Buffer.from(chunk.buffer, chunk.byteOffset, a.length).equals(a), `shard ${shard} at ${offset}`);
        assert.ok(Buffer.from(chunk.buffer, chunk.byteOffset + a.length, b.length).equals(b), `shard ${shard} at ${offset}`);
        written[shard] = (written[shard] ?? 0) + chunk.length;
        maxChunk = Math.max(maxChunk, chunk.length);
        if (++chunks % 64 === 0) maxArrayBuffers = Math.max(maxArrayBuffers, process.memoryUsage().arrayBuffers);
      },
      commit(shard) {
        committed.push(shard);
        for (const span of loader.layout.partsInShard(shard)) tensorBytes[span.tensor] += span.bytes;
      },
    };
    const stats = await loader.loadShards(sink, { chunkBytes: MiB, concurrency: 2 });
    assert.deepEqual(written, new Array(SHARDS).fill(SHARD));
    assert.deepEqual(committed.sort((x, y) => x - y), [...Array(SHARDS).keys()]);
    assert.deepEqual(tensorBytes, m.tensors.map((t) => t.bytes));
    assert.equal(loader.layout.totalBytes, SHARDS * SHARD);
    assert.ok(loader.layout.totalBytes > 2 ** 32);
    assert.equal(maxChunk, MiB);
    // two shards in flight, each one chunk at a time: a few MiB, not gigabytes
    assert.ok(maxArrayBuffers < 64 * MiB, `ArrayBuffers peaked at ${(maxArrayBuffers / MiB).toFixed(1)} MiB`);
    const mbs = stats.bytes / 1e6 / (stats.ms / 1000);
    console.log(`4.25 GiB bundle (hashing ${hashing}): ${mbs.toFixed(0)} MB/s, ${JSON.stringify(stats)}; ArrayBuffers peak ${(maxArrayBuffers / MiB).toFixed(1)} MiB`);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
