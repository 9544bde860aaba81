/**
 * Test fixtures: small bundles written per docs/bundle.md (hashed with node:crypto,
 * independently of the runtime's @noble/hashes), and a local HTTP server that can
 * corrupt, cut or mis-announce files and logs every request.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

const ALIGN = 256;

export interface FakeTensor {
  name: string;
  /** byte sizes of its parts */
  parts: number[];
}

export interface FakeBundle {
  dir: string;
  manifest: any;
  /** the bytes of each tensor's parts, as written */
  parts: Uint8Array[][];
}

export function tmpDir(prefix = "llmpack-test-"): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

const sha256hex = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

/** Writes shards the way the packager does: cut at tensor boundaries, 256-byte aligned, big tensors span shards. */
export function makeBundle(tensors: FakeTensor[], shardSize: number, dir = tmpDir()): FakeBundle {
  mkdirSync(path.join(dir, "shards"), { recursive: true });
  const shards: any[] = [];
  let cur: Buffer[] = [];
  let pos = 0;
  const finish = () => {
    if (!cur.length) return;
    const data = Buffer.concat(cur);
    const sha = sha256hex(data);
    writeFileSync(path.join(dir, "shards", `${sha}.bin`), data);
    shards.push({ file: `shards/${sha}.bin`, bytes: data.length, sha256: sha });
    cur = [];
    pos = 0;
  };
  const write = (b: Buffer) => {
    cur.push(b);
    pos += b.length;
  };
  const records: any[] = [];
  const allParts: Uint8Array[][] = [];
  for (const t of tensors) {
    const parts: Uint8Array[] = [];
    const layout: any[] = [];
    const blobParts: Buffer[] = [];
    let off = 0;
    t.parts.forEach((n, i) => {
      const pad = (ALIGN - (off % ALIGN)) % ALIGN;
      if (pad) blobParts.push(Buffer.alloc(pad));
      off += pad;
      const data = randomBytes(n);
      parts.push(new Uint8Array(data));
      blobParts.push(data);
      layout.push({ name: `p${i}`, dtype: "u32", shape: [n], offset: off, bytes: n });
      off += n;
    });
    const blob = Buffer.concat(blobParts);
    if (cur.length) {
      const pad = (ALIGN - (pos % ALIGN)) % ALIGN;
      if (pos + pad + blob.length > shardSize) finish();
      else if (pad) write(Buffer.alloc(pad));
    }
    const start = { shard: shards.length, offset: pos };
    let view = blob;
    while (view.length) {
      const room = shardSize - pos;
      write(view.subarray(0, room));
      view = view.subarray(room);
      if (view.length) finish();
    }
    records.push({ name: t.name, shape: [blob.length], format: "f32", ...start, bytes: blob.length, parts: layout });
    allParts.push(parts);
  }
  finish();
  const tokenizer = Buffer.from(JSON.stringify({ hello: "world" }));
  writeFileSync(path.join(dir, "extra.json"), tokenizer);
  const manifest = {
    format: "llmpack-bundle",
    version: 1,
    generator: "test",
    model: { name: "fake", architecture: "llama", config: { vocab_size: 8, hidden_size: 4, num_hidden_layers: 1, max_position_embeddings: 64 } },
    quantization: { scheme: "f32", compute: "f32" },
    tokenizer: { file: "tokenizer.json", config_file: null, chat_template: null, bos_token: null, eos_token: null, add_bos_token: false },
    generation: { eos_token_ids: [0], bos_token_id: null, temperature: 0, top_p: 1, top_k: 0, repetition_penalty: 1, max_new_tokens: 8 },
    tensors: records,
    shards,
    files: [{ path: "extra.json", bytes: tokenizer.length, sha256: sha256hex(tokenizer) }],
    memory: { weights_bytes: 0, kv_cache_bytes_per_token: 0, context_window: 64, estimate_bytes: 0 },
  };
  writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(manifest, null, 1));
  return { dir, manifest, parts: allParts };
}

