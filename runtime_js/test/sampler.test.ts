import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { LogitBias, parseLogitBias } from "../src/logit_bias.js";
import type { LogitsProcessor } from "../src/logits_processor.js";
import { Prng, Sampler, type SamplingParams, TOP_SUM_MARGIN, type TopCandidates } from "../src/sampler.js";

const LOGITS = Float32Array.from([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]);

function softmax(x: ArrayLike<number>, t = 1): number[] {
  const m = Math.max(...Array.from(x));
  const e = Array.from(x, (v) => Math.exp((v - m) / t));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}

function histogram(params: SamplingParams, n: number, logits = LOGITS): number[] {
  const counts = new Array(logits.length).fill(0);
  // A fresh sampler per draw: penalties would otherwise change the distribution.
  const rng = new Prng(12345);
  for (let i = 0; i < n; i++) counts[new Sampler({ ...params, seed: rng.nextUint32() }).sample(logits)]++;
  return counts;
}

/** Pearson's chi-square of observed counts against expected probabilities (zero-probability bins must be empty). */
function chiSquare(counts: number[], probs: number[]): number {
  const n = counts.reduce((a, b) => a + b, 0);
  let chi = 0;
  assert.equal(counts.length, probs.length);
  counts.forEach((c, i) => {
    const p = probs[i]!; // same lengths
    if (p === 0) assert.equal(c, 0, `token ${i} has probability 0 but was drawn ${c} times`);
    else chi += (c - n * p) ** 2 / (n * p);
  });
  return chi;
}

// 99.9th percentile of chi-square for 7 degrees of freedom (fewer for restricted sets: still a safe bound).
const CHI2_CRIT = 24.32;
const N = 20000;

