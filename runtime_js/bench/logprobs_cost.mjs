#!/usr/bin/env node
// What logprobs cost per token in the sampler (src/sampler.ts), for a vocabulary size:
//   node bench/logprobs_cost.mjs [--vocab 49152,262144] [--steps 200]
// Prints, per vocabulary, the median ms of Sampler.choose() without logprobs, with
// logprobs, and with top_logprobs 20, on random logits (temperature 0.7, top_p 0.9),
// with a logit_bias of 10 entries, and greedy without and with top_logprobs 20.
import { parseArgs } from "node:util";
import { LogitBias, Prng, Sampler } from "../dist/llmpack.js";

const { values: o } = parseArgs({ options: { vocab: { type: "string", default: "49152,262144" }, steps: { type: "string", default: "200" } } });
const steps = Number(o.steps);
const median = (xs) => xs.sort((a, b) => a - b)[xs.length >> 1];

for (const vocab of o.vocab.split(",").map(Number)) {
  const rng = new Prng(1);
  const logits = Float32Array.from({ length: vocab }, () => 8 * rng.next() - 4);
  const bias = new Map(Array.from({ length: 10 }, (_, i) => [i * 97, 5]));
  const time = (top, processors = [], params = { temperature: 0.7, top_p: 0.9 }) => {
    const s = new Sampler({ ...params, seed: 1 }, [], processors);
    const ms = [];
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      s.choose(logits, top);
      ms.push(performance.now() - t0);
    }
    return Number(median(ms).toFixed(3));
  };
  time(undefined); // (warm up)
  console.log(JSON.stringify({
    vocab,
    plain_ms: time(undefined),
    logprobs_ms: time(0),
    top_logprobs_20_ms: time(20),
    logit_bias_ms: time(undefined, [new LogitBias(bias)]),
    greedy_ms: time(undefined, [], { temperature: 0 }),
    greedy_top_logprobs_20_ms: time(20, [], { temperature: 0 }),
  }));
}
