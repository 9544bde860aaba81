#!/usr/bin/env node
// llmpack bench driver: node bench/bench.mjs --bundle DIR [--where node|chromium]
//   [--backend webgpu|wasm] [--runs N] [--prompt-tokens N] [--new-tokens N]
//   [--dawn-flag FLAG ...] [--chromium-arg ARG ...]
// Prints one JSON object on stdout (progress and page console on stderr).
// Node needs a WebGPU adapter through Dawn (npm "webgpu"); without a GPU on Linux set
// VK_ICD_FILENAMES to SwiftShader's ICD (Debian: /usr/lib/chromium/vk_swiftshader_icd.json).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { dawnToggles, startHarness } from "./harness.mjs";

const { values: o } = parseArgs({
  options: {
    bundle: { type: "string" },
    where: { type: "string", default: "node" },
    backend: { type: "string", default: "webgpu" },
    runs: { type: "string", default: "3" },
    "prompt-tokens": { type: "string", default: "64" },
    "new-tokens": { type: "string", default: "32" },
    "dawn-flag": { type: "string", multiple: true, default: [] },
    "chromium-arg": { type: "string", multiple: true, default: [] },
    chromium: { type: "string" },
    threads: { type: "string" },
  },
});
if (!o.bundle) {
  console.error("usage: bench.mjs --bundle DIR [--where node|chromium] [--backend webgpu|wasm] [--runs N] [--prompt-tokens N] [--new-tokens N]");
  process.exit(2);
}
const count = (name, min) => {
  const v = Number(o[name]);
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name} must be an integer >= ${min}`);
  return v;
};
const job = path.join(path.dirname(fileURLToPath(import.meta.url)), "bench_job.mjs");
const cacheDir = o.where === "node" ? mkdtempSync(path.join(os.tmpdir(), "llmpack-bench-cache-")) : undefined;
const toggles = dawnToggles(o["dawn-flag"]);
const h = await startHarness({
  bundleDir: o.bundle,
  where: o.where,
  chromium: o.chromium,
  chromiumArgs: [...o["chromium-arg"], ...toggles.chromium],
  onConsole: (line) => console.error(line),
});
try {
  const t0 = performance.now();
  const result = await h.run(job, {
    backend: o.backend,
    runs: count("runs", 1),
    promptTokens: count("prompt-tokens", 1),
    newTokens: count("new-tokens", 0),
    cacheDir,
    threads: o.threads ? count("threads", 1) : undefined,
    dawnFlags: o.where === "node" ? toggles.node : undefined,
  });
  result.where = o.where;
  result.runtime = o.where === "node" ? `node ${process.versions.node}` : await h.browserVersion();
  result.shard_requests = h.requests("bundle/shards/");
  result.wall_s = Math.round(performance.now() - t0) / 1000;
  if (o["dawn-flag"].length) result.dawn_flags = o["dawn-flag"];
  console.log(JSON.stringify(result, null, 2));
} finally {
  await h.close();
  if (cacheDir) rmSync(cacheDir, { recursive: true, force: true });
}
