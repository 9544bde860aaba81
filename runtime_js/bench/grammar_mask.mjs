#!/usr/bin/env node
// Constrained decoding's cost per token against a decode step:
//   node bench/grammar_mask.mjs [--bundle DIR] [--threads N] [--steps N] [--vocab N ...]
// With --bundle (e.g. SmolLM2 q4f32): the Wasm backend decodes a JSON-schema answer
// greedily, the grammar masking each step's real logits; prints the decode step, the
// mask (XGrammar's bitmask + the UTF-8 guard + applying it to the logits + accepting the
// token + isDone) and their ratio. With --vocab (default 49152 and 262144): the same grammar
// over a synthetic byte-level vocabulary of that size with random logits (no model:
// the mask cost alone, e.g. for a 262k vocabulary such as Gemma's). One JSON object on stdout.
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values: o } = parseArgs({
  options: {
    bundle: { type: "string" },
    threads: { type: "string" },
    steps: { type: "string", default: "48" },
    vocab: { type: "string", multiple: true, default: ["49152", "262144"] },
  },
});
const steps = Number(o.steps);
const m = await import(new URL("../dist/llmpack.js", import.meta.url).href);
const now = () => performance.now();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? null;
const p90 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)] ?? null;
const round = (x, d = 3) => (x == null ? null : Math.round(x * 10 ** d) / 10 ** d);

const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string" },
    age: { type: "integer" },
    city: { type: "string" },
    hobbies: { type: "array", items: { type: "string" } },
  },
  required: ["name", "age", "city", "hobbies"],
};
const SPEC = { kind: "json_schema", schema: SCHEMA };

/** Runs `steps` constrained steps: `logitsAt(step, token)` gives each step's logits. */
async function constrainedRun(cache, logitsAt, eos) {
  const t0 = now();
  const proc = await cache.processor(SPEC);
  const setupMs = now() - t0;
  const mask = [];
  const bitmask = [];
  const model = [];
  let logits = await logitsAt(-1);
  let tokens = 0;
  for (let i = 0; i < steps; i++) {
    const a = now();
    proc.nextMask();
    bitmask.push(now() - a);
    proc.process(logits);
    const b = now();
    let best = 0;
    for (let t = 1; t < logits.length; t++) if (logits[t] > logits[best]) best = t;
    if (eos.has(best)) break;
    const c = now();
    proc.accept(best);
    proc.isDone(); // (the session asks after every token)
    mask.push(b - a + (now() - c));
    tokens++;
    const d = now();
    logits = await logitsAt(i, best);
    model.push(now() - d);
  }
  return { setupMs, mask, bitmask, model, tokens };
}

const out = { steps, node: process.version };

if (o.bundle) {
  const backend = o.threads ? new m.WasmBackend({ threads: Number(o.threads) }) : "wasm";
  const engine = await m.createEngine(pathToFileURL(path.resolve(o.bundle) + "/").href, { backend, cache: null });
  const tok = engine.tokenizer;
  const prompt = tok.encodeChat([{ role: "user", content: "Describe a person as JSON with name, age, city and hobbies." }]);
  const t0 = now();
  const cache = new m.GrammarCompilerCache(() => m.grammarVocab(tok.tokenizerJson, tok.tokens(), tok.specialTokenIds(), tok.eosTokenIds), engine.manifest.model.config.vocab_size);
  await cache.compile(SPEC);
  const compileMs = now() - t0;
  const b = engine.backend;
  b.reset();
  let pos = 0;
  const r = await constrainedRun(
    cache,
    async (step, token) => {
      if (step < 0) {
        pos = prompt.length;
        return b.prefill(Int32Array.from(prompt), 0);
      }
      return b.decode(token, pos++);
    },
    tok.eosTokenIds,
  );
  const decode = median(r.model);
  const mask = median(r.mask);
  out.model = {
    bundle: engine.manifest.model.name,
    backend: engine.backend.label ?? engine.backendInfo.name,
    vocab: engine.manifest.model.config.vocab_size,
    first_request_ms: round(compileMs, 1), // vocabulary preprocessing + engine import + this schema's compile
    matcher_ms: round(r.setupMs, 2),
    tokens: r.tokens,
    decode_step_ms_median: round(decode, 2),
    mask_ms_median: round(mask),
    mask_ms_p90: round(p90(r.mask)),
    bitmask_ms_median: round(median(r.bitmask)),
    mask_over_decode: round(mask / decode, 4),
  };
  await engine.unload();
}

/** A byte-level vocabulary of `n` tokens: the 256 bytes, then pseudo-random words. */
function syntheticVocab(n) {
  const direct = (b) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  const tokens = Array.from({ length: 256 }, (_, b) => String.fromCodePoint(direct(b) ? b : next++));
  const rng = new m.Prng(1);
  const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789Ġ{}[]":,.-_';
  const seen = new Set(tokens);
  while (tokens.length < n - 1) {
    let t = "";
    const len = 2 + (rng.nextUint32() % 7);
    for (let k = 0; k < len; k++) t += chars[rng.nextUint32() % chars.length];
    if (!seen.has(t)) {
      seen.add(t);
      tokens.push(t);
    }
  }
  tokens.push(""); // the stop token
  return tokens;
}

out.synthetic = [];
for (const n of o.vocab.map(Number)) {
  const tokens = syntheticVocab(n);
  const t0 = now();
  const cache = new m.GrammarCompilerCache(() => m.grammarVocab({ decoder: { type: "ByteLevel" } }, tokens, new Set(), [n - 1]), n);
  await cache.compile(SPEC);
  const compileMs = now() - t0;
  const rng = new m.Prng(2);
  const logits = new Float32Array(n);
  const r = await constrainedRun(
    cache,
    async () => {
      for (let i = 0; i < n; i++) logits[i] = (rng.nextUint32() / 2 ** 31 - 1) * 8;
      return logits;
    },
    new Set([n - 1]),
  );
  out.synthetic.push({ vocab: n, first_request_ms: round(compileMs, 1), tokens: r.tokens, mask_ms_median: round(median(r.mask)), mask_ms_p90: round(p90(r.mask)), bitmask_ms_median: round(median(r.bitmask)), text: tokens.length ? undefined : "" });
}
console.log(JSON.stringify(out, null, 2));
