/**
 * SHA-256 for verifying shards and bundle files, at native speed where the platform
 * offers it:
 *
 * - "node": node:crypto's incremental hash (OpenSSL; streams, no buffering).
 * - "webcrypto": `crypto.subtle.digest`, one call over a whole shard. Browsers and
 *   workers have it in secure contexts (https, localhost). It is one-shot, so the
 *   loader copies the shard into one shard-sized buffer while it streams the chunks on,
 *   and hashes that buffer at the end: used for shards up to WEBCRYPTO_MAX_BYTES.
 * - "js": @noble/hashes, incremental, in JavaScript (about 110-150 MB/s): pages without
 *   crypto.subtle (http: other than localhost) and shards above that bound.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { isNode } from "./fetch.js";

export type HashMethod = "node" | "webcrypto" | "js";

/**
 * Largest shard hashed with WebCrypto (held whole in one buffer while it streams);
 * larger ones are hashed incrementally in JS. Shards are 32 MiB by default.
 */
export const WEBCRYPTO_MAX_BYTES = 128 << 20;

export interface IncrementalHash {
  update(data: Uint8Array): void;
  /** lowercase hex */
  digestHex(): string;
}

type NodeCrypto = typeof import("node:crypto");
let nodeCrypto: Promise<NodeCrypto | null> | null = null;

function loadNodeCrypto(): Promise<NodeCrypto | null> {
  nodeCrypto ??= isNode ? import("node:crypto").catch(() => null) : Promise.resolve(null);
  return nodeCrypto;
}

/** WebCrypto's SubtleCrypto, or null (insecure contexts have none). */
export function subtleCrypto(): SubtleCrypto | null {
  return (globalThis as { crypto?: Crypto }).crypto?.subtle ?? null;
}

/** The method for a shard of `bytes` bytes: `wanted` if it can run here, else the best available. */
export async function hashMethod(wanted: HashMethod | "auto", bytes: number): Promise<HashMethod> {
  const webcrypto = subtleCrypto() !== null && bytes <= WEBCRYPTO_MAX_BYTES;
  if (wanted === "js" || (wanted === "webcrypto" && webcrypto)) return wanted;
  if (await loadNodeCrypto()) return "node";
  return webcrypto ? "webcrypto" : "js";
}

/** An incremental hash ("node" or "js"). */
export async function incrementalSha256(method: "node" | "js"): Promise<IncrementalHash> {
  const nc = method === "node" ? await loadNodeCrypto() : null;
  if (nc) {
    const h = nc.createHash("sha256");
    return { update: (d) => void h.update(d), digestHex: () => h.digest("hex") };
  }
  const h = sha256.create();
  return { update: (d) => void h.update(d), digestHex: () => bytesToHex(h.digest()) };
}

/** WebCrypto's digest of `data` (which must not be a view of a SharedArrayBuffer). */
export async function webcryptoSha256(data: Uint8Array): Promise<string> {
  const subtle = subtleCrypto();
  if (!subtle) throw new Error("crypto.subtle is unavailable here");
  return bytesToHex(new Uint8Array(await subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>)));
}

/** The sha256 (hex) of a whole (small) array, by the fastest method here. */
export async function sha256Hex(data: Uint8Array, wanted: HashMethod | "auto" = "auto"): Promise<string> {
  const method = await hashMethod(wanted, data.length);
  if (method === "webcrypto") return webcryptoSha256(data);
  const h = await incrementalSha256(method);
  h.update(data);
  return h.digestHex();
}
