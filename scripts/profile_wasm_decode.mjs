#!/usr/bin/env node
// Where a Wasm decode step spends its time, in Node: per dispatch of the plan's decode
// entry (single-threaded module, one dispatch at a time, the fastest of --steps runs, so
// that a busy machine disturbs it least), summed by kind (each matvec kernel,
// attention, norms, element-wise ops), next to whole decode steps at 1..N threads
// (fastest of --steps; the difference between the threaded step and the single-thread
// sum divided by the threads is what syncing, imbalance and the JS side cost).
// --verify K profiles the plan's verify entry (a batched step of K tokens, speculative
// decoding's) instead, next to whole verify calls.
//
//   node scripts/profile_wasm_decode.mjs --bundle BUNDLE [--past 64] [--steps 20] [--threads 1,2] [--verify K]
//
// Needs the built runtime (cd runtime_js && npm run build). Prints a Markdown table.
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));
const { BundleLoader, WasmBackend } = await import(pathToFileURL(path.resolve(here, "..", "runtime_js", "dist", "llmpack.js")).href);

const { values: o } = parseArgs({
  options: {
    bundle: { type: "string" },
    past: { type: "string", default: "64" },
    steps: { type: "string", default: "20" },
    threads: { type: "string", default: "1,2" },
    verify: { type: "string" },
  },
});
if (!o.bundle) {
  console.error("error: pass --bundle DIR (an llmpack bundle with Wasm kernels)");
  process.exit(1);
}
const past = Number(o.past);
const steps = Number(o.steps);
const verifyK = o.verify === undefined ? 0 : Number(o.verify);
const entry = verifyK ? "verify" : "decode";
const tokens = verifyK || 1;
const call = (backend) =>
  verifyK ? backend.verify(Int32Array.from({ length: verifyK }, (_, i) => 200 + i), past) : backend.decode(1, past);
const best = (xs) => Math.min(...xs);

async function open(threads) {
  const loader = await BundleLoader.open(path.resolve(o.bundle), { cache: null });
  const backend = new WasmBackend({ threads });
  await backend.load(loader.manifest, loader);
  const prompt = Int32Array.from({ length: past }, (_, i) => 100 + ((i * 37) % 1000));
  await backend.prefill(prompt, 0);
  return backend;
}

/** whole decode steps at position `past` (ms, median) */
async function stepMs(backend) {
  const ts = [];
  for (let i = 0; i < steps + 2; i++) {
    const t = performance.now();
    await call(backend);
    ts.push(performance.now() - t);
  }
  return best(ts.slice(2));
}

// ---- per dispatch, single thread -------------------------------------------------------
const b1 = await open(1);
const ex = b1.executor;
if (verifyK && b1.verifyMaxTokens === undefined) {
  console.error("error: the bundle's plan has no verify entry (package it again)");
  process.exit(1);
}
if (verifyK) await call(b1); // writes the verify program's arguments once
const prog = ex.programs.get(entry);
prog.prepare(tokens, past, new Uint32Array(ex.memory.buffer));
const run = ex.runner.exec;
const mem = new Uint32Array(ex.memory.buffer);
const dispatches = b1.plan.entries[entry].dispatches;
const addrs = [];
let w = prog.addr / 4;
for (let i = 0; i < dispatches.length; i++) {
  addrs.push(w * 4);
  w += 2 + mem[w + 1];
}
const per = dispatches.map(() => []);
for (let r = 0; r < steps; r++) {
  for (let i = 0; i < dispatches.length; i++) {
    const t = performance.now();
    run(addrs[i], 1);
    per[i].push(performance.now() - t);
  }
}
const kind = (d) => {
  const k = d.kernel;
  if (k.startsWith("matvec") || k.startsWith("matmul")) return `${k} (${d.label.replace(/^layer \d+ /, "")})`;
  if (k.startsWith("attention")) return k.split(".")[0];
  return k.split(".")[0];
};
const byKind = new Map();
dispatches.forEach((d, i) => {
  const k = kind(d);
  const e = byKind.get(k) ?? { n: 0, ms: 0 };
  e.n += 1;
  e.ms += best(per[i]);
  byKind.set(k, e);
});
const total = [...byKind.values()].reduce((s, e) => s + e.ms, 0);
const step1 = await stepMs(b1);
b1.unload();

console.log(`${verifyK ? `verify call of ${verifyK} tokens` : "decode step"} at past_len ${past}: ${dispatches.length} dispatches; single thread, one dispatch at a time (fastest of ${steps})`);
console.log("");
console.log("| dispatch kind | count | ms per step | share | µs each |");
console.log("|---|---:|---:|---:|---:|");
for (const [k, e] of [...byKind.entries()].sort((a, b) => b[1].ms - a[1].ms))
  console.log(`| ${k} | ${e.n} | ${e.ms.toFixed(3)} | ${((100 * e.ms) / total).toFixed(1)} % | ${((1000 * e.ms) / e.n).toFixed(1)} |`);
console.log(`| sum | ${dispatches.length} | ${total.toFixed(3)} | | |`);
console.log("");
console.log(`| threads | ${verifyK ? "verify call" : "decode step"} ms | tok/s | step - sum/threads (sync, JS) |`);
console.log("|---:|---:|---:|---:|");
console.log(`| 1 | ${step1.toFixed(3)} | ${((1000 * tokens) / step1).toFixed(1)} | ${(step1 - total).toFixed(3)} |`);
for (const t of o.threads.split(",").map(Number).filter((t) => t > 1)) {
  const b = await open(t);
  const ms = await stepMs(b);
  b.unload();
  console.log(`| ${t} | ${ms.toFixed(3)} | ${((1000 * tokens) / ms).toFixed(1)} | ${(ms - total / t).toFixed(3)} |`);
}