export type Fault =
  /** flip one byte of the body */
  | "corrupt"
  /** send half the body, then destroy the connection */
  | "drop"
  /** serve the body minus its last 256 bytes, with an honest Content-Length */
  | "short"
  /** chunked transfer (no Content-Length) with 256 extra bytes */
  | "long"
  | "404";

export interface TestServer {
  url: string;
  /** request paths, in order */
  log: string[];
  /** path -> fault and how many more requests it applies to (Infinity: all) */
  faults: Map<string, { fault: Fault; times: number }>;
  /** called before a response is sent; may delay it */
  beforeResponse?: (urlPath: string) => Promise<void> | void;
  close(): Promise<void>;
  requestsFor(prefix: string): number;
}

export async function serve(root: string): Promise<TestServer> {
  const log: string[] = [];
  const faults = new Map<string, { fault: Fault; times: number }>();
  const state: TestServer = {
    url: "",
    log,
    faults,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
    requestsFor: (prefix) => log.filter((p) => p.startsWith(prefix)).length,
  };
  const server = http.createServer(async (req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url!, "http://x").pathname).replace(/^\//, "");
    log.push(urlPath);
    await state.beforeResponse?.(urlPath);
    let data: Buffer;
    try {
      data = readFileSync(path.join(root, urlPath));
    } catch {
      res.writeHead(404).end();
      return;
    }
    const f = faults.get(urlPath);
    const fault = f && f.times > 0 ? f.fault : null;
    if (f && fault) f.times--;
    switch (fault) {
      case "404":
        res.writeHead(404).end();
        return;
      case "corrupt": {
        const bad = Buffer.from(data);
        bad[bad.length >> 1] ^= 0xff;
        res.writeHead(200, { "content-length": bad.length }).end(bad);
        return;
      }
      case "drop":
        res.writeHead(200, { "content-length": data.length });
        res.write(data.subarray(0, data.length >> 1), () => setTimeout(() => res.socket?.destroy(), 5));
        return;
      case "short": {
        const cut = data.subarray(0, Math.max(0, data.length - 256));
        res.writeHead(200, { "content-length": cut.length }).end(cut);
        return;
      }
      case "long":
        res.writeHead(200, { "transfer-encoding": "chunked" });
        res.write(data);
        res.end(Buffer.alloc(256));
        return;
      default:
        res.writeHead(200, { "content-length": data.length }).end(data);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return state;
}

/** A ShardSink that records everything and reassembles the parts from the routed chunks. */
export class RecordingSink {
  readonly events: string[] = [];
  readonly committed = new Set<number>();
  /** parts as written (copied out of the loader's reusable chunks) */
  readonly parts: Uint8Array[][];
  readonly chunks: { shard: number; offset: number; length: number }[] = [];

  constructor(private readonly bundle: FakeBundle, private readonly layout: import("../src/layout.js").ShardLayout) {
    this.parts = bundle.parts.map((ps) => ps.map((p) => new Uint8Array(p.length)));
  }

  onCommit?: (shard: number) => void;

  write(shard: number, offset: number, chunk: Uint8Array): void {
    if (this.committed.has(shard)) throw new Error(`write to committed shard ${shard}`);
    this.chunks.push({ shard, offset, length: chunk.length });
    this.layout.route(shard, offset, chunk, (t, p, o, bytes) => this.parts[t][p].set(bytes, o));
  }

  commit(shard: number): void {
    this.events.push(`commit ${shard}`);
    this.committed.add(shard);
    this.onCommit?.(shard);
  }

  discard(shard: number, reason: Error): void {
    this.events.push(`discard ${shard}: ${reason.message}`);
  }

  /** parts of tensors whose shards all committed */
  committedTensorsMatch(): boolean {
    return this.bundle.parts.every((ps, t) =>
      !this.layout.shardsOfTensor(t).every((s) => this.committed.has(s)) ||
      ps.every((p, i) => Buffer.from(p).equals(Buffer.from(this.parts[t][i]))),
    );
  }
}

export function readJson(file: string): any {
  return JSON.parse(readFileSync(file, "utf8"));
}
