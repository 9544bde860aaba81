/**
 * Bundle loader: fetches manifest.json, then streams every weight shard through an
 * incremental sha256 into a {@link ShardSink} (in practice a backend writing GPU or
 * Wasm buffers), never holding more than `chunkBytes` of a shard in one ArrayBuffer.
 *
 * Verified-before-use. Bytes reach the sink before the shard's hash is known (a
 * shard is only ever in memory one chunk at a time), so the sink sees two kinds of
 * calls: `write` (unverified bytes) and `commit` (the shard's sha256 matched; its
 * bytes may now be used). On a failed attempt (hash mismatch, wrong length, broken
 * connection) the loader calls `discard`, then streams the whole shard again exactly
 * once (rewriting every byte of it) or rejects with a {@link ShardError} naming the
 * shard. `loadShards` resolves only after every shard was committed. A backend must
 * therefore not run anything before `loadShards` resolved, and must drop its buffers
 * if it rejects. See ShardSink for the two ways a backend can stage the bytes.
 *
 * Persistence: each shard is also streamed into a {@link ShardCache} entry that is
 * committed only once the hash matched, so a later load (or a resumed interrupted
 * one) reads verified shards from the cache, hashing them again as they are read,
 * and touches the network only for the rest.
 */
import { type CacheWriter, type ShardCache, openDefaultCache } from "./cache.js";
import { type FetchLike, defaultFetch, isNode } from "./fetch.js";
import { ShardLayout } from "./layout.js";
import { type FileRecord, type Manifest, type ShardRecord, isSafeBundlePath, parseManifest, shown } from "./manifest.js";
import { type HashMethod, type IncrementalHash, hashMethod, incrementalSha256, sha256Hex, webcryptoSha256 } from "./sha256.js";

export type LoadPhase = "manifest" | "files" | "weights" | "backend" | "ready";

export interface ProgressReport {
  phase: LoadPhase;
  /** bytes of weights verified or in flight so far (phase "weights"); else 0 */
  bytesDone: number;
  bytesTotal: number;
  /** index of the shard this report is about (-1 when none) */
  shard: number;
  shards: number;
  /** whether that shard is being read from the persistent cache */
  fromCache?: boolean;
  text: string;
}

export type ProgressCallback = (p: ProgressReport) => void;

/**
 * Receives a shard's bytes as they stream. Chunks arrive in shard order; each starts
 * at a multiple of `chunkBytes` of its shard and is `chunkBytes` long except the
 * shard's last one, so offsets are 4-byte aligned as `GPUQueue.writeBuffer` needs.
 * A chunk is only valid until the returned promise settles (its memory is reused):
 * copy it or write it out before then. Different shards may interleave (concurrency).
 *
 * Two valid staging strategies for a backend:
 * - write-through: write each chunk straight into the destination buffers; they are
 *   not used before `loadShards` resolved, and a refetch after `discard` rewrites the
 *   same ranges. Costs no extra memory. (The WebGPU executor's choice.)
 * - staging buffer: write into a shard-sized staging buffer and copy it to the
 *   destinations (`ShardLayout.partsInShard`) in `commit`, so unverified bytes never
 *   touch a weight buffer.
 */
export interface ShardSink {
  write(shard: number, offsetInShard: number, chunk: Uint8Array): void | Promise<void>;
  /** The shard's sha256 matched: everything written for it is final and may be used. */
  commit(shard: number): void | Promise<void>;
  /** What was written for this shard is not to be trusted; a full rewrite follows or the load rejects. */
  discard?(shard: number, reason: Error): void | Promise<void>;
}

export class ShardError extends Error {
  override name = "ShardError";
  constructor(
    readonly shard: number,
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`shard ${shard} (${file}): ${message}`, options);
  }
}

export class BundleFileError extends Error {
  override name = "BundleFileError";
}

/**
 * A manifest or plan names a file outside the bundle's folder (an absolute URL, another
 * scheme or origin, a parent folder): refused before anything is fetched.
 */
export class BundlePathError extends BundleFileError {
  override name = "BundlePathError";
}

/**
 * A failure of one attempt to transfer bytes: worth a refetch (unlike sink or abort
 * errors). `transient` ones (a stall, a broken connection, a server error) get a few
 * retries with backoff; the others (wrong hash or length) one.
 */
