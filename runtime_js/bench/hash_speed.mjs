// sha256 throughput of the loader's three methods in Node (src/sha256.ts): node:crypto
// incremental (1 MiB updates), WebCrypto (one digest per 32 MiB shard), @noble/hashes
// incremental (JS). Usage: node bench/hash_speed.mjs [MiB, default 256]
import { createHash, randomBytes } from "node:crypto";
import { sha256 } from "@noble/hashes/sha2.js";

const MiB = 1 << 20;
const data = randomBytes(Number(process.argv[2] ?? 256) * MiB);

async function rate(name, bytes, fn) {
  const t0 = performance.now();
  await fn(bytes);
  const s = (performance.now() - t0) / 1000;
  console.log(`${name}: ${(bytes.length / 1e6 / s).toFixed(0)} MB/s`);
}

await rate("node:crypto, incremental", data, (d) => {
  const h = createHash("sha256");
  for (let o = 0; o < d.length; o += MiB) h.update(d.subarray(o, o + MiB));
  h.digest();
});
await rate("WebCrypto, one digest per 32 MiB", data, async (d) => {
  for (let o = 0; o < d.length; o += 32 * MiB) await crypto.subtle.digest("SHA-256", d.subarray(o, o + 32 * MiB));
});
await rate("@noble/hashes, incremental", data.subarray(0, Math.min(data.length, 64 * MiB)), (d) => {
  const h = sha256.create();
  for (let o = 0; o < d.length; o += MiB) h.update(d.subarray(o, o + MiB));
  h.digest();
});
