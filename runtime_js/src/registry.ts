/**
 * Model ids from an llmpack registry (docs/registry.md): `registry:ID` or
 * `registry:ID@VERSION` resolves to a bundle folder URL that the loader reads like
 * any other.
 *
 * With `llmpack registry serve` (the HTTP API): `GET {registry}/models/{id}` lists the
 * versions with an absolute `base_url`, under which the manifest, its files and its
 * shards all resolve. On a static host (no API, just the registry's files):
 * `GET {registry}/index.json` gives the version's folder; the manifest and files live
 * there and the shards at the registry root, so the returned `fetch` maps
 * `<folder>/shards/*` to `<root>/shards/*`.
 */
import { type FetchLike, defaultFetch } from "./fetch.js";

export const REGISTRY_SCHEME = "registry:";

export class RegistryError extends Error {
  override name = "RegistryError";
}

export interface RegistryVersion {
  version: string;
  base_url?: string;
  manifest_url?: string;
  manifest_sha256?: string;
  [key: string]: unknown;
}

export interface ResolvedModel {
  id: string;
  version: string;
  /** the version's folder: manifest.json and the listed files resolve against it */
  baseUrl: string;
  /** the registry's entry for the version (quantization, requirements, ...) */
  entry: RegistryVersion;
  /** set for static hosts: a fetch that serves shards from the registry root */
  fetch?: FetchLike;
}

/** Splits "registry:ID[@VERSION]" (or "ID[@VERSION]"); null when `ref` is not a registry reference. */
export function parseRegistryRef(ref: string): { id: string; version: string | null } | null {
  if (!ref.startsWith(REGISTRY_SCHEME)) return null;
  const rest = ref.slice(REGISTRY_SCHEME.length).replace(/^\/\//, "");
  const at = rest.lastIndexOf("@");
  const id = at < 0 ? rest : rest.slice(0, at);
  const version = at < 0 ? null : rest.slice(at + 1);
  const ok = /^[a-z0-9]([a-z0-9._-]{0,98}[a-z0-9])?$/;
  if (!ok.test(id)) throw new RegistryError(`${JSON.stringify(ref)}: ${JSON.stringify(id)} is not a registry model id`);
  if (version !== null && !/^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$/.test(version)) {
    throw new RegistryError(`${JSON.stringify(ref)}: ${JSON.stringify(version)} is not a version`);
  }
  return { id, version };
}

const hostile = (where: unknown, root: URL, id: string) =>
  new RegistryError(
    `the registry at ${root.href} places ${id} at ${JSON.stringify(String(where)).slice(0, 120)}, ` +
      "which a registry may not name (another scheme, a local file, or outside a static registry's folder); do not use this registry",
  );

/**
 * A version's folder as the registry gives it, resolved against the registry's root. It
 * may be on another server (a CDN), but over http(s) only, unless the registry itself
 * is a local folder: a registry on the network can never make the runtime read a local file.
 */
function checkedBase(where: unknown, root: URL, id: string): URL {
  let u: URL;
  try {
    u = new URL(String(where), root);
  } catch {
    throw hostile(where, root, id);
  }
  const web = (p: string) => p === "http:" || p === "https:";
  const ok = web(root.protocol) ? web(u.protocol) : u.protocol === root.protocol;
  if (!ok || typeof where !== "string") throw hostile(where, root, id);
  return u;
}

function rootUrl(registryUrl: string | URL): URL {
  const u = new URL(String(registryUrl), globalThis.location?.href);
  if (!u.pathname.endsWith("/")) u.pathname += "/";
  return u;
}

async function getJson(fetchFn: FetchLike, url: string, signal?: AbortSignal): Promise<{ status: number; json: any }> {
  let res: Response;
  try {
    res = await fetchFn(url, { signal, cache: "no-cache", headers: { accept: "application/json" } });
  } catch (e) {
    signal?.throwIfAborted();
    throw new RegistryError(`cannot reach the registry at ${url}: ${(e as Error).message}`, { cause: e });
  }
  const text = await res.text();
  try {
    return { status: res.status, json: JSON.parse(text) };
  } catch {
    return { status: res.status, json: null };
  }
}

/**
 * Resolves a registry reference to a bundle location. `registryUrl` is the root of a
 * registry: the URL of `llmpack registry serve`, or of a static copy of a registry
 * folder.
 */
export async function resolveRegistryModel(
  ref: string,
  opts: { registryUrl: string | URL; fetch?: FetchLike; signal?: AbortSignal },
): Promise<ResolvedModel> {
  const parsed = parseRegistryRef(ref);
  if (!parsed) throw new RegistryError(`${JSON.stringify(ref)} is not a registry reference (registry:ID[@VERSION])`);
  const { id, version } = parsed;
  const fetchFn = opts.fetch ?? defaultFetch;
  const root = rootUrl(opts.registryUrl);

  const api = await getJson(fetchFn, new URL(`models/${encodeURIComponent(id)}`, root).href, opts.signal);
  if (api.status === 200 && api.json && Array.isArray(api.json.versions)) {
    const versions = api.json.versions as RegistryVersion[];
    const want = version ?? api.json.latest;
    const entry = versions.find((v) => v.version === want);
    if (!entry || !entry.base_url) {
      throw new RegistryError(`the registry at ${root.href} has no version ${JSON.stringify(want)} of ${id} (it has ${versions.map((v) => v.version).join(", ") || "none"})`);
    }
    return { id, version: entry.version, baseUrl: checkedBase(entry.base_url, root, id).href, entry };
  }

  // The API answered with an error of its own (e.g. an unknown id).
  if (api.status >= 400 && typeof api.json?.detail === "string") throw new RegistryError(`registry ${root.href}: ${api.json.detail}`);

  // A static host: read the index itself.
  const idx = await getJson(fetchFn, new URL("index.json", root).href, opts.signal);
  if (idx.status !== 200 || !idx.json || idx.json.format !== "llmpack-registry") {
    throw new RegistryError(`${root.href} is not an llmpack registry (GET models/${id}: HTTP ${api.status}; GET index.json: HTTP ${idx.status})`);
  }
  const model = idx.json.models?.[id];
  if (!model) throw new RegistryError(`the registry at ${root.href} has no model ${JSON.stringify(id)}`);
  const v = version ?? model.latest;
  const entry = model.versions?.[v];
  if (!entry?.path) throw new RegistryError(`the registry at ${root.href} has no version ${JSON.stringify(v)} of ${id}`);
  const baseUrl = checkedBase(entry.path, root, id);
  if (!baseUrl.href.startsWith(root.href)) throw hostile(entry.path, root, id);
  const base = baseUrl.href;
  const shards = new URL("shards/", base).href;
  const rootShards = new URL("shards/", root).href;
  const mapped: FetchLike = (url, init) => fetchFn(url.startsWith(shards) ? rootShards + url.slice(shards.length) : url, init);
  return { id, version: v, baseUrl: base, entry: { ...entry, version: v }, fetch: mapped };
}