class TransferError extends Error {
  constructor(
    message: string,
    readonly transient = false,
  ) {
    super(message);
  }
}

/** Default seconds without a byte before a transfer counts as stalled. */
export const DEFAULT_STALL_MS = 30_000;

/**
 * Arms a timer that fires when `ms` pass without a `kick()`: it sets `error`, calls
 * `onStall` (to abort the request) and rejects the promise being raced, if any.
 *
 * (No long-lived promise takes part in the race: a reaction left on one would keep
 * every raced result, i.e. every chunk read, alive until the timer ends.)
 */
class StallTimer {
  /** set once it fired: a transient TransferError */
  error: TransferError | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private waiting: ((e: TransferError) => void) | null = null;

  constructor(
    private readonly ms: number,
    private readonly onStall: () => void,
  ) {
    this.kick();
  }

  kick(): void {
    clearTimeout(this.timer);
    if (!(this.ms > 0 && this.ms < 2 ** 31)) return; // no stall limit
    this.timer = setTimeout(() => {
      this.error = new TransferError(`no data for ${this.ms / 1000} s (stalled)`, true);
      this.onStall();
      this.waiting?.(this.error);
    }, this.ms);
  }

  /** `p`, or the stall if it comes first. */
  race<T>(p: Promise<T>): Promise<T> {
    if (this.error) return Promise.reject(this.error);
    return new Promise<T>((resolve, reject) => {
      this.waiting = reject;
      p.then(
        (v) => {
          this.waiting = null;
          resolve(v);
        },
        (e) => {
          this.waiting = null;
          reject(e);
        },
      );
    });
  }

  stop(): void {
    clearTimeout(this.timer);
    this.waiting = null;
  }
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });

export interface LoaderOptions {
  fetch?: FetchLike;
  /** persistent store; undefined: the environment's default; null: none */
  cache?: ShardCache | null;
  /** Node: directory of the default store (default ~/.cache/llmpack/shards) */
  cacheDir?: string;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
  /** sha256 (hex) the manifest.json bytes must have, e.g. from a registry's index */
  manifestSha256?: string;
  /** a request or transfer with no byte for this long is stalled (default 30 s; also loadShards' default) */
  stallMs?: number;
  /**
   * how shards and files are verified (src/sha256.ts): "auto" (default; node:crypto in
   * Node, else WebCrypto for shards up to WEBCRYPTO_MAX_BYTES, else JS), or one method
   * where it can run (tests and benchmarks)
   */
  hashing?: HashMethod | "auto";
}

export interface LoadShardsOptions {
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
  /** shards transferred at once (default 2) */
  concurrency?: number;
  /** size of the chunks handed to the sink (default 1 MiB; a multiple of 256) */
  chunkBytes?: number;
  /** refetches of a shard after its bytes failed verification (default 1) */
  retries?: number;
  /** refetches after a stalled or broken transfer or a server error, with backoff (default 3) */
  networkRetries?: number;
  /** wait before the first network retry, doubled for each next one (default 1000 ms) */
  retryDelayMs?: number;
  /** a transfer with no byte for this long is stalled: aborted and retried (default 30 s) */
  stallMs?: number;
}

export interface LoadStats {
  shards: number;
  bytes: number;
  networkShards: number;
  networkBytes: number;
  cachedShards: number;
  /** attempts that failed and were repeated */
  refetches: number;
  ms: number;
}


/** Resolves a bundle location (folder URL, manifest URL, or in Node a path) to its folder URL. */
export async function bundleBaseUrl(location: string | URL): Promise<URL> {
  let url: URL;
  if (location instanceof URL) url = new URL(location.href);
  else if (/^[a-z][a-z0-9+.-]*:/i.test(location) && !/^[a-z]:[\\/]/i.test(location)) url = new URL(location);
  else if (isNode) url = (await import("node:url")).pathToFileURL((await import("node:path")).resolve(location));
  else url = new URL(location, globalThis.location?.href);
  if (url.pathname.endsWith("/manifest.json")) url = new URL(".", url);
  else if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}

