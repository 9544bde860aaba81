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
export function makeBundle(
  tensors: FakeTensor[],
  shardSize: number,
  dir = tmpDir(),
  extra: { files?: Record<string, string>; manifest?: Record<string, unknown> } = {},
): FakeBundle {
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
  const files = Object.entries({ "extra.json": JSON.stringify({ hello: "world" }), ...extra.files }).map(([name, text]) => {
    const data = Buffer.from(text);
    writeFileSync(path.join(dir, name), data);
    return { path: name, bytes: data.length, sha256: sha256hex(data) };
  });
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
    files,
    memory: { weights_bytes: 0, kv_cache_bytes_per_token: 0, context_window: 64, estimate_bytes: 0 },
    ...extra.manifest,
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

function contentType(file: string): string {
  const types: Record<string, string> = { ".js": "text/javascript", ".json": "application/json", ".html": "text/html", ".map": "application/json" };
  return types[path.extname(file)] ?? "application/octet-stream";
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
        const mid = bad.length >> 1;
        bad.writeUInt8(bad.readUInt8(mid) ^ 0xff, mid);
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
        res.writeHead(200, { "content-length": data.length, "content-type": contentType(urlPath) }).end(data);
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
    this.layout.route(shard, offset, chunk, (t, p, o, bytes) => {
      const part = this.parts[t]?.[p];
      if (!part) throw new Error(`the layout routed bytes to part ${p} of tensor ${t}, which the bundle lacks`);
      part.set(bytes, o);
    });
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
      ps.every((p, i) => Buffer.from(p).equals(this.parts[t]?.[i] ?? new Uint8Array())),
    );
  }
}

export function readJson(file: string): any {
  return JSON.parse(readFileSync(file, "utf8"));
}

/**
 * The byte <-> printable-character table of byte-level BPE (GPT-2): printable Latin-1
 * bytes stand for themselves, the others are shifted to U+0100 onwards.
 */
function byteChars(): string[] {
  const direct = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(direct(b) ? b : next++));
}

export const CHATML =
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/**
 * A byte-level BPE tokenizer without merges: token id = byte value, so every
 * non-ASCII character spans several tokens; 256 = <|im_start|>, 257 = <|im_end|>.
 */
export function byteTokenizerFiles(): Record<string, string> {
  const vocab: Record<string, number> = {};
  byteChars().forEach((c, b) => (vocab[c] = b));
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(256, "<|im_start|>"), special(257, "<|im_end|>")],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: { ...vocab, "<|im_start|>": 256, "<|im_end|>": 257 }, merges: [] },
  };
  const config = { bos_token: "<|im_start|>", eos_token: "<|im_end|>", tokenizer_class: "PreTrainedTokenizerFast", clean_up_tokenization_spaces: false };
  return { "tokenizer.json": JSON.stringify(tokenizer), "tokenizer_config.json": JSON.stringify(config) };
}

/** A bundle with tiny fake weights, the byte tokenizer and a ChatML template. */
export function makeChatBundle(opts: { contextWindow?: number; generation?: Record<string, unknown>; chatTemplate?: string } = {}): FakeBundle {
  return makeBundle([{ name: "w", parts: [3000, 100] }, { name: "v", parts: [5000] }], 4096, tmpDir(), {
    files: byteTokenizerFiles(),
    manifest: {
      model: { name: "fake-chat", architecture: "llama", config: { vocab_size: 258, hidden_size: 4, num_hidden_layers: 1, max_position_embeddings: 1024 } },
      tokenizer: { file: "tokenizer.json", config_file: "tokenizer_config.json", chat_template: opts.chatTemplate ?? CHATML, bos_token: "<|im_start|>", eos_token: "<|im_end|>", add_bos_token: false },
      generation: { eos_token_ids: [257], bos_token_id: 256, temperature: 0, top_p: 1, top_k: 0, repetition_penalty: 1, max_new_tokens: 64, ...opts.generation },
      memory: { weights_bytes: 8192, kv_cache_bytes_per_token: 0, context_window: opts.contextWindow ?? 256, estimate_bytes: 0 },
    },
  });
}
