#!/usr/bin/env node
// How often a top-k / top-p decode step is answered from the GPU's 64 candidates (the plan's
// "topk" entry, 520 bytes read back) instead of reading the logits, on a real model's logits:
//
//   npm run build && node bench/topk_decided.mjs --bundle BUNDLE [--tokens 48] [--threads 1]
//
// Generates a few chat answers with the Wasm backend (whose logits are in memory), keeping the
// logits of every step; then, per sampling setting, asks Sampler.chooseFromTop whether the 64
// largest logits and the softmax sum decide the token (the sum rounded to f32, as the device
// writes it), and checks that a decided token equals Sampler.choose's on the full logits with
// the same seed. Prints one JSON line per setting: steps, decided, the fraction decided, the
// mean bytes read back per step with the topk path (fallbacks read the logits too) and
// without it, and mismatches (must be 0).
import { parseArgs } from "node:util";
import { Sampler, WasmBackend, createEngine } from "../dist/llmpack.js";

const { values: args } = parseArgs({
  options: { bundle: { type: "string" }, tokens: { type: "string", default: "48" }, threads: { type: "string", default: "1" } },
});
if (!args.bundle) throw new Error("--bundle BUNDLE is required");
const K = 64;

const steps = [];
const inner = new WasmBackend({ threads: Number(args.threads) });
// the backend, recording a copy of the logits of every call
const backend = new Proxy(inner, {
  get(target, prop) {
    const v = Reflect.get(target, prop);
    if (prop === "decode" || prop === "prefill") {
      return async (...a) => {
        const logits = await v.apply(target, a);
        steps.push(Float32Array.from(logits));
        return logits;
      };
    }
    return typeof v === "function" ? v.bind(target) : v;
  },
});
const engine = await createEngine(args.bundle, { backend, cache: null });
const prompts = [
  "What is the capital of France, and which river flows through it?",
  "Write a short poem about the sea.",
  "Explain in two sentences how a bicycle stays upright.",
  "List three uses of copper.",
];
for (const [i, content] of prompts.entries()) {
  await engine.chat.completions.create({ messages: [{ role: "user", content }], max_tokens: Number(args.tokens), temperature: 0.7, top_p: 0.9, seed: i });
}
await engine.unload();

/** What the topk entry writes: the K largest (ties to the lowest id), the f32 softmax sum, the count. */
function deviceTop(logits, invT) {
  const ids = [];
  for (let i = 0; i < logits.length; i++) if (logits[i] > -Infinity) ids.push(i);
  const top = ids.slice().sort((a, b) => logits[b] - logits[a] || a - b).slice(0, K);
  const max = logits[top[0]];
  let z = 0;
  for (const i of ids) z += Math.exp((logits[i] - max) * Math.fround(invT));
  return { ids: Int32Array.from(top), logits: Float32Array.from(top, (i) => logits[i]), sum: Math.fround(z), finite: ids.length, vocab: logits.length };
}

const vocab = steps[0].length;
const settings = [
  { temperature: 0.7, top_k: 40 },
  { temperature: 0.6, top_p: 0.9 },
  { temperature: 0.7, top_p: 0.9 },
  { temperature: 1.0, top_p: 0.9 },
  { temperature: 1.0, top_p: 0.95 },
  { temperature: 1.0, top_p: 0.5 },
];
for (const params of settings) {
  let decided = 0;
  let mismatches = 0;
  steps.forEach((logits, s) => {
    const dev = new Sampler({ ...params, seed: s });
    const ask = dev.topCandidates(K, vocab);
    const got = ask && dev.chooseFromTop(deviceTop(logits, ask.invTemperature));
    if (got) {
      decided++;
      if (got.token !== new Sampler({ ...params, seed: s }).choose(logits).token) mismatches++;
    }
  });
  const topkBytes = 8 * K + 8;
  console.log(JSON.stringify({
    ...params,
    steps: steps.length,
    decided,
    fraction: Number((decided / steps.length).toFixed(3)),
    bytes_per_step_topk: Math.round(topkBytes + ((steps.length - decided) / steps.length) * 4 * vocab),
    bytes_per_step_logits: 4 * vocab,
    mismatches,
  }));
}