const REPACKAGE = "package the model again with `llmpack package`";
/** manifest.json larger than this is refused unread (a real one is a few MB at most) */
const MAX_MANIFEST_BYTES = 64 << 20;

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The load was aborted", "AbortError");
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class BundleLoader {
  readonly layout: ShardLayout;
  private readonly filesByPath: Map<string, FileRecord>;

  private constructor(
    readonly baseUrl: URL,
    readonly manifest: Manifest,
    /** sha256 (hex) of the manifest.json bytes: identifies the bundle */
    readonly manifestSha256: string,
    readonly cache: ShardCache | null,
    private readonly fetchFn: FetchLike,
    /** @internal the stall limit of this loader's requests */
    readonly stallMs: number = DEFAULT_STALL_MS,
    /** @internal how shards and files are verified */
    readonly hashing: HashMethod | "auto" = "auto",
  ) {
    this.layout = new ShardLayout(manifest);
    this.filesByPath = new Map(manifest.files.map((f) => [f.path, f]));
  }

  /** Fetches and validates manifest.json (always from the network: it is what says what to load). */
  static async open(location: string | URL, opts: LoaderOptions = {}): Promise<BundleLoader> {
    const fetchFn = opts.fetch ?? defaultFetch;
    const stallMs = opts.stallMs ?? DEFAULT_STALL_MS;
    const base = await bundleBaseUrl(location);
    const url = new URL("manifest.json", base).href;
    opts.onProgress?.({ phase: "manifest", bytesDone: 0, bytesTotal: 0, shard: -1, shards: 0, text: `fetching ${url}` });
    let res: Response;
    try {
      res = await fetchOrStall(fetchFn, url, { signal: opts.signal, cache: "no-cache" }, stallMs);
    } catch (e) {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      throw new BundleFileError(`cannot fetch ${url}: ${message(e)}`, { cause: e });
    }
    if (!res.ok) throw new BundleFileError(`cannot fetch ${url}: HTTP ${res.status} ${res.statusText}`);
    if (!res.body) throw new BundleFileError(`cannot fetch ${url}: the response has no body`);
    let raw: Uint8Array;
    try {
      raw = await collect(res.body, opts.signal, MAX_MANIFEST_BYTES + 1, stallMs);
    } catch (e) {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      throw new BundleFileError(`cannot read ${url}: ${message(e)}`, { cause: e });
    }
    if (raw.length > MAX_MANIFEST_BYTES) {
      throw new BundleFileError(`${url} is larger than ${MAX_MANIFEST_BYTES >> 20} MiB: not a bundle manifest`);
    }
    // The manifest carries every shard's hash, so a registry's hash of the manifest makes
    // the whole load verifiable from the index alone.
    const want = opts.manifestSha256?.toLowerCase();
    const got = await sha256Hex(raw, opts.hashing);
    if (want !== undefined && got !== want) {
      throw new BundleFileError(
        `${url} has sha256 ${got.slice(0, 16)}…, the registry says ${want!.slice(0, 16)}…: ` +
          "the copy on the server is damaged or was replaced (run `llmpack registry verify` on the registry)",
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(raw));
    } catch {
      // (V8's message quotes the text: never echo a file's content)
      throw new BundleFileError(`${url} is not valid JSON; ${REPACKAGE}`);
    }
    const manifest = parseManifest(json);
    const cache = opts.cache !== undefined ? opts.cache : await openDefaultCache(opts.cacheDir);
    return new BundleLoader(base, manifest, got, cache, fetchFn, stallMs, opts.hashing);
  }

  /**
   * The URL of a file of the bundle. `path` must be a plain relative path (as the
   * manifest's checks allow) and resolve under the bundle's folder: same scheme, same
   * origin, inside its path. Anything else is a BundlePathError: a hostile manifest
   * cannot make the runtime read a local file or another server.
   */
  url(path: string): string {
    const refuse = () =>
      new BundlePathError(
        `the bundle names ${shown(path)}, which is not a file inside the bundle (${this.baseUrl.href}): ` +
          "a bundle may only name relative paths below its folder, never absolute URLs, other schemes or parent folders; " +
          "this bundle is damaged or hostile, do not load it",
      );
    if (!isSafeBundlePath(path)) throw refuse();
    const u = new URL(path, this.baseUrl);
    const base = this.baseUrl;
    if (u.protocol !== base.protocol || u.origin !== base.origin || !u.pathname.startsWith(base.pathname)) throw refuse();
    return u.href;
  }

  /**
   * A whole (small) bundle file such as tokenizer.json. Only files the manifest lists in
   * `files` are read: their size and sha256 are checked (one refetch on mismatch) and
   * they are kept in the persistent cache like a shard. Not for weights.
   */
  async fetchFile(path: string, signal?: AbortSignal): Promise<Uint8Array> {
    const url = this.url(path);
    const rec = this.filesByPath.get(path);
    if (!rec) {
      throw new BundleFileError(
        `the bundle's ${shown(path)} is not listed in the manifest's "files" (with its size and sha256), ` +
          `so it cannot be verified and is not read; ${REPACKAGE}`,
      );
    }
    if (this.cache) {
      const body = await this.cache.read(rec.sha256).catch(() => null);
      if (body) {
        const data = await collect(body, signal, rec.bytes + 1, this.stallMs).catch(() => null);
        if (data && data.length === rec.bytes && (await sha256Hex(data, this.hashing)) === rec.sha256) return data;
        signal?.throwIfAborted();
        await this.cache.delete(rec.sha256).catch(() => {});
      }
    }
    let problem = "";
    for (let attempt = 0; attempt < 2; attempt++) {
      let res: Response;
      try {
        res = await fetchOrStall(this.fetchFn, url, { signal, cache: attempt ? "reload" : "default" }, this.stallMs);
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        problem = message(e);
        continue;
      }
      if (!res.ok || !res.body) {
        throw new BundleFileError(`cannot fetch ${path} of the bundle (${url}): HTTP ${res.status} ${res.statusText}`);
      }
      let data: Uint8Array;
      try {
        // (a file larger than the manifest says is cut short: no unbounded read)
        data = await collect(res.body, signal, rec.bytes + 1, this.stallMs);
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        problem = message(e);
        continue;
      }
      const got = await sha256Hex(data, this.hashing);
      if (data.length === rec.bytes && got === rec.sha256) {
        if (this.cache) await storeWhole(this.cache, rec.sha256, data);
        return data;
      }
      problem = data.length !== rec.bytes ? `${data.length > rec.bytes ? "more than " : ""}${data.length} bytes, manifest says ${rec.bytes}` : `sha256 ${got}, manifest says ${rec.sha256}`;
    }
    throw new BundleFileError(`bundle file ${path} failed verification twice: ${problem}`);
  }

  async fetchText(path: string, signal?: AbortSignal): Promise<string> {
    return new TextDecoder().decode(await this.fetchFile(path, signal));
  }

  async fetchJson<T = unknown>(path: string, signal?: AbortSignal): Promise<T> {
    const text = await this.fetchText(path, signal);
    try {
      return JSON.parse(text) as T;
    } catch {
      // (V8's message quotes the text: never echo a file's content)
      throw new BundleFileError(`bundle file ${path} is not valid JSON; ${REPACKAGE}`);
    }
  }

  /** Streams every shard into `sink`; resolves once all of them were verified and committed. */
  async loadShards(sink: ShardSink, opts: LoadShardsOptions = {}): Promise<LoadStats> {
    const run = new ShardRun(this, sink, opts);
    return run.start();
  }

  /** @internal used by ShardRun */
  get fetcher(): FetchLike {
    return this.fetchFn;
  }
}

