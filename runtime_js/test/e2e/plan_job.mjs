// What the logits drivers (wasm_logits.mjs in Node, webgpu_logits.mjs in Deno) share:
// opening a job's bundle, with its re-planned plan.json if it names one, and making its
// Backend calls while keeping every call's logits.
import { readFileSync, writeFileSync } from "node:fs";

/** The job's bundle (no shard cache); `job.plan` names a plan.json to use instead of the bundle's. */
export async function openJobBundle(BundleLoader, job) {
  const loader = await BundleLoader.open(job.bundle, { cache: null });
  if (job.plan) {
    const plan = JSON.parse(readFileSync(job.plan, "utf8"));
    const fetchJson = loader.fetchJson.bind(loader);
    loader.fetchJson = (file, signal) => (file === "plan.json" ? Promise.resolve(plan) : fetchJson(file, signal));
  }
  return loader;
}

/** Collects logits (copies: a backend reuses its array) and writes them, f32 one after the other. */
export class LogitsFile {
  parts = [];
  keep(logits) {
    this.parts.push(new Uint8Array(logits.slice().buffer));
    return logits;
  }
  write(file) {
    const bytes = new Uint8Array(this.parts.reduce((n, a) => n + a.length, 0));
    this.parts.reduce((at, a) => (bytes.set(a, at), at + a.length), 0);
    writeFileSync(file, bytes);
  }
}

/** Makes `calls` ([["prefill", ids, past] | ["decode", id, pos] | ["verify", ids, past]]) in order
 * (a verify call keeps the logits of every token, one row after the other); returns the last
 * logits and the position after them. */
export async function runCalls(backend, calls, logits) {
  let last = null;
  let pos = 0;
  for (const [entry, tokens, past] of calls) {
    const call = {
      prefill: () => backend.prefill(Int32Array.from(tokens), past),
      decode: () => backend.decode(tokens, past),
      verify: () => backend.verify(Int32Array.from(tokens), past),
    }[entry];
    if (!call) throw new Error(`unknown call ${entry}`);
    last = logits.keep(await call());
    pos = past + (entry === "decode" ? 1 : tokens.length);
  }
  return { last, pos };
}

/** Runs every job of the spec file, catching each job's error into its result. */
export async function runJobs(specFile, runJob) {
  const spec = JSON.parse(readFileSync(specFile, "utf8"));
  const results = [];
  for (const job of spec.jobs) {
    try {
      results.push(await runJob(job));
    } catch (e) {
      results.push({ error: e?.stack ?? String(e) });
    }
  }
  return results;
}
