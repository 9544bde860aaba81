/**
 * Persistent, content-addressed store for shards and bundle files, keyed by sha256.
 *
 * - Browsers and Web Workers: the Cache API (`caches`), one entry per hash.
 * - Node: a directory (default `$XDG_CACHE_HOME/llmpack/shards` or
 *   `~/.cache/llmpack/shards`), one `<sha256>.bin` file per hash.
 *
 * Writes are staged: bytes stream in while the loader hashes them, and the entry
 * becomes visible only on `commit()`, which the loader calls after the hash matched.
 * An aborted or failed write leaves nothing behind, so the store never holds a
 * partial or unverified shard, and an interrupted load resumes from the shards that
 * were committed. Readers still re-hash what they read (disks and browser storage can
 * rot); the loader drops an entry that no longer matches.
 *
 * Storage is finite: before a load writes anything, the loader asks the store how much
 * room it has (`available`: the Cache API's `navigator.storage.estimate()`, the disk's
 * free space in Node) and stores only the shards that fit; a write that still fails for
 * lack of room (QuotaExceededError, ENOSPC) ends caching for that load, never the load.
 */
import { isNode } from "./fetch.js";

export interface CacheWriter {
  write(chunk: Uint8Array): Promise<void>;
  /** Makes the entry visible. Call only after the content's hash matched. */
  commit(): Promise<void>;
  /** Drops what was written. Never throws. */
  abort(): Promise<void>;
}

export interface ShardCache {
  /** The stored bytes of `sha256` as a stream, or null when absent. */
  read(sha256: string): Promise<ReadableStream<Uint8Array> | null>;
  /** Starts a staged write of `bytes` bytes. */
  write(sha256: string, bytes: number): Promise<CacheWriter>;
  delete(sha256: string): Promise<void>;
  /** Bytes the store may still take, or null when it cannot tell. */
  available?(): Promise<number | null>;
}

/** The part of StorageManager the cache uses (navigator.storage). */
export interface StorageLike {
  estimate?(): Promise<{ quota?: number; usage?: number }>;
  persist?(): Promise<boolean>;
  persisted?(): Promise<boolean>;
}

/**
 * The default store for this environment: the Cache API where it exists, a directory
 * in Node (`cacheDir` overrides the location), else null (no persistence).
 */
export async function openDefaultCache(cacheDir?: string): Promise<ShardCache | null> {
  if (cacheDir !== undefined || (isNode && typeof caches === "undefined")) {
    if (!isNode) throw new Error("cacheDir is only supported in Node; browsers use the Cache API");
    return DirectoryCache.open(cacheDir);
  }
  if (typeof caches !== "undefined") {
    try {
      return new CacheApiCache(await caches.open(CacheApiCache.NAME));
    } catch {
      return null; // e.g. opaque origins or storage disabled: load without persistence
    }
  }
  return null;
}

/** Cache API store. Keys are synthetic https URLs (the API accepts only http(s) keys). */
export class CacheApiCache implements ShardCache {
  static readonly NAME = "llmpack-shards-v1";
  /** persistent storage is asked for once per page or worker */
  private static persistAsked = false;

  constructor(
    private readonly cache: Cache,
    private readonly storage: StorageLike | undefined = (globalThis as { navigator?: { storage?: StorageLike } }).navigator?.storage,
  ) {}

  /** quota - usage from `navigator.storage.estimate()`, or null without it. */
  async available(): Promise<number | null> {
    this.askPersist();
    try {
      const est = await this.storage?.estimate?.();
      if (!est || typeof est.quota !== "number") return null;
      return Math.max(0, est.quota - (est.usage ?? 0));
    } catch {
      return null;
    }
  }

  /**
   * Asks once for persistent storage, so that the browser does not evict the shards
   * under storage pressure (best effort: the answer is the browser's).
   */
  private askPersist(): void {
    if (CacheApiCache.persistAsked || !this.storage?.persist) return;
    CacheApiCache.persistAsked = true;
    void (async () => {
      if (!(await this.storage?.persisted?.())) await this.storage?.persist?.();
    })().catch(() => {});
  }

