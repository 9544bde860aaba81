#!/usr/bin/env node
// What one batched verify call costs next to one decode step (speculative decoding's
// trade: a verify of k tokens pays off when more than verify_ms / decode_ms of them are
// accepted), on the Wasm backend (or --backend webgpu: Dawn; SwiftShader where there is no
// GPU, which says nothing about a GPU) in Node: after a prompt of --past tokens, the median of
// --steps rounds of a decode step and a verify call of each --tokens count, at the same
// position (each run overwrites the same KV rows; one call of each kind per round, so that a
// busy machine disturbs them alike).
//
//   node scripts/bench_verify.mjs --bundle BUNDLE [--backend wasm|webgpu] [--threads 1,2] [--tokens 1,4,8,16]
//                                 [--past 64] [--steps 10]
//
// Needs the built runtime (cd runtime_js && npm run build) and a bundle whose plan has the
// verify entry. Prints a Markdown table.
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"; // (Dawn rejects lavapipe)
if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD)) process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
const here = path.dirname(fileURLToPath(import.meta.url));
const { BundleLoader, WasmBackend, WebGpuBackend } = await import(pathToFileURL(path.resolve(here, "..", "runtime_js", "dist", "llmpack.js")).href);

const { values: o } = parseArgs({
  options: {
    bundle: { type: "string" },
    backend: { type: "string", default: "wasm" },
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

const median = (ts) => [...ts].sort((a, b) => a - b)[ts.length >> 1];

const rows = [];
const gpu = o.backend === "webgpu";
for (const threads of gpu ? [0] : list(o.threads)) {
  const loader = await BundleLoader.open(path.resolve(o.bundle), { cache: null });
  const backend = gpu ? new WebGpuBackend() : new WasmBackend({ threads });
  await backend.load(loader.manifest, loader);
  try {
    if (backend.verifyMaxTokens === undefined) {
      console.error("error: the bundle's plan has no verify entry (package it again)");
      process.exit(1);
    }
    await backend.prefill(Int32Array.from({ length: past }, (_, i) => 100 + ((i * 37) % 1000)), 0);
    const sizes = list(o.tokens).filter((k) => k <= backend.verifyMaxTokens);
    // one of each call per round (a busy machine disturbs them alike), after a warm-up round
    const calls = [["decode step", 1, () => backend.decode(1, past)],
      ...sizes.map((k) => ["verify", k, () => backend.verify(Int32Array.from({ length: k }, (_, i) => 200 + i), past)])];
    const times = calls.map(() => []);
    for (let round = 0; round <= steps; round++) {
      for (const [i, [, , call]] of calls.entries()) {
        const t = performance.now();
        await call();
        if (round) times[i].push(performance.now() - t);
      }
    }
    const decode = median(times[0]);
    calls.forEach(([what, tokens], i) => rows.push({ threads: gpu ? backend.description : threads, what, tokens, ms: median(times[i]), decode }));
  } finally {
    backend.unload();
  }
}

console.log(`${gpu ? "WebGPU" : "Wasm"}, ${path.basename(path.resolve(o.bundle))}, past_len ${past}, median of ${steps} rounds\n`);
console.log(`| ${gpu ? "device" : "threads"} | call | tokens | ms | ms / token | / decode step |`);
console.log("|---:|---|---:|---:|---:|---:|");
for (const r of rows) {
  console.log(`| ${r.threads} | ${r.what} | ${r.tokens} | ${r.ms.toFixed(2)} | ${(r.ms / r.tokens).toFixed(2)} | ${(r.ms / r.decode).toFixed(2)} |`);
}