/** One `loadShards` call: a pool of workers, shared progress and the first failure. */
class ShardRun {
  private readonly shards;
  private readonly chunkBytes: number;
  private readonly retries: number;
  private readonly networkRetries: number;
  private readonly retryDelayMs: number;
  private readonly stallMs: number;
  private readonly ctl = new AbortController();
  private readonly done: number[]; // bytes counted per shard, so a retry can take them back
  private bytesDone = 0;
  private lastReport = -Infinity;
  private next = 0;
  private failure: unknown = null;
  /** the persistent cache said it is full: no more writes this load */
  private cacheFull = false;
  /** bytes the cache may still take this load (its estimate at the start, less what was stored) */
  private cacheRoom = Infinity;
  private readonly stats: LoadStats;

  constructor(
    private readonly loader: BundleLoader,
    private readonly sink: ShardSink,
    private readonly opts: LoadShardsOptions,
  ) {
    this.shards = loader.manifest.shards;
    this.chunkBytes = opts.chunkBytes ?? 1 << 20;
    if (this.chunkBytes < 256 || this.chunkBytes % 256) throw new RangeError("chunkBytes must be a positive multiple of 256");
    this.retries = opts.retries ?? 1;
    this.networkRetries = opts.networkRetries ?? 3;
    this.retryDelayMs = opts.retryDelayMs ?? 1000;
    this.stallMs = opts.stallMs ?? loader.stallMs;
    this.done = this.shards.map(() => 0);
    const bytes = this.shards.reduce((a, s) => a + s.bytes, 0);
    this.stats = { shards: this.shards.length, bytes, networkShards: 0, networkBytes: 0, cachedShards: 0, refetches: 0, ms: 0 };
  }