  private key(sha256: string): string {
    return `https://llmpack.invalid/sha256/${sha256}`;
  }

  async read(sha256: string): Promise<ReadableStream<Uint8Array> | null> {
    const res = await this.cache.match(this.key(sha256));
    return res?.body ?? null;
  }

  async write(sha256: string, bytes: number): Promise<CacheWriter> {
    this.askPersist();
    // cache.put() consumes the stream and stores the entry only when it closes
    // cleanly; erroring the stream (abort) makes put() reject and store nothing.
    const pipe = new TransformStream<Uint8Array, Uint8Array>();
    const writer = pipe.writable.getWriter();
    const response = new Response(pipe.readable, {
      headers: { "content-type": "application/octet-stream", "content-length": String(bytes) },
    });
    const put = this.cache.put(this.key(sha256), response);
    put.catch(() => {}); // observed in commit(); aborting makes it reject on purpose
    return {
      write: (chunk) => writer.write(chunk),
      commit: async () => {
        await writer.close();
        await put;
      },
      abort: async () => {
        await writer.abort(new Error("unverified shard not stored")).catch(() => {});
        await put.catch(() => {});
      },
    };
  }

  async delete(sha256: string): Promise<void> {
    await this.cache.delete(this.key(sha256));
  }
}

/** Directory store for Node. Entries are written to a temporary name and renamed on commit. */
export class DirectoryCache implements ShardCache {
  private constructor(
    readonly dir: string,
    private readonly fs: typeof import("node:fs"),
    private readonly fsp: typeof import("node:fs/promises"),
    private readonly Readable: typeof import("node:stream").Readable,
    private readonly path: typeof import("node:path"),
  ) {}

  static async open(dir?: string): Promise<DirectoryCache> {
    const [fs, fsp, stream, path, os] = await Promise.all([
      import("node:fs"),
      import("node:fs/promises"),
      import("node:stream"),
      import("node:path"),
      import("node:os"),
    ]);
    const root = dir ?? path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "llmpack", "shards");
    await fsp.mkdir(root, { recursive: true });
    return new DirectoryCache(root, fs, fsp, stream.Readable, path);
  }

  private file(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return this.path.join(this.dir, `${sha256}.bin`);
  }

  async read(sha256: string): Promise<ReadableStream<Uint8Array> | null> {
    let handle: import("node:fs/promises").FileHandle;
    try {
      handle = await this.fsp.open(this.file(sha256), "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
    // The stream owns the handle and closes it when done, failed or cancelled.
    const nodeStream = this.fs.createReadStream("", { fd: handle, highWaterMark: 1 << 20 });
    return this.Readable.toWeb(nodeStream) as unknown as ReadableStream<Uint8Array>;
  }

  async write(sha256: string, _bytes: number): Promise<CacheWriter> {
    const final = this.file(sha256);
    const tmp = `${final}.partial-${process.pid}-${Math.random().toString(36).slice(2)}`;
    const handle = await this.fsp.open(tmp, "w");
    let closed = false;
    const close = async () => {
      if (!closed) {
        closed = true;
        await handle.close();
      }
    };
    return {
      write: async (chunk) => {
        let done = 0;
        while (done < chunk.length) done += (await handle.write(chunk, done, chunk.length - done)).bytesWritten;
      },
      commit: async () => {
        await close();
        await this.fsp.rename(tmp, final); // atomic: readers see the whole entry or none
      },
      abort: async () => {
        await close().catch(() => {});
        await this.fsp.rm(tmp, { force: true }).catch(() => {});
      },
    };
  }

  async delete(sha256: string): Promise<void> {
    await this.fsp.rm(this.file(sha256), { force: true });
  }

  /** Free bytes on the cache's file system (for this user), or null when unknown. */
  async available(): Promise<number | null> {
    try {
      const st = await this.fsp.statfs(this.dir);
      return st.bavail * st.bsize;
    } catch {
      return null;
    }
  }
}
