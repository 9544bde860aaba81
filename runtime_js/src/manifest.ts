/**
 * The bundle manifest (docs/bundle.md, version 1): types and the checks a reader must
 * make before trusting any offset in it.
 */

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
  [key: string]: unknown;
}

export class ManifestError extends Error {
  override name = "ManifestError";
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Validates a parsed manifest.json and returns it typed. Rejects an unknown format or
 * version, and any shard/tensor/part record whose byte range does not fit, so that
 * the loader and executors can index without further checks.
 */
export function parseManifest(json: unknown): Manifest {
  const m = json as Manifest;
  if (!m || typeof m !== "object") throw new ManifestError("manifest.json is not a JSON object");
  if (m.format !== BUNDLE_FORMAT) {
    throw new ManifestError(`not an llmpack bundle: format is ${JSON.stringify(m.format)}, expected "${BUNDLE_FORMAT}"`);
  }
  if (m.version !== BUNDLE_VERSION) {
    throw new ManifestError(
      `bundle format version ${JSON.stringify(m.version)} is not supported by this runtime (it reads version ${BUNDLE_VERSION}); ` +
        "use a runtime that matches the packager that built the bundle",
    );
  }
  for (const key of ["model", "tokenizer", "generation", "memory", "quantization"] as const) {
    if (!m[key] || typeof m[key] !== "object") throw new ManifestError(`manifest has no "${key}" object`);
  }
  const vocab = m.model.config?.vocab_size;
  if (!isCount(vocab) || vocab < 1) throw new ManifestError(`manifest: model.config.vocab_size must be a positive integer, got ${JSON.stringify(vocab)}`);
  if (!Array.isArray(m.shards) || !Array.isArray(m.tensors)) throw new ManifestError("manifest lacks shards or tensors");
  if (!Array.isArray(m.files)) m.files = [];
  m.shards.forEach((s, i) => {
    if (!s || typeof s.file !== "string" || !isCount(s.bytes) || typeof s.sha256 !== "string" || !HEX64.test(s.sha256)) {
      throw new ManifestError(`shard ${i} has a malformed record: ${JSON.stringify(s)}`);
    }
  });
  m.files.forEach((f, i) => {
    if (!f || typeof f.path !== "string" || !isCount(f.bytes) || typeof f.sha256 !== "string" || !HEX64.test(f.sha256)) {
      throw new ManifestError(`file entry ${i} is malformed: ${JSON.stringify(f)}`);
    }
  });
  m.tensors.forEach((t) => checkTensor(m, t));
  return m;
}

function checkTensor(m: Manifest, t: TensorRecord): void {
  const where = `tensor ${JSON.stringify(t?.name)}`;
  if (!t || !isCount(t.shard) || !isCount(t.offset) || !isCount(t.bytes) || !Array.isArray(t.parts)) {
    throw new ManifestError(`${where} has a malformed record`);
  }
  const first = m.shards[t.shard];
  if (!first) throw new ManifestError(`${where} names shard ${t.shard} of ${m.shards.length}`);
  if (t.offset >= first.bytes && t.bytes > 0) {
    throw new ManifestError(`${where} starts at offset ${t.offset}, past the end of shard ${t.shard} (${first.bytes} bytes)`);
  }
  // A tensor that overflows its shard continues at offset 0 of the next ones.
  let room = first.bytes - t.offset;
  for (const next of m.shards.slice(t.shard + 1)) {
    if (room >= t.bytes) break;
    if (t.offset !== 0) throw new ManifestError(`${where} spans shards but does not start at offset 0`);
    room += next.bytes;
  }
  if (room < t.bytes) throw new ManifestError(`${where} (${t.bytes} bytes at offset ${t.offset}) runs past the last shard`);
  for (const p of t.parts) {
    if (!p || !isCount(p.offset) || !isCount(p.bytes) || p.offset + p.bytes > t.bytes) {
      throw new ManifestError(`${where} part ${JSON.stringify(p?.name)} lies outside the tensor`);
    }
  }
}
