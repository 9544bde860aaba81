#!/usr/bin/env node
// Prompt-lookup speculative decoding against plain decoding, greedy, on the Wasm backend
// and on WebGPU (Node's Dawn; SwiftShader where there is no GPU):
//   node bench/speculative.mjs --bundle DIR [--backends wasm,webgpu] [--threads 2]
//        [--configs 8/3/2,4/3/2/fixed] [--tasks typos,list,code,story,sky] [--max-tokens 160] [--runs 1] [--json]
// For every task (three input-grounded: fix the typos in a paragraph, repeat a list with
// one item changed, rename a variable in a function; two open-ended) and backend it runs
// the chat request without speculation and with each config (maxDraft/maxNgram/minNgram, adaptive
// draft lengths unless it ends with /fixed),
// and prints decode tokens/s (decode_tokens / decode_ms: the tokens sampled from
// decode-time logits per second of decode and verify calls), the ratio to plain decoding,
// the acceptance (accepted / drafted tokens), the tokens per verify call, and whether the
// answer is the same as plain decoding's. With --runs R the runs are interleaved (plain, each
// config, plain, ...) and each one's best decode rate kept (for a shared machine).
import { existsSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";
if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD)) process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
process.env.XDG_RUNTIME_DIR ||= mkdtempSync(path.join(os.tmpdir(), "xdg-"));

const { values: o } = parseArgs({
  options: {
    bundle: { type: "string" },
    backends: { type: "string", default: "wasm,webgpu" },
    threads: { type: "string", default: "2" },
    configs: { type: "string", default: "8/3/2" },
    tasks: { type: "string", default: "typos,list,code,story,sky" },
    "max-tokens": { type: "string", default: "160" },
    runs: { type: "string", default: "1" },
    json: { type: "boolean", default: false },
  },
});
if (!o.bundle) {
  console.error("bench/speculative.mjs: --bundle DIR is required (a bundle from `llmpack package`, e.g. SmolLM2 q4f32)");
  process.exit(2);
}
const m = await import(new URL("../dist/llmpack.js", import.meta.url).href);

const TASKS = {
  typos: {
    grounded: true,
    content:
      "Fix the typos in this paragraph and reply with the corrected paragraph only.\n\n" +
      "The histroy of the printing press begins in the fifteenth centruy, when Johannes Gutenberg combined movable " +
      "metal type, oil-based ink and a wooden press adapted from those used to make wine. Within a few decdaes " +
      "printing shops had spread to more than two hundred cities acros Europe, and the number of books in " +
      "circulation grew from thousands to milions.",
  },
  list: {
    grounded: true,
    content:
      "Repeat this shopping list exactly, but with \"apples\" changed to \"pears\":\n\n" +
      "- 2 litres of milk\n- 6 eggs\n- 1 kg of apples\n- a loaf of brown bread\n- 500 g of butter\n" +
      "- 3 tins of tomatoes\n- a bag of rice\n- 2 onions\n- a jar of honey\n- 1 kg of carrots",
  },
  code: {
    grounded: true,
    content:
      "Rename the variable `total` to `sum` in this Python function and reply with the code only.\n\n" +
      "```python\ndef average(values):\n    total = 0\n    count = 0\n    for value in values:\n" +
      "        total = total + value\n        count = count + 1\n    if count == 0:\n        return 0\n" +
      "    return total / count\n```",
  },
  story: { grounded: false, content: "Write a short story about a robot who learns to paint." },
  sky: { grounded: false, content: "Explain why the sky is blue to a ten-year-old." },
};

const configs = o.configs.split(",").map((c) => {
  const [maxDraft, maxNgram, minNgram] = c.split("/").map(Number);
  return { name: c, opts: { maxDraft, maxNgram, minNgram, adaptive: !c.endsWith("/fixed") } };
});
const bundleUrl = pathToFileURL(path.resolve(o.bundle) + "/").href;
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const rows = [];

for (const name of o.backends.split(",")) {
  const backend = name === "wasm" ? new m.WasmBackend({ threads: Number(o.threads) }) : name === "webgpu" ? new m.WebGpuBackend() : name;
  const engine = await m.createEngine(bundleUrl, { backend, cache: null });
  const label = engine.backendInfo.label;
  if (!engine.backend.verify) console.error(`note: the ${label} backend has no verify: speculation falls back to plain decoding`);
  /** One greedy answer; its decode rate (tokens sampled per second of decode and verify calls). */
  const run = async (task, speculative, maxTokens = Number(o["max-tokens"])) => {
    const res = await engine.chat.completions.create(
      { messages: [{ role: "user", content: TASKS[task].content }], temperature: 0, max_tokens: maxTokens },
      { speculative },
    );
    const t = res.timings;
    return { rate: (t.decode_tokens / t.decode_ms) * 1000, text: res.choices[0].message.content, t, tokens: res.usage.completion_tokens };
  };
  const better = (a, b) => (!a || b.rate > a.rate ? b : a);
  for (const task of o.tasks.split(",")) {
    if (!TASKS[task]) throw new Error(`unknown task ${task} (known: ${Object.keys(TASKS).join(", ")})`);
    await run(task, { adaptive: false }, 8); // (warm-up: every entry point's kernels compiled, pages touched)
    // runs interleaved (plain, each config, plain, ...), each one's best kept: a shared machine's load moves
    let plain = null;
    const best = configs.map(() => null);
    for (let r = 0; r < Number(o.runs); r++) {
      plain = better(plain, await run(task, false));
      for (const [i, c] of configs.entries()) best[i] = better(best[i], await run(task, c.opts));
    }
    for (const [i, c] of configs.entries()) {
      const spec = best[i];
      const t = spec.t;
      rows.push({
        backend: label,
        task,
        grounded: TASKS[task].grounded,
        config: c.name,
        tokens: plain.tokens,
        plain_tok_s: round(plain.rate, 1),
        spec_tok_s: round(spec.rate, 1),
        ratio: round(spec.rate / plain.rate),
        acceptance: t.draft_tokens ? round(t.accepted_tokens / t.draft_tokens) : null,
        tokens_per_verify: t.verify_steps ? round((t.accepted_tokens + t.verify_steps) / t.verify_steps) : null,
        same: spec.text === plain.text,
      });
      console.error(JSON.stringify(rows.at(-1)));
    }
  }
  await engine.unload();
}

if (o.json) console.log(JSON.stringify({ bundle: o.bundle, threads: Number(o.threads), max_tokens: Number(o["max-tokens"]), rows }, null, 1));
else {
  console.log("| backend | task | draft/ngram/min | tokens | plain tok/s | speculative tok/s | ratio | acceptance | tokens per verify | same output |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) {
    console.log(`| ${r.backend} | ${r.task}${r.grounded ? "" : " (open)"} | ${r.config} | ${r.tokens} | ${r.plain_tok_s} | ${r.spec_tok_s} | ${r.ratio}x | ${r.acceptance ?? "-"} | ${r.tokens_per_verify ?? "-"} | ${r.same ? "yes" : "NO"} |`);
  }
}
if (rows.some((r) => !r.same)) process.exitCode = 1;
