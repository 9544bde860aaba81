#!/usr/bin/env node
// What one batched verify call costs next to one decode step (speculative decoding's
// trade: a verify of k tokens pays off when more than verify_ms / decode_ms of them are
// accepted), on the Wasm backend in Node: after a prompt of --past tokens, the median of
// --steps runs of a decode step and of verify calls of each --tokens count, at the same
// position (each run overwrites the same KV rows).
//
//   node scripts/bench_verify.mjs --bundle BUNDLE [--threads 1,2] [--tokens 1,4,8,16] [--past 64] [--steps 10]
//
// Needs the built runtime (cd runtime_js && npm run build) and a bundle whose plan has the
// verify entry. Prints a Markdown table.
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));
const { BundleLoader, WasmBackend } = await import(pathToFileURL(path.resolve(here, "..", "runtime_js", "dist", "llmpack.js")).href);

const { values: o } = parseArgs({
  options: {
    bundle: { type: "string" },
    threads: { type: "string", default: "1,2" },
    tokens: { type: "string", default: "1,4,8,16" },
    past: { type: "string", default: "64" },
    steps: { type: "string", default: "10" },
  },
});
if (!o.bundle) {
  console.error("error: pass --bundle DIR (an llmpack bundle with Wasm kernels)");
  process.exit(1);
}
const list = (s) => s.split(",").map(Number);
const past = Number(o.past);
const steps = Number(o.steps);

async function median(fn) {
  await fn(); // (warm-up)
  const ts = [];
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    await fn();
    ts.push(performance.now() - t);
  }
  ts.sort((a, b) => a - b);
  return ts[ts.length >> 1];
}

const rows = [];
for (const threads of list(o.threads)) {
  const loader = await BundleLoader.open(path.resolve(o.bundle), { cache: null });
  const backend = new WasmBackend({ threads });
  await backend.load(loader.manifest, loader);
  try {
    if (backend.verifyMaxTokens === undefined) {
      console.error("error: the bundle's plan has no verify entry (package it again)");
      process.exit(1);
    }
    await backend.prefill(Int32Array.from({ length: past }, (_, i) => 100 + ((i * 37) % 1000)), 0);
    const decode = await median(() => backend.decode(1, past));
    rows.push({ threads, what: "decode step", tokens: 1, ms: decode, decode });
    for (const k of list(o.tokens)) {
      if (k > backend.verifyMaxTokens) continue;
      const toks = Int32Array.from({ length: k }, (_, i) => 200 + i);
      rows.push({ threads, what: "verify", tokens: k, ms: await median(() => backend.verify(toks, past)), decode });
    }
  } finally {
    backend.unload();
  }
}

console.log(`Wasm, ${path.basename(path.resolve(o.bundle))}, past_len ${past}, median of ${steps}\n`);
console.log("| threads | call | tokens | ms | ms / token | / decode step |");
console.log("|---:|---|---:|---:|---:|---:|");
for (const r of rows) {
  console.log(`| ${r.threads} | ${r.what} | ${r.tokens} | ${r.ms.toFixed(2)} | ${(r.ms / r.tokens).toFixed(2)} | ${(r.ms / r.decode).toFixed(2)} |`);
}