  async start(): Promise<LoadStats> {
    const t0 = performance.now();
    const user = this.opts.signal;
    user?.throwIfAborted();
    const onAbort = () => this.ctl.abort(user!.reason);
    user?.addEventListener("abort", onAbort, { once: true });
    try {
      // Ask once how much the store can take; a shard that does not fit is not stored.
      const room = await this.loader.cache?.available?.().catch(() => null);
      if (typeof room === "number") this.cacheRoom = room;
      const n = Math.max(1, Math.min(this.opts.concurrency ?? 2, this.shards.length));
      await Promise.all(Array.from({ length: n }, () => this.worker()));
      if (this.failure !== null) throw this.failure;
      if (user?.aborted) throw abortError(user);
    } finally {
      user?.removeEventListener("abort", onAbort);
    }
    this.report(-1, false, true);
    this.stats.ms = performance.now() - t0;
    return this.stats;
  }

  private async worker(): Promise<void> {
    const scratch: Scratch = { buffer: null };
    while (!this.ctl.signal.aborted) {
      const i = this.next++;
      const rec = this.shards[i];
      if (!rec) break; // every shard taken
      try {
        await this.loadShard(i, rec, scratch);
      } catch (e) {
        if (this.failure === null) this.failure = this.ctl.signal.aborted ? abortError(this.ctl.signal) : e;
        this.ctl.abort(this.failure);
        // (a ShardError's last attempt was already discarded)
        if (!(e instanceof ShardError)) {
          await Promise.resolve(this.sink.discard?.(i, e instanceof Error ? e : new Error(String(e)))).catch(() => {});
        }
      }
    }
  }

