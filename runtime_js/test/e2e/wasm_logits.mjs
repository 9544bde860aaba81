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
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { LogitsFile, openJobBundle, runCalls, runJobs } from "./plan_job.mjs";

const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "dist", "llmpack.js");
const { BundleLoader, WasmBackend } = await import(pathToFileURL(dist).href);

async function runJob(job) {
  const t0 = performance.now();
  const loader = await openJobBundle(BundleLoader, job);
  const backend = new WasmBackend({ threads: job.threads ?? 1 });
  await backend.load(loader.manifest, loader);
  try {
    const logits = new LogitsFile();
    await runCalls(backend, job.calls, logits);
    logits.write(job.out);
    return { label: backend.label, threads: backend.threads, ms: Math.round(performance.now() - t0) };
  } finally {
    backend.unload();
  }
}

console.log(JSON.stringify(await runJobs(process.argv[2], runJob)));
