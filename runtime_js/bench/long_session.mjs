// A long session: many chat turns in one engine (Wasm backend, Node), printing the JS
// heap and the Wasm memory every few turns, to show that neither grows with the number
// of turns (issue 15). The conversation keeps its last messages, so each turn reuses
// the KV cache for the shared prefix and the prompt stays inside the context window.
//
//   npm run build && node --expose-gc bench/long_session.mjs --bundle BUNDLE [--turns 500] [--every 50]
//     [--threads 1] [--max-tokens 12] [--clear-bpe-cache] [--json]
import { parseArgs } from "node:util";
import { WasmBackend, createEngine } from "../dist/llmpack.js";

const { values: args } = parseArgs({
  options: {
    bundle: { type: "string" },
    turns: { type: "string", default: "500" },
    every: { type: "string", default: "50" },
    threads: { type: "string", default: "1" },
    "max-tokens": { type: "string", default: "12" },
    json: { type: "boolean", default: false },
    // diagnostic: empty the tokenizer's word cache before each sample, to see the rest alone
    "clear-bpe-cache": { type: "boolean", default: false },
  },
});
if (!args.bundle) throw new Error("--bundle BUNDLE is required");
const turns = Number(args.turns);
const every = Number(args.every);
const MiB = (n) => Math.round((n / 2 ** 20) * 100) / 100;

const engine = await createEngine(args.bundle, { backend: new WasmBackend({ threads: Number(args.threads) }), cache: null });
// (the backend's linear memory; a WebAssembly.Memory never shrinks, so growth would show here)
const wasmBytes = () => engine.backend.executor?.memory.buffer.byteLength ?? 0;

function sample(turn, t0, tokens) {
  if (args["clear-bpe-cache"]) engine.tokenizer.tok?.model?.clear_cache?.();
  globalThis.gc?.();
  const m = process.memoryUsage();
  return {
    turn,
    heap_used_mib: MiB(m.heapUsed),
    external_mib: MiB(m.external),
    array_buffers_mib: MiB(m.arrayBuffers),
    wasm_memory_mib: MiB(wasmBytes()),
    rss_mib: MiB(m.rss),
    // the tokenizer's BPE word cache (an LRU of 10 000 words in @huggingface/tokenizers):
    // the one structure here that grows with new text, up to its bound
    bpe_cache_words: engine.tokenizer.tok?.model?.cache?.cache?.size ?? null,
    tokens_generated: tokens,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
  };
}

const history = [];
const rows = [];
let generated = 0;
const t0 = performance.now();
rows.push(sample(0, t0, 0));
if (!args.json) console.log(`${engine.backend.label}, context window ${engine.contextWindow}; ${turns} turns`);
const print = (r) => !args.json && console.log(Object.entries(r).map(([k, v]) => `${k}=${v}`).join(" "));
print(rows[0]);
for (let turn = 1; turn <= turns; turn++) {
  history.push({ role: "user", content: `Turn ${turn}: tell me about the number ${turn % 97}.` });
  const res = await engine.chat.completions.create({ messages: history, max_tokens: Number(args["max-tokens"]), temperature: 0.7, seed: turn });
  history.push({ role: "assistant", content: res.choices[0].message.content });
  generated += res.usage.completion_tokens;
  // keep the last exchanges only, so the prompt fits the window
  while (history.length > 4) history.shift();
  if (turn % every === 0) {
    rows.push(sample(turn, t0, generated));
    print(rows.at(-1));
  }
}
await engine.unload();
if (args.json) console.log(JSON.stringify(rows));