  private async loadShard(i: number, rec: ShardRecord, scratch: Scratch): Promise<void> {
    const cache = this.loader.cache;
    const signal = this.ctl.signal;
    if (cache) {
      const body = await cache.read(rec.sha256).catch(() => null);
      if (body) {
        try {
          await this.pump(i, rec, body, null, true, scratch);
          this.stats.cachedShards++;
          await this.sink.commit(i);
          return;
        } catch (e) {
          if (!(e instanceof TransferError)) throw e;
          // The stored copy rotted: forget it and fetch the shard like any other.
          await this.sink.discard?.(i, e);
          this.uncount(i);
          await cache.delete(rec.sha256).catch(() => {});
        }
      }
    }
    const url = this.loader.url(rec.file);
    let last: TransferError | null = null;
    let badBytes = 0; // attempts whose bytes failed verification
    let broken = 0; // attempts that stalled or broke
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) this.stats.refetches++;
      let writer: CacheWriter | null = null;
      // Per attempt: a stall aborts this request only, not the whole load.
      const attemptCtl = new AbortController();
      const onAbort = () => attemptCtl.abort(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      const stall = new StallTimer(this.stallMs, () => attemptCtl.abort(new Error("stalled")));
      try {
        // (once the timer fired, whatever the aborted request says, the stall is the reason)
        const body = await stall.race(this.request(url, rec.bytes, attempt, attemptCtl.signal)).catch((e) => {
          throw stall.error ?? e;
        });
        const staged = cache && this.roomFor(rec.bytes) ? await cache.write(rec.sha256, rec.bytes).catch((e) => this.cacheFailed(e)) : null;
        writer = staged && this.bestEffort(staged);
        await this.pump(i, rec, body, writer, false, scratch, stall);
        await writer?.commit();
        writer = null;
        this.stats.networkShards++;
        this.stats.networkBytes += rec.bytes;
        await this.sink.commit(i);
        return;
      } catch (e) {
        await writer?.abort();
        if (signal.aborted) throw abortError(signal);
        if (!(e instanceof TransferError)) throw e;
        last = e;
        await this.sink.discard?.(i, e);
        this.uncount(i);
        if (e.transient) broken++;
        else badBytes++;
        if (broken > this.networkRetries || badBytes > this.retries) break;
        // Back off before retrying a network failure: 1, 2, 4 ... times the delay.
        if (e.transient) await sleep(this.retryDelayMs * 2 ** (broken - 1), signal);
        if (signal.aborted) throw abortError(signal);
      } finally {
        stall.stop();
        signal.removeEventListener("abort", onAbort);
      }
    }
    const tries = badBytes + broken;
    const hint = last!.transient ? "; check the connection and the server, then load again (verified shards are kept)" : "";
    throw new ShardError(i, rec.file, `${last!.message} (${tries} attempt${tries > 1 ? "s" : ""})${hint}`, { cause: last });
  }

  private async request(url: string, bytes: number, attempt: number, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    let res: Response;
    try {
      // A refetch bypasses the HTTP cache, which may hold the bad copy.
      res = await this.loader.fetcher(url, { signal, cache: attempt > 0 ? "reload" : "default" });
    } catch (e) {
      if (this.ctl.signal.aborted) throw abortError(this.ctl.signal);
      throw new TransferError(`request failed: ${message(e)}`, true);
    }
    if (!res.ok || !res.body) {
      res.body?.cancel().catch(() => {});
      // Server errors and rate limits may pass; a 404 will not.
      const transient = res.status >= 500 || res.status === 408 || res.status === 429;
      throw new TransferError(`HTTP ${res.status} ${res.statusText}`.trim(), transient);
    }
    // Content-Length is the encoded size when the server compresses: compare only then.
    const length = res.headers.get("content-length");
    const encoding = res.headers.get("content-encoding");
    if (length !== null && (!encoding || encoding === "identity") && Number(length) !== bytes) {
      res.body.cancel().catch(() => {});
      throw new TransferError(`server announces ${length} bytes, manifest says ${bytes}`);
    }
    return res.body;
  }

  /** Whether to store a shard of `bytes`; if so, its room is taken. */
  private roomFor(bytes: number): boolean {
    if (this.cacheFull || bytes > this.cacheRoom) return false;
    this.cacheRoom -= bytes;
    return true;
  }

  /** The cache refused a write: when it is full, stop writing to it for the rest of the load. */
  private cacheFailed(e: unknown): null {
    if (isQuotaError(e)) this.cacheFull = true;
    return null;
  }

  /** Persistence must never fail a load: a cache write that fails just stops (and a full cache stops them all). */
  private bestEffort(w: CacheWriter): CacheWriter {
    let failed = false;
    const fail = async (e: unknown) => {
      failed = true;
      this.cacheFailed(e);
      await w.abort();
    };
    return {
      write: async (chunk) => {
        if (!failed) await w.write(chunk).catch(fail);
      },
      commit: async () => {
        if (!failed) await w.commit().catch(fail);
      },
      abort: async () => {
        if (!failed) {
          failed = true;
          await w.abort();
        }
      },
    };
  }

  /** Reads one shard source to its end: hash, length check, cache copy, chunks to the sink. */
  /** How shard `rec` is received: hashed as it streams, or gathered whole for WebCrypto. */
  private async receiver(i: number, rec: ShardRecord, scratch: Scratch): Promise<ShardReceiver> {
    const emit = (offset: number, chunk: Uint8Array) => this.sink.write(i, offset, chunk);
    const method = await hashMethod(this.loader.hashing, rec.bytes);
    if (method !== "webcrypto") return new StreamingReceiver(await incrementalSha256(method), new Rechunker(this.chunkBytes, emit));
    if (!scratch.buffer || scratch.buffer.length < rec.bytes) {
      scratch.buffer = null; // (the old one can go before the new one is made)
      scratch.buffer = new Uint8Array(rec.bytes);
    }
    return new WholeShardReceiver(scratch.buffer, this.chunkBytes, emit);
  }

  private async pump(
    i: number,
    rec: ShardRecord,
    body: ReadableStream<Uint8Array>,
    writer: CacheWriter | null,
    fromCache: boolean,
    scratch: Scratch,
    stall?: StallTimer,
  ): Promise<void> {
    const signal = this.ctl.signal;
    const out = await this.receiver(i, rec, scratch);
    const reader = body.getReader();
    let n = 0;
    try {
      for (;;) {
        if (signal.aborted) throw abortError(signal);
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await (stall ? stall.race(reader.read()) : reader.read());
          stall?.kick();
        } catch (e) {
          if (signal.aborted) throw abortError(signal);
          if (stall?.error) throw new TransferError(`${stall.error.message} after ${n} of ${rec.bytes} bytes`, true);
          throw new TransferError(`transfer broke after ${n} of ${rec.bytes} bytes: ${message(e)}`, true);
        }
        if (r.done) break;
        const chunk = r.value;
        if (n + chunk.length > rec.bytes) throw new TransferError(`more than the ${rec.bytes} bytes the manifest lists`);
        n += chunk.length;
        if (writer) await writer.write(chunk);
        await out.push(chunk);
        this.count(i, rec, chunk.length, fromCache);
      }
    } catch (e) {
      reader.cancel().catch(() => {});
      throw e;
    }
    if (n !== rec.bytes) throw new TransferError(`ended after ${n} of the ${rec.bytes} bytes the manifest lists`);
    const got = await out.finish();
    if (got !== rec.sha256) throw new TransferError(`sha256 mismatch: content hashes to ${got}, manifest says ${rec.sha256}`);
  }

  private count(i: number, rec: ShardRecord, bytes: number, fromCache: boolean): void {
    const done = (this.done[i] ?? 0) + bytes;
    this.done[i] = done;
    this.bytesDone += bytes;
    this.report(i, fromCache, done === rec.bytes);
  }

  private uncount(i: number): void {
    this.bytesDone -= this.done[i] ?? 0;
    this.done[i] = 0;
  }

  private report(shard: number, fromCache: boolean, force: boolean): void {
    const cb = this.opts.onProgress;
    // At most one report per MiB, plus the end of each shard.
    if (!cb || (!force && this.bytesDone - this.lastReport < 1 << 20)) return;
    this.lastReport = this.bytesDone;
    const total = this.stats.bytes;
    const pct = total ? Math.floor((100 * this.bytesDone) / total) : 100;
    cb({
      phase: "weights",
      bytesDone: this.bytesDone,
      bytesTotal: total,
      shard,
      shards: this.shards.length,
      fromCache,
      text: `weights ${pct}% (${(this.bytesDone / 2 ** 20).toFixed(1)} of ${(total / 2 ** 20).toFixed(1)} MiB)`,
    });
  }
}

