#!/usr/bin/env node
// Logits of the runtime's Wasm backend, for tests/test_wasm_plan.py (which holds the
// numpy reference and asserts):
//   node test/e2e/wasm_logits.mjs spec.json
// spec: {jobs: [{bundle, threads?, plan?, calls: [["prefill", [ids], pastLen] | ["decode", id, pos]], out}]}
// Each job loads a bundle folder (no shard cache) with `new WasmBackend({threads})`,
// makes its calls in order through the Backend interface and writes every call's
// logits, f32 little-endian one after the other, to `out`. `plan` names a plan.json to
// use instead of the bundle's (a re-planned bundle: other chunk size, split weights).
// Prints one JSON array: per job {label, threads, ms} or {error}.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "dist", "llmpack.js");
const { BundleLoader, WasmBackend } = await import(pathToFileURL(dist).href);

async function runJob(job) {
  const t0 = performance.now();
  const loader = await BundleLoader.open(job.bundle, { cache: null });
  if (job.plan) {
    const plan = JSON.parse(readFileSync(job.plan, "utf8"));
    const fetchJson = loader.fetchJson.bind(loader);
    loader.fetchJson = (file, signal) => (file === "plan.json" ? Promise.resolve(plan) : fetchJson(file, signal));
  }
  const backend = new WasmBackend({ threads: job.threads ?? 1 });
  await backend.load(loader.manifest, loader);
  try {
    const out = [];
    for (const [entry, tokens, past] of job.calls) {
      const logits = entry === "prefill" ? await backend.prefill(Int32Array.from(tokens), past) : await backend.decode(tokens, past);
      out.push(Buffer.from(logits.slice().buffer)); // the backend reuses its array
    }
    writeFileSync(job.out, Buffer.concat(out));
    return { label: backend.label, threads: backend.threads, ms: Math.round(performance.now() - t0) };
  } finally {
    backend.unload();
  }
}

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = [];
for (const job of spec.jobs) {
  try {
    results.push(await runJob(job));
  } catch (e) {
    results.push({ error: e?.stack ?? String(e) });
  }
}
console.log(JSON.stringify(results));
