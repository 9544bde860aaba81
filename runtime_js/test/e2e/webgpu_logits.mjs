// Logits of the runtime's WebGPU backend, for tests/test_runtime_deno.py (which holds the
// numpy reference and asserts). Written for Deno (navigator.gpu is wgpu; on lavapipe it
// has shader-f16), and runs in Node too (Dawn):
//   deno run --allow-all --unstable-webgpu test/e2e/webgpu_logits.mjs spec.json
// spec: {jobs: [{bundle, variant?, calls: [["prefill", [ids], pastLen] | ["decode", id, pos]],
//               greedy?, plan?, generate?: {prompt, max_tokens}, out}]}
// Each job loads a bundle folder (no shard cache) with `new WebGpuBackend({variant})`
// (variant "auto" by default), makes its calls in order through the Backend interface,
// then `greedy` more decode steps on the argmax of the previous logits, and writes every
// call's logits, f32 little-endian one after the other, to `out`. `plan` names a plan.json
// to use instead of the bundle's (re-planned: split weights, other chunk size). With `generate`, the
// bundle is then loaded again through the engine API (createEngine, backend "webgpu", a
// fresh shard cache) and `engine.generate(prompt)` runs greedily: its text is reported.
// Prints one JSON object: {runtime, adapter: {description, features}, jobs: [per job
// {label, variant, adapter, tokens (the greedy ones), load_ms, run_ms, generated?} or {error}]}.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { LogitsFile, openJobBundle, runCalls, runJobs } from "./plan_job.mjs";

const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "dist", "llmpack.js");
const { BundleLoader, WebGpuBackend, createEngine, describeAdapter } = await import(pathToFileURL(dist).href);

function argmax(a) {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

async function runJob(job) {
  const t0 = performance.now();
  const loader = await openJobBundle(BundleLoader, job);
  const backend = new WebGpuBackend({ variant: job.variant ?? "auto" });
  await backend.load(loader.manifest, loader);
  const t1 = performance.now();
  try {
    const logits = new LogitsFile();
    let { last, pos } = await runCalls(backend, job.calls, logits);
    const tokens = [];
    for (let i = 0; i < (job.greedy ?? 0); i++) {
      tokens.push(argmax(last));
      last = logits.keep(await backend.decode(tokens.at(-1), pos++));
    }
    logits.write(job.out);
    const generated = job.generate && (await generate(job.bundle, job.generate));
    return {
      generated,
      label: backend.label, variant: backend.variant, adapter: describeAdapter(backend.adapter), tokens,
      load_ms: Math.round(t1 - t0), run_ms: Math.round(performance.now() - t1),
    };
  } finally {
    await backend.unload();
  }
}

async function generate(bundle, { prompt, max_tokens }) {
  const cacheDir = mkdtempSync(path.join(os.tmpdir(), "llmpack-deno-cache-"));
  const engine = await createEngine(bundle, { backend: "webgpu", cacheDir });
  try {
    const t0 = performance.now();
    const text = await engine.generate(prompt, { max_tokens, temperature: 0 });
    return { text, backend: engine.backend.label, ms: Math.round(performance.now() - t0) };
  } finally {
    await engine.unload();
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

const gpu = globalThis.navigator?.gpu;
const adapter = gpu ? await gpu.requestAdapter() : null;
const info = adapter?.info ?? {};
const result = {
  runtime: globalThis.Deno ? `Deno ${Deno.version.deno}` : `Node ${process.version}`,
  adapter: adapter && {
    description: describeAdapter({ vendor: info.vendor ?? "", architecture: info.architecture ?? "", device: info.device ?? "", description: info.description ?? "" }),
    features: [...adapter.features].sort(),
  },
  jobs: [],
};
result.jobs = await runJobs(process.argv.at(-1), runJob);
console.log(JSON.stringify(result));