/** A shard buffer that one worker reuses for every shard it gathers whole. */
interface Scratch {
  buffer: Uint8Array | null;
}

/** Takes a shard's bytes in order, hands them to the sink in chunks, and gives its sha256 at the end. */
interface ShardReceiver {
  push(chunk: Uint8Array): Promise<void>;
  /** after the last push: the rest reaches the sink; resolves to the sha256 (hex) */
  finish(): Promise<string>;
}

/** Hashes each piece as it comes ("node", "js"). */
class StreamingReceiver implements ShardReceiver {
  constructor(
    private readonly hash: IncrementalHash,
    private readonly out: Rechunker,
  ) {}

  async push(chunk: Uint8Array): Promise<void> {
    this.hash.update(chunk);
    await this.out.push(chunk);
  }

  async finish(): Promise<string> {
    await this.out.flush();
    return this.hash.digestHex();
  }
}

/**
 * Copies the shard into one shard-sized buffer, handing each full chunk of it to the
 * sink as soon as it is there, then hashes the buffer with WebCrypto in one call.
 */
class WholeShardReceiver implements ShardReceiver {
  private filled = 0;
  private emitted = 0;

  constructor(
    private readonly buffer: Uint8Array,
    private readonly chunkBytes: number,
    private readonly emit: (offset: number, chunk: Uint8Array) => void | Promise<void>,
  ) {}

