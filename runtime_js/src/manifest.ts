/**
 * The bundle manifest (docs/bundle.md, version 1): types and the checks a reader must
 * make before trusting any offset in it.
 */

import { RUNTIME_VERSION, compareVersions, parseVersion } from "./version.js";

export const BUNDLE_FORMAT = "llmpack-bundle";
export const BUNDLE_VERSION = 1;

export interface PartRecord {
  name: string;
  dtype: string;
  shape: number[];
  /** relative to the tensor's offset */
  offset: number;
  bytes: number;
}

export interface TensorRecord {
  name: string;
  shape: number[];
  format: string;
  shard: number;
  offset: number;
  bytes: number;
  parts: PartRecord[];
}

export interface ShardRecord {
  file: string;
  bytes: number;
  sha256: string;
}

export interface FileRecord {
  path: string;
  bytes: number;
  sha256: string;
}

export interface ModelConfig {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  [key: string]: unknown;
}

export interface Manifest {
  format: typeof BUNDLE_FORMAT;
  version: number;
  generator?: string;
  created?: string;
  model: {
    name: string;
    architecture: string;
    hf_architecture?: string;
    config: ModelConfig;
    [key: string]: unknown;
  };
  quantization: { scheme: string; compute: "f16" | "f32"; bits_per_weight?: number };
  tokenizer: {
    file: string;
    config_file: string | null;
    chat_template: string | null;
    bos_token: string | null;
    eos_token: string | null;
    add_bos_token: boolean;
  };
  generation: {
    eos_token_ids: number[];
    bos_token_id: number | null;
    temperature: number;
    top_p: number;
    top_k: number;
    repetition_penalty: number;
    max_new_tokens: number;
  };
  tensors: TensorRecord[];
  shards: ShardRecord[];
  files: FileRecord[];
  memory: {
    weights_bytes: number;
    kv_cache_bytes_per_token: number;
    context_window: number;
    estimate_bytes: number;
    [key: string]: unknown;
  };
  /** the oldest runtime that runs the bundle (absent in bundles written before it was recorded) */
  runtime?: { min_version: string; [key: string]: unknown };
  [key: string]: unknown;
}

export class ManifestError extends Error {
  override name = "ManifestError";
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);
const HEX64 = /^[0-9a-f]{64}$/;
const PATH_SEGMENT = /^[A-Za-z0-9._+-]+$/;

/**
 * A plain relative POSIX path of conservative segments (letters, digits, `. _ + -`),
 * no `..`: the only paths a manifest may name (docs/bundle.md), so that each one
 * resolves to a URL inside the bundle's folder and is a safe storage key everywhere.
 */
export function isSafeBundlePath(path: unknown): path is string {
  return (
    typeof path === "string" &&
    path.length > 0 &&
    path.length <= 400 &&
    path.split("/").every((seg) => PATH_SEGMENT.test(seg) && seg !== "." && seg !== "..")
  );
}

/** A short, safe rendering of a manifest value for an error message. */
export function shown(v: unknown): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    s = undefined; // too deeply nested to print
  }
  if (s === undefined) s = typeof v;
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

const REPACKAGE = "package the model again with `llmpack package`";

/**
 * Validates a parsed manifest.json and returns it typed. Rejects an unknown format or
 * version, a path that could leave the bundle's folder, and any shard/tensor/part
 * record whose byte range does not fit, so that the loader and executors can index
 * without further checks. Any JSON value gives a Manifest or a ManifestError.
 */