describe("sampler distribution", () => {
  test("temperature 1 samples the softmax", () => {
    assert.ok(chiSquare(histogram({ temperature: 1 }, N), softmax(LOGITS)) < CHI2_CRIT);
  });

  test("temperature scales the logits", () => {
    assert.ok(chiSquare(histogram({ temperature: 0.5 }, N), softmax(LOGITS, 0.5)) < CHI2_CRIT);
    assert.ok(chiSquare(histogram({ temperature: 2 }, N), softmax(LOGITS, 2)) < CHI2_CRIT);
  });

  test("top-k keeps the k most likely tokens, renormalized", () => {
    const p = softmax(LOGITS.slice(0, 3));
    const probs = [...p, 0, 0, 0, 0, 0];
    assert.ok(chiSquare(histogram({ temperature: 1, top_k: 3 }, N), probs) < CHI2_CRIT);
  });

  test("top-p keeps the smallest set reaching p", () => {
    const full = softmax(LOGITS); // cumulative: .40 .65 .80 .89 ...
    const cum = full.map((_, i) => full.slice(0, i + 1).reduce((a, b) => a + b, 0));
    const keep = cum.findIndex((c) => c >= 0.7) + 1;
    assert.equal(keep, 3);
    const mass = cum[keep - 1]!; // 1 <= keep <= cum.length
    const probs = full.map((v, i) => (i < keep ? v / mass : 0));
    assert.ok(chiSquare(histogram({ temperature: 1, top_p: 0.7 }, N), probs) < CHI2_CRIT);
  });

  test("top-p over a large vocabulary matches a full sort", () => {
    const rng = new Prng(7);
    const logits = Float32Array.from({ length: 5000 }, () => rng.next() * 8);
    const p = softmax(logits);
    const order = p.map((v, i): [number, number] => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    let mass = 0;
    const allowed = new Set<number>();
    for (const [v, i] of order) {
      allowed.add(i);
      mass += v;
      if (mass >= 0.5) break;
    }
    const s = new Sampler({ temperature: 1, top_p: 0.5, seed: 3 });
    for (let i = 0; i < 300; i++) assert.ok(allowed.has(s.sample(logits)));
  });

  test("-Infinity logits are never drawn", () => {
    const logits = Float32Array.from([0, -Infinity, 0, -Infinity]);
    const c = histogram({ temperature: 1 }, 2000, logits);
    assert.deepEqual([c[1], c[3]], [0, 0]);
  });
});

describe("sampler determinism and penalties", () => {
  test("same seed, same tokens; different seed, different tokens", () => {
    const run = (seed: number) => {
      const s = new Sampler({ temperature: 1.2, top_p: 0.95, top_k: 6, seed });
      return Array.from({ length: 64 }, () => s.sample(LOGITS));
    };
    assert.deepEqual(run(42), run(42));
    assert.notDeepEqual(run(42), run(43));
    assert.notDeepEqual(run(2 ** 40), run(2 ** 40 + 2 ** 33)); // high seed bits matter
  });

  test("greedy is argmax, lowest id on ties, and needs no seed", () => {
    assert.equal(new Sampler({ temperature: 0 }).sample(LOGITS), 0);
    assert.equal(new Sampler({ temperature: 0 }).sample(Float32Array.from([1, 3, 3, 2])), 1);
    assert.equal(new Sampler({ temperature: 5, top_k: 1 }).sample(Float32Array.from([1, 3, 4, 2])), 2);
  });

  test("repetition_penalty follows Hugging Face (divide positive, multiply negative, prompt included)", () => {
    // token 0 (logit 2.0, in the prompt) / 2 = 1.0 loses to token 1 (1.5)
    assert.equal(new Sampler({ temperature: 0, repetition_penalty: 2 }, [0]).sample(LOGITS), 1);
    // a negative logit gets more negative: -0.5 * 4 = -2 < -1
    const neg = Float32Array.from([-0.5, -1.0]);
    assert.equal(new Sampler({ temperature: 0, repetition_penalty: 4 }, [0]).sample(neg), 1);
    // generated tokens count too
    const s = new Sampler({ temperature: 0, repetition_penalty: 2 });
    assert.deepEqual([s.sample(LOGITS), s.sample(LOGITS), s.sample(LOGITS)], [0, 1, 0]);
  });

  test("frequency and presence penalties follow OpenAI (generated tokens only)", () => {
    const flat = Float32Array.from([1.0, 0.9, 0.0]);
    // prompt tokens are not penalized
    assert.equal(new Sampler({ temperature: 0, presence_penalty: 2 }, [0]).sample(flat), 0);
    // presence: once drawn, token 0 loses 0.5 -> 0.5 < 0.9
    const p = new Sampler({ temperature: 0, presence_penalty: 0.5 });
    assert.deepEqual([p.sample(flat), p.sample(flat), p.sample(flat)], [0, 1, 0]);
    // frequency: -0.3 per occurrence -> 0, 0 (0.7 < 0.9 -> 1), ...
    const f = new Sampler({ temperature: 0, frequency_penalty: 0.3 });
    assert.deepEqual([0, 1, 2, 3].map(() => f.sample(flat)), [0, 1, 0, 1]);
  });

  test("sample() leaves the caller's logits untouched", () => {
    const copy = LOGITS.slice();
    new Sampler({ temperature: 0.7, repetition_penalty: 1.3, frequency_penalty: 1, top_p: 0.9, seed: 1 }, [0, 1]).sample(LOGITS);
    assert.deepEqual(LOGITS, copy);
  });

  test("invalid parameters throw", () => {
    assert.throws(() => new Sampler({ temperature: -1 }), RangeError);
    assert.throws(() => new Sampler({ top_p: 0 }), RangeError);
    assert.throws(() => new Sampler({ repetition_penalty: 0 }), RangeError);
    assert.throws(() => new Sampler({ seed: 1.5 }), RangeError);
  });
});

describe("logits processors and logprobs", () => {
  /** Records what it saw; forbids `banned`; done after `doneAfter` accepted tokens. */
  class Recorder implements LogitsProcessor {
    seen: number[][] = [];
    accepted: number[] = [];
    constructor(private readonly banned: number[] = [], private readonly doneAfter = Infinity) {}
    process(logits: Float32Array): void {
      this.seen.push(Array.from(logits));
      for (const t of this.banned) logits[t] = -Infinity;
    }
    accept(token: number): void {
      this.accepted.push(token);
    }
    isDone(): boolean {
      return this.accepted.length >= this.doneAfter;
    }
  }

  test("processors run in order on a copy before the choice, and are told the token", () => {
    const first = new Recorder([0]);
    const second = new Recorder([1], 2);
    const s = new Sampler({ temperature: 0 }, [], [first, second]);
    const copy = LOGITS.slice();
    assert.equal(s.sample(LOGITS), 2); // 0 and 1 forbidden
    assert.deepEqual(LOGITS, copy);
    assert.deepEqual(first.seen[0], Array.from(LOGITS));
    assert.equal(second.seen[0]![0], -Infinity); // it runs after the first
    assert.equal(s.done, false);
    assert.equal(s.sample(LOGITS), 2);
    assert.deepEqual([first.accepted, second.accepted], [[2, 2], [2, 2]]);
    assert.equal(s.done, true);
    // sampling never picks a forbidden token
    const t = new Sampler({ temperature: 1.5, seed: 3 }, [], [new Recorder([0, 1, 2, 3, 4, 5])]);
    for (let i = 0; i < 200; i++) assert.ok([6, 7].includes(t.sample(LOGITS)));
  });

  test("logit_bias adds to the logits; bad maps are refused naming the problem", () => {
    const bias = parseLogitBias({ "7": 100, "0": -100 }, LOGITS.length)!;
    assert.equal(new Sampler({ temperature: 0 }, [], [new LogitBias(bias)]).sample(LOGITS), 7);
    assert.equal(parseLogitBias({}, 8), null);
    assert.equal(parseLogitBias(null, 8), null);
    assert.throws(() => parseLogitBias({ "8": 1 }, 8), /token id 8 is outside the vocabulary \(0\.\.7\)/);
    assert.throws(() => parseLogitBias({ "-1": 1 }, 8), /key "-1" is not a token id/);
    assert.throws(() => parseLogitBias({ "01": 1 }, 8), /key "01" is not a token id/);
    assert.throws(() => parseLogitBias({ "1": 101 }, 8), /logit_bias\["1"\] must be a number in -100\.\.100, got 101/);
    assert.throws(() => parseLogitBias({ "1": "5" }, 8), /must be a number/);
    assert.throws(() => parseLogitBias([1], 8), /must be an object/);
  });

  test("logprobs: the log-softmax after processing, before temperature; top ones best first", () => {
    const ban = new Recorder([0]);
    for (const temperature of [0, 0.5, 2]) {
      const s = new Sampler({ temperature, seed: 1 }, [], [new Recorder([0])]);
      const c = s.choose(LOGITS, 3);
      const p = softmax([-Infinity, ...Array.from(LOGITS.slice(1))]);
      assert.ok(Math.abs(c.logprob! - Math.log(p[c.token]!)) < 1e-9);
      assert.deepEqual(c.top!.map((t) => t.token), [1, 2, 3]);
      c.top!.forEach((t) => assert.ok(Math.abs(t.logprob - Math.log(p[t.token]!)) < 1e-9));
    }
    assert.deepEqual(new Sampler({ temperature: 0 }).choose(LOGITS, 0).top, []);
    assert.equal(new Sampler({ temperature: 0 }).choose(LOGITS).logprob, undefined);
    // more asked for than tokens allowed: only the allowed ones
    const all = new Sampler({ temperature: 0 }, [], [ban]).choose(LOGITS, 20);
    assert.deepEqual(all.top!.map((t) => t.token), [1, 2, 3, 4, 5, 6, 7]);
  });
});

/**
 * What a device's "topk" entry lists (docs/plan.md): the k largest logits, best first (ties to
 * the lowest id; NaN and -inf never), the softmax sum at 1 / invT over the whole vocabulary,
 * here exact times (1 + err) with |err| < TOP_SUM_MARGIN (the device's f32 error), and the count.
 */
function deviceTop(logits: Float32Array, k: number, invT: number, err: number): TopCandidates {
  const ids = [...logits.keys()].filter((i) => logits[i]! > -Infinity); // (NaN > -Infinity is false)
  ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
  const top = ids.slice(0, k);
  const max = logits[top[0] ?? 0]!;
  let z = 0;
  for (const i of ids) z += Math.exp((logits[i]! - max) * Math.fround(invT));
  return { ids: Int32Array.from(top), logits: Float32Array.from(top, (i) => logits[i]!), sum: Math.fround(z * (1 + err)), finite: ids.length, vocab: logits.length };
}

describe("sampling from a device's top candidates", () => {
  const K = 64;

  test("the same tokens as from the full logits, or a fallback; the PRNG only advances on a draw", () => {
    const rng = new Prng(99);
    const normal = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
    let decided = 0;
    let total = 0;
    const byMode: Record<string, number> = {};
    for (const [c, params] of ([
      { temperature: 1, top_k: 40 },
      { temperature: 0.7, top_k: 64, top_p: 0.9 },
      { temperature: 1.3, top_k: 2 },
      { temperature: 1, top_p: 0.9 },
      { temperature: 0.6, top_p: 0.95 },
      { temperature: 1.5, top_p: 0.5 },
      { temperature: 1, top_p: 0.8, top_k: 100000 }, // top_k past the vocabulary: top-p alone
    ] as SamplingParams[]).entries()) {
      const full = new Sampler({ ...params, seed: c });
      const dev = new Sampler({ ...params, seed: c });
      for (let step = 0; step < 60; step++) {
        const vocab = 3000;
        const spread = [1, 3, 6][step % 3]!;
        const logits = Float32Array.from({ length: vocab }, () => normal() * spread);
        for (let i = 0; i < vocab; i += 7) logits[i] = Math.round(logits[i]!); // ties
        logits[11] = NaN;
        logits[12] = -Infinity;
        if (step % 5 === 0) logits[100 + step] = logits[200 + step] = Math.max(...logits.filter((v) => v === v)) + 0.5; // a tie at the top
        const want = full.choose(logits).token;
        const ask = dev.topCandidates(K, vocab);
        assert.ok(ask, JSON.stringify(params));
        const err = (2 * rng.next() - 1) * TOP_SUM_MARGIN * 0.9;
        const got = dev.chooseFromTop(deviceTop(logits, K, ask.invTemperature, err));
        total++;
        const mode = params.top_k && params.top_k < vocab ? "top_k" : "top_p";
        if (got) {
          decided++;
          byMode[mode] = (byMode[mode] ?? 0) + 1;
          assert.equal(got.token, want, `${JSON.stringify(params)} step ${step}`);
        } else {
          assert.equal(mode, "top_p", "top_k <= K is always decided");
          assert.equal(dev.choose(logits).token, want, `${JSON.stringify(params)} step ${step}: fallback`);
        }
      }
    }
    assert.equal(byMode.top_k, 180);
    assert.ok((byMode.top_p ?? 0) > 60, `top-p decided from the candidates ${byMode.top_p} times of 240`);
    assert.ok(decided < total, "some top-p steps fall back");
  });

  test("only requests the candidates can answer ask for them", () => {
    assert.deepEqual(new Sampler({ temperature: 0.5, top_k: 64 }).topCandidates(64, 1000), { invTemperature: 2 });
    assert.ok(new Sampler({ temperature: 0.5, top_p: 0.9 }).topCandidates(64, 1000));
    assert.equal(new Sampler({ temperature: 0.5, top_k: 65 }).topCandidates(64, 1000), null); // more than listed
    assert.equal(new Sampler({ temperature: 1 }).topCandidates(64, 1000), null); // the whole distribution
    assert.equal(new Sampler({ temperature: 1e-7, top_p: 0.9 }).topCandidates(64, 1000), null); // 1 / T past f32's comfort
    assert.ok(new Sampler({ temperature: 1e-7, top_k: 5 }).topCandidates(64, 1000)); // (top_k reads no sum)
    assert.equal(new Sampler({ temperature: 0 }).topCandidates(64, 1000), null); // greedy: argmax
    assert.equal(new Sampler({ temperature: 1, top_k: 1 }).topCandidates(64, 1000), null);
    assert.equal(new Sampler({ temperature: 1, top_k: 5, frequency_penalty: 0.5 }).topCandidates(64, 1000), null);
    assert.equal(new Sampler({ temperature: 1, top_p: 0.9, repetition_penalty: 1.1 }).topCandidates(64, 1000), null);
    assert.equal(new Sampler({ temperature: 1, top_k: 5 }, [], [new LogitBias(parseLogitBias({ "1": 1 }, 1000)!)]).topCandidates(64, 1000), null);
  });
});