  async push(chunk: Uint8Array): Promise<void> {
    this.buffer.set(chunk, this.filled);
    this.filled += chunk.length;
    while (this.filled - this.emitted >= this.chunkBytes) await this.emitUpTo(this.emitted + this.chunkBytes);
  }

  async finish(): Promise<string> {
    if (this.filled > this.emitted) await this.emitUpTo(this.filled);
    return webcryptoSha256(this.buffer.subarray(0, this.filled));
  }

  private async emitUpTo(end: number): Promise<void> {
    const start = this.emitted;
    this.emitted = end;
    await this.emit(start, this.buffer.subarray(start, end));
  }
}

/**
 * Re-cuts a byte stream into pieces of exactly `size` bytes at offsets that are
 * multiples of `size` (the last piece may be shorter), copying through one reusable
 * buffer only when an incoming chunk does not line up.
 */
class Rechunker {
  private buf: Uint8Array | null = null;
  private fill = 0;
  private offset = 0;

  constructor(
    private readonly size: number,
    private readonly emit: (offset: number, chunk: Uint8Array) => void | Promise<void>,
  ) {}

  async push(chunk: Uint8Array): Promise<void> {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.fill === 0 && chunk.length - pos >= this.size) {
        await this.emit(this.offset, chunk.subarray(pos, pos + this.size));
        this.offset += this.size;
        pos += this.size;
        continue;
      }
      this.buf ??= new Uint8Array(this.size);
      const take = Math.min(this.size - this.fill, chunk.length - pos);
      this.buf.set(chunk.subarray(pos, pos + take), this.fill);
      this.fill += take;
      pos += take;
      if (this.fill === this.size) await this.flush();
    }
  }

  async flush(): Promise<void> {
    if (!this.fill) return;
    await this.emit(this.offset, this.buf!.subarray(0, this.fill));
    this.offset += this.fill;
    this.fill = 0;
  }
}

/** Whether `e` says the storage is full (the Cache API's QuotaExceededError, Node's ENOSPC). */
export function isQuotaError(e: unknown): boolean {
  const err = e as { name?: unknown; code?: unknown } | null;
  return !!err && (err.name === "QuotaExceededError" || err.code === "ENOSPC" || err.code === "EDQUOT");
}

/** `fetchFn(url)`, aborted with a stall error when its response has not come within `stallMs`. */
async function fetchOrStall(fetchFn: FetchLike, url: string, init: RequestInit, stallMs: number): Promise<Response> {
  const ctl = new AbortController();
  const user = init.signal;
  const onAbort = () => ctl.abort(user?.reason);
  if (user?.aborted) onAbort();
  user?.addEventListener("abort", onAbort, { once: true });
  const stall = new StallTimer(stallMs, () => ctl.abort(new Error("stalled")));
  try {
    return await stall.race(fetchFn(url, { ...init, signal: ctl.signal })).catch((e) => {
      throw stall.error ?? e;
    });
  } finally {
    stall.stop();
    // (from here on the caller's signal is checked between reads)
    user?.removeEventListener("abort", onAbort);
  }
}

/**
 * Reads a whole (small) stream into one array: at most `maxBytes` (a longer stream is
 * cut there, for the caller to refuse), failing when no byte comes for `stallMs`.
 */
async function collect(body: ReadableStream<Uint8Array>, signal: AbortSignal | undefined, maxBytes: number, stallMs: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = body.getReader();
  const stall = new StallTimer(stallMs, () => reader.cancel().catch(() => {}));
  try {
    while (n < maxBytes) {
      signal?.throwIfAborted();
      const r = await stall.race(reader.read());
      stall.kick();
      if (r.done) break;
      parts.push(r.value);
      n += r.value.length;
    }
    if (n >= maxBytes) reader.cancel().catch(() => {});
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  } finally {
    stall.stop();
  }
  const out = new Uint8Array(Math.min(n, maxBytes));
  let o = 0;
  for (const p of parts) {
    if (o >= out.length) break;
    out.set(p.subarray(0, out.length - o), o);
    o += p.length;
  }
  return out;
}

async function storeWhole(cache: ShardCache, sha: string, data: Uint8Array): Promise<void> {
  const w = await cache.write(sha, data.length).catch(() => null);
  if (!w) return;
  try {
    await w.write(data);
    await w.commit();
  } catch {
    await w.abort();
  }
}
