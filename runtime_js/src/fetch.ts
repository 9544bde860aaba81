/**
 * The fetch the loader uses by default: the platform's `fetch`, plus `file:` URLs in
 * Node (whose fetch does not read files), so that a bundle on disk loads the same way
 * as one served over HTTP.
 */

export type FetchLike = (url: string, init?: RequestInit) => Promise<Response>;

/** Running in Node (not a browser or a browser worker). */
export const isNode = typeof process !== "undefined" && !!process.versions?.node;

export const defaultFetch: FetchLike = (url, init) => {
  if (isNode && url.startsWith("file:")) return fetchFile(url, init);
  return fetch(url, init);
};

async function fetchFile(url: string, init?: RequestInit): Promise<Response> {
  const [fs, fsp, stream, nodeUrl] = await Promise.all([
    import("node:fs"),
    import("node:fs/promises"),
    import("node:stream"),
    import("node:url"),
  ]);
  init?.signal?.throwIfAborted();
  const file = nodeUrl.fileURLToPath(url);
  let handle: import("node:fs/promises").FileHandle;
  try {
    handle = await fsp.open(file, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return new Response(null, { status: code === "ENOENT" ? 404 : 500, statusText: String(code) });
  }
  const size = (await handle.stat()).size;
  const nodeStream = fs.createReadStream("", { fd: handle, highWaterMark: 1 << 20, signal: init?.signal ?? undefined });
  const body = stream.Readable.toWeb(nodeStream) as unknown as ReadableStream<Uint8Array>;
  return new Response(body, { status: 200, headers: { "content-length": String(size) } });
}