export function parseManifest(json: unknown): Manifest {
  if (!isObject(json)) throw new ManifestError("manifest.json is not a JSON object");
  const m = json as Manifest;
  if (m.format !== BUNDLE_FORMAT) {
    throw new ManifestError(`not an llmpack bundle: format is ${shown(m.format)}, expected "${BUNDLE_FORMAT}"`);
  }
  if (m.version !== BUNDLE_VERSION) {
    throw new ManifestError(
      `bundle format version ${shown(m.version)} is not supported by this runtime (it reads version ${BUNDLE_VERSION}); ` +
        "use a runtime that matches the packager that built the bundle",
    );
  }
  checkRuntimeVersion(m.runtime);
  for (const key of ["model", "tokenizer", "generation", "memory", "quantization"] as const) {
    if (!isObject(m[key])) throw new ManifestError(`manifest has no "${key}" object`);
  }
  const bad = (field: string, what: string) => new ManifestError(`manifest.json: "${field}" ${what}; ${REPACKAGE}`);
  if (!isObject(m.model.config)) throw bad("model.config", "must be an object");
  const vocab = m.model.config.vocab_size;
  if (!isCount(vocab) || vocab < 1) throw new ManifestError(`manifest: model.config.vocab_size must be a positive integer, got ${shown(vocab)}`);
  if (typeof m.model.name !== "string") throw bad("model.name", "must be a string");

  const tok = m.tokenizer;
  if (!isSafeBundlePath(tok.file)) throw bad("tokenizer.file", `must be a relative path inside the bundle, not ${shown(tok.file)}`);
  if (tok.config_file != null && !isSafeBundlePath(tok.config_file)) {
    throw bad("tokenizer.config_file", `must be a relative path inside the bundle or null, not ${shown(tok.config_file)}`);
  }
  for (const key of ["chat_template", "bos_token", "eos_token"] as const) {
    if (tok[key] != null && typeof tok[key] !== "string") throw bad(`tokenizer.${key}`, "must be a string or null");
  }
  tok.config_file ??= null;
  tok.chat_template ??= null;
  tok.bos_token ??= null;
  tok.eos_token ??= null;
  tok.add_bos_token = tok.add_bos_token === true;

  const gen = m.generation;
  if (!Array.isArray(gen.eos_token_ids) || !gen.eos_token_ids.every(isCount)) throw bad("generation.eos_token_ids", "must be a list of token ids");
  if (gen.bos_token_id != null && !isCount(gen.bos_token_id)) throw bad("generation.bos_token_id", "must be a token id or null");
  gen.bos_token_id ??= null;
  for (const key of ["temperature", "top_p", "top_k", "repetition_penalty"] as const) {
    if (typeof gen[key] !== "number" || !Number.isFinite(gen[key])) throw bad(`generation.${key}`, "must be a number");
  }
  if (!isCount(gen.max_new_tokens)) throw bad("generation.max_new_tokens", "must be a whole number >= 0");
  if (!isCount(m.memory.context_window) || m.memory.context_window < 1) throw bad("memory.context_window", "must be a positive whole number");

  if (!Array.isArray(m.shards) || !Array.isArray(m.tensors)) throw new ManifestError("manifest lacks shards or tensors");
  if (m.files == null) m.files = [];
  if (!Array.isArray(m.files)) throw bad("files", "must be a list");
  const sizes = new Map<string, number>();
  m.shards.forEach((s, i) => {
    if (!isObject(s) || !isCount(s.bytes) || typeof s.sha256 !== "string" || !HEX64.test(s.sha256)) {
      throw new ManifestError(`shard ${i} has a malformed record: ${shown(s)}`);
    }
    // Shards are content-addressed: the name is the hash, so no shard can point elsewhere.
    if (s.file !== `shards/${s.sha256}.bin`) throw bad(`shards[${i}].file`, `must be "shards/<its sha256>.bin", not ${shown(s.file)}`);
    if ((sizes.get(s.sha256) ?? s.bytes) !== s.bytes) throw bad(`shards[${i}]`, "lists a shard again with another size");
    sizes.set(s.sha256, s.bytes);
  });
  const paths = new Set<string>();
  m.files.forEach((f, i) => {
    if (!isObject(f) || !isCount(f.bytes) || typeof f.sha256 !== "string" || !HEX64.test(f.sha256)) {
      throw new ManifestError(`file entry ${i} is malformed: ${shown(f)}`);
    }
    if (!isSafeBundlePath(f.path) || f.path === "manifest.json" || f.path.startsWith("shards/")) {
      throw bad(`files[${i}].path`, `must be a relative path inside the bundle (letters, digits, "._+-", "/" between folders), not ${shown(f.path)}`);
    }
    if (paths.has(f.path)) throw bad(`files[${i}].path`, `lists ${shown(f.path)} twice`);
    paths.add(f.path);
  });
  m.tensors.forEach((t) => checkTensor(m, t));
  return m;
}

/** The manifest's `runtime.min_version` against this runtime's version (a bundle without it loads). */
function checkRuntimeVersion(runtime: unknown): void {
  if (runtime == null) return;
  const min = isObject(runtime) ? parseVersion(runtime.min_version) : null;
  if (!isObject(runtime) || !min) {
    throw new ManifestError(`manifest.json: "runtime.min_version" must be a version MAJOR.MINOR.PATCH, not ${shown(isObject(runtime) ? runtime.min_version : runtime)}; ${REPACKAGE}`);
  }
  if (compareVersions(parseVersion(RUNTIME_VERSION)!, min) < 0) {
    throw new ManifestError(
      `this bundle needs llmpack runtime ${String(runtime.min_version)} or newer, but this runtime is ${RUNTIME_VERSION}: ` +
        "update the runtime (npm install llmpack-runtime@latest, or rebuild the site with `llmpack site`)",
    );
  }
}

function checkTensor(m: Manifest, t: TensorRecord): void {
  const where = `tensor ${shown(isObject(t) ? t.name : t)}`;
  if (!isObject(t) || typeof t.name !== "string" || !isCount(t.shard) || !isCount(t.offset) || !isCount(t.bytes) || !Array.isArray(t.parts)) {
    throw new ManifestError(`${where} has a malformed record`);
  }
  const first = m.shards[t.shard];
  if (!first) throw new ManifestError(`${where} names shard ${t.shard} of ${m.shards.length}`);
  if (t.offset >= first.bytes && t.bytes > 0) {
    throw new ManifestError(`${where} starts at offset ${t.offset}, past the end of shard ${t.shard} (${first.bytes} bytes)`);
  }
  // A tensor that overflows its shard continues at offset 0 of the next ones.
  let room = first.bytes - t.offset;
  for (let s = t.shard + 1; s < m.shards.length && room < t.bytes; s++) {
    if (t.offset !== 0) throw new ManifestError(`${where} spans shards but does not start at offset 0`);
    room += m.shards[s]!.bytes; // s < shards.length
  }
  if (room < t.bytes) throw new ManifestError(`${where} (${t.bytes} bytes at offset ${t.offset}) runs past the last shard`);
  for (const p of t.parts) {
    if (!isObject(p) || typeof p.name !== "string" || !isCount(p.offset) || !isCount(p.bytes) || p.offset + p.bytes > t.bytes) {
      throw new ManifestError(`${where} part ${shown(isObject(p) ? p.name : p)} lies outside the tensor`);
    }
  }
}
