/**
 * Next-token selection from a logits vector.
 *
 * Order of operations:
 *   0. the request's LogitsProcessors, in order (logit_bias, grammar masks), on a copy;
 *   1. repetition_penalty (Hugging Face semantics): for every token seen in the prompt
 *      or the output, a positive logit is divided by the penalty, a negative one
 *      multiplied by it;
 *   2. frequency_penalty / presence_penalty (OpenAI semantics), over the generated
 *      tokens only: logit -= count * frequency_penalty + (count > 0) * presence_penalty;
 *   3. temperature 0 (or top_k 1): argmax, lowest id on ties (as torch.argmax);
 *      else logits / temperature, top-k, softmax, top-p (the smallest set of most
 *      likely tokens whose probability reaches top_p), then one draw from a seeded
 *      PRNG. The same seed and logits always give the same token sequence.
 *
 * Logprobs (when asked for) are the log-softmax of the logits after steps 0-2 and
 * before step 3: the model's distribution as the request edited it (logit_bias,
 * penalties, grammar masks), not scaled by temperature nor cut by top_k/top_p, as
 * OpenAI reports them (its logprobs do not change with temperature).
 */
import type { LogitsProcessor } from "./logits_processor.js";

export interface SamplingParams {
  /** 0: greedy (default 1) */
  temperature?: number;
  /** 0: off */
  top_k?: number;
  /** 1: off */
  top_p?: number;
  /** 1: off */
  repetition_penalty?: number;
  /** 0: off; -2..2 in OpenAI's API */
  frequency_penalty?: number;
  /** 0: off; -2..2 in OpenAI's API */
  presence_penalty?: number;
  /** PRNG seed; random when absent */
  seed?: number;
}

/** xoshiro128** (Blackman & Vigna), seeded through splitmix32. */
export class Prng {
  // the four state words, as int32 (bitwise operators work on 32 bits)
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    // Use all 53 bits of an integer seed: low word and high word both feed splitmix.
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x9e3779b9);
    const splitmix = () => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return z ^ (z >>> 16);
    };
    this.s0 = splitmix();
    this.s1 = splitmix();
    this.s2 = splitmix();
    this.s3 = splitmix();
    if (!(this.s0 | this.s1 | this.s2 | this.s3)) this.s0 = 1;
  }

  nextUint32(): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r;
  }

  /** uniform in [0, 1) with 53 random bits */
  next(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

export function randomSeed(): number {
  const [hi = 0, lo = 0] = globalThis.crypto.getRandomValues(new Uint32Array(2));
  return (hi & 0x1fffff) * 2 ** 32 + lo;
}

/** A token and its log probability. */
export interface TokenProb {
  token: number;
  logprob: number;
}

/** The token chosen, and (when asked for) its logprob and the most likely alternatives. */
export interface Choice {
  token: number;
  /** set when `choose` was given a number of top logprobs (0 included) */
  logprob?: number;
  /** the most likely tokens, best first (ties: lower id first); tokens a processor forbade are never listed */
  top?: TokenProb[];
}

/**
 * The largest logits of a step as a device lists them (the plan's "topk" entry), with the
 * softmax statistics of the whole vocabulary: what {@link Sampler.chooseFromTop} draws from.
 */
export interface TopCandidates {
  /** token ids, best first: larger logit, then lower id; never a NaN or -inf logit */
  ids: Int32Array;
  /** their logits, as the logits buffer holds them */
  logits: Float32Array;
  /**
   * Σ exp((l - max) * invTemperature) over every logit that is neither NaN nor -inf (max: the
   * largest), as the device computed it: within {@link TOP_SUM_MARGIN} of the exact sum
   */
  sum: number;
  /** how many logits are neither NaN nor -inf */
  finite: number;
  /** the logits' length (the vocabulary) */
  vocab: number;
}

/**
 * Relative error allowed for {@link TopCandidates.sum}: a top-p cut closer than this to the
 * nucleus boundary reads the logits instead. The device's f32 sum over a 262,144-token
 * vocabulary is within about 1e-5 of the exact one when its exp meets WGSL's accuracy
 * (3 + 2|x| ULP; docs/plan.md, "The optional topk entry"); measured: 2e-7.
 */
export const TOP_SUM_MARGIN = 2 ** -10;
/** top-p from candidates needs the largest logit within this (the kernels clamp beyond 1e30) */
const TOP_VALUE_LIMIT = 1e29;
/** ... and 1 / temperature within [1 / MAX_INV_TEMPERATURE, MAX_INV_TEMPERATURE] (no f32 overflow) */
const MAX_INV_TEMPERATURE = 2 ** 20;

export class Sampler {
  readonly seed: number;
  private readonly rng: Prng;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly repetition: number;
  private readonly frequency: number;
  private readonly presence: number;
  /** tokens seen in prompt or output (for repetition_penalty) */
  private readonly seen = new Set<number>();
  /** counts of generated tokens (for frequency/presence penalties) */
  private readonly counts = new Map<number, number>();
  private scratch = new Float64Array(0);
  private processed = new Float32Array(0);
  /** the processed logits, kept for logprobs while draw() overwrites the scratch */
  private logprobCopy = new Float64Array(0);
  private order = new Int32Array(0);

  /** `processors` run before every choice, in order, and are told each chosen token. */
  constructor(
    params: SamplingParams = {},
    promptTokens: ArrayLike<number> = [],
    private readonly processors: readonly LogitsProcessor[] = [],
  ) {
    this.temperature = params.temperature ?? 1;
    this.topK = Math.max(0, Math.floor(params.top_k ?? 0));
    this.topP = params.top_p ?? 1;
    this.repetition = params.repetition_penalty ?? 1;
    this.frequency = params.frequency_penalty ?? 0;
    this.presence = params.presence_penalty ?? 0;
    if (!(this.temperature >= 0)) throw new RangeError(`temperature must be >= 0, got ${params.temperature}`);
    if (!(this.topP > 0 && this.topP <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${params.top_p}`);
    if (!(this.repetition > 0)) throw new RangeError(`repetition_penalty must be > 0, got ${params.repetition_penalty}`);
    for (const [name, v] of [["frequency_penalty", this.frequency], ["presence_penalty", this.presence]] as const) {
      if (!Number.isFinite(v)) throw new RangeError(`${name} must be a number, got ${v}`);
    }
    this.seed = params.seed ?? randomSeed();
    if (!Number.isSafeInteger(this.seed)) throw new RangeError(`seed must be an integer, got ${params.seed}`);
    this.rng = new Prng(this.seed);
    for (let i = 0; i < promptTokens.length; i++) this.seen.add(promptTokens[i]!); // i < length
  }

  get greedy(): boolean {
    return this.temperature === 0 || this.topK === 1;
  }

  /** Picks the next token and records it as generated. `logits` is not modified. */
  sample(logits: Float32Array): number {
    return this.choose(logits).token;
  }

  /**
   * Picks the next token, records it as generated and tells the processors. With
   * `topLogprobs` (0..n) it also returns the token's logprob and the `topLogprobs` most
   * likely tokens (see the class comment for which distribution). `logits` is not modified.
   */
  choose(logits: Float32Array, topLogprobs?: number): Choice {
    const x = this.penalized(this.process(logits));
    let probs: ReturnType<typeof logSoftmaxOf> | null = null;
    if (topLogprobs !== undefined) {
      if (this.logprobCopy.length !== x.length) this.logprobCopy = new Float64Array(x.length);
      this.logprobCopy.set(x);
      probs = logSoftmaxOf(this.logprobCopy);
    }
    const token = this.greedy ? argmax(x) : this.draw(x); // (draw overwrites x)
    const choice: Choice = { token };
    if (probs) {
      choice.logprob = probs.logprob(token);
      choice.top = probs.top(topLogprobs!);
    }
    this.seen.add(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
    for (const p of this.processors) p.accept(token);
    return choice;
  }

  /**
   * True when the choice is the plain argmax of the logits: greedy, no processors (logit
   * bias, grammar), no penalties. Then a backend may pick the token itself (`accept`).
   */
  get plainArgmax(): boolean {
    return this.greedy && this.processors.length === 0 && this.repetition === 1 && this.frequency === 0 && this.presence === 0;
  }

  /** Records `token`, chosen elsewhere as `choose` would have (plainArgmax), as generated. */
  accept(token: number): Choice {
    this.seen.add(token);
    this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
    for (const p of this.processors) p.accept(token);
    return { token };
  }

  /**
   * Whether {@link chooseFromTop} may answer this request from the `k` largest of `vocab`
   * logits, as `choose` would from all of them (the same token for the same PRNG state):
   * sampling (not greedy) with no processors and no penalties, and either top_k in 2..k
   * (below the vocabulary), or top_p < 1 without a top_k (whose nucleus may lie outside the
   * candidates: then chooseFromTop says so). Resolves to the 1 / temperature the device
   * computes TopCandidates.sum at, or null: read the logits. (Logprobs need the logits too:
   * the caller checks those.)
   */
  topCandidates(k: number, vocab: number): { invTemperature: number } | null {
    if (this.greedy || this.processors.length || this.repetition !== 1 || this.frequency !== 0 || this.presence !== 0) return null;
    const invT = 1 / this.temperature;
    // (top_k reads no sum: any temperature; top_p needs one the device's f32 sum can take)
    if (this.topK > 0 && this.topK < vocab) return this.topK <= k ? { invTemperature: Math.min(invT, MAX_INV_TEMPERATURE) } : null;
    return this.topP < 1 && invT <= MAX_INV_TEMPERATURE && invT >= 1 / MAX_INV_TEMPERATURE ? { invTemperature: invT } : null;
  }

  /**
   * The token `choose` would pick from the full logits, from a device's top candidates
   * (see {@link topCandidates}); recorded as generated. Null, with nothing drawn or
   * recorded, when the candidates cannot decide it (a top-p nucleus that is not surely
   * inside them): then call `choose` with the logits.
   */
  chooseFromTop(top: TopCandidates): Choice | null {
    const token = this.drawFromTop(top);
    return token === null ? null : this.accept(token);
  }

  /** True when a processor allows nothing but the end of generation (a completed grammar). */
  get done(): boolean {
    return this.processors.some((p) => p.isDone?.() ?? false);
  }

  private process(logits: Float32Array): Float32Array {
    if (!this.processors.length) return logits;
    if (this.processed.length !== logits.length) this.processed = new Float32Array(logits.length);
    this.processed.set(logits);
    for (const p of this.processors) p.process(this.processed);
    return this.processed;
  }

  private penalized(logits: Float32Array): Float64Array {
    if (this.scratch.length !== logits.length) this.scratch = new Float64Array(logits.length);
    const x = this.scratch;
    x.set(logits);
    // (a token id outside the logits is left alone)
    if (this.repetition !== 1) {
      for (const t of this.seen) {
        const v = x[t];
        if (v !== undefined) x[t] = v < 0 ? v * this.repetition : v / this.repetition;
      }
    }
    if (this.frequency !== 0 || this.presence !== 0) {
      for (const [t, c] of this.counts) {
        const v = x[t];
        if (v !== undefined) x[t] = v - (c * this.frequency + this.presence);
      }
    }
    return x;
  }

  private draw(x: Float64Array): number {
    const n = x.length;
    // Candidates: the top-k ids, or every id with a finite logit.
    let cand: Int32Array;
    if (this.topK > 0 && this.topK < n) {
      cand = topK(x, this.topK);
    } else {
      if (this.order.length !== n) this.order = new Int32Array(n);
      let m = 0;
      for (let i = 0; i < n; i++) if (x[i]! > -Infinity) this.order[m++] = i; // i < n = x.length
      cand = this.order.subarray(0, m);
    }
    if (cand.length === 0) return argmax(x);
    return this.drawFrom(x, cand);
  }

  /**
   * One draw among the candidates `cand` (ids of x, at least one): temperature, top-p, then
   * the PRNG. The one sampling arithmetic, for the full logits and for a device's top
   * candidates alike. Overwrites x[cand] with their weights.
   */
  private drawFrom(x: Float64Array, cand: Int32Array): number {
    const z = weigh(x, cand, 1 / this.temperature);
    const kept = this.topP < 1 ? nucleus(x, cand, z, this.topP) : { ids: cand, mass: z };
    return pick(x, kept.ids, kept.mass, this.rng.next());
  }

  /**
   * draw() of the full logits, from the device's top candidates only; null when they cannot
   * decide it. x holds the candidates' logits at their ids (nothing else of x is read).
   *
   * top_k (2..K): draw() takes the top_k largest logits, in this order: the first top_k
   * candidates, the same ids in the same order, so drawFrom computes the same weights, sum,
   * nucleus and draw.
   *
   * top_p alone: draw() weighs every finite logit, sums the weights in id order (z), sorts
   * those above a floor by weight and keeps the shortest prefix whose mass reaches top_p z.
   * The weights of the candidates are the same numbers (the same max: the largest logit);
   * z is known only within TOP_SUM_MARGIN of the device's sum: [zLo, zHi]. The prefix kept
   * is the same one when, over the candidates sorted as draw() sorts, the mass reaches
   * top_p zHi at some n while it was below top_p zLo before it (so the cut is at n for every
   * z in between), the n-th weight is above draw()'s floor at zHi (so the floor keeps the
   * prefix), and, if logits outside the candidates exist, the n-th weight is above the
   * smallest candidate's (so none of them sorts into the prefix). Then the draw is the same.
   */
  private drawFromTop(top: TopCandidates): number | null {
    const { ids, vocab } = top;
    if (ids.length === 0 || !(Math.abs(top.logits[0]!) <= TOP_VALUE_LIMIT)) return null;
    if (this.scratch.length !== vocab) this.scratch = new Float64Array(vocab);
    const x = this.scratch;
    for (let j = 0; j < ids.length; j++) x[ids[j]!] = top.logits[j]!; // ids index the vocabulary
    if (this.topK > 0 && this.topK < vocab) {
      if (ids.length < this.topK && ids.length < top.finite) return null; // (fewer listed than asked)
      return this.drawFrom(x, ids.subarray(0, this.topK));
    }
    const invT = 1 / this.temperature;
    if (!(this.topP < 1) || !(invT <= MAX_INV_TEMPERATURE && invT >= 1 / MAX_INV_TEMPERATURE)) return null;
    if (!(top.sum > 0 && top.sum < Infinity) || top.finite < ids.length) return null;
    weigh(x, ids, invT);
    const sorted = byWeight(x, ids);
    const zHi = top.sum * (1 + TOP_SUM_MARGIN);
    const zLo = top.sum * (1 - TOP_SUM_MARGIN);
    const hi = this.topP * zHi;
    const cut = accumulate(x, sorted, hi);
    if (!(cut.mass >= hi) || !(cut.before < this.topP * zLo)) return null;
    const last = x[sorted[cut.n - 1]!]!; // cut.n >= 1: the mass reached hi > 0
    if (!(last >= ((1 - this.topP) * zHi) / top.finite)) return null;
    if (ids.length < top.finite && !(last > x[sorted[sorted.length - 1]!]! * (1 + 2 ** -40))) return null;
    return pick(x, sorted.subarray(0, cut.n), cut.mass, this.rng.next());
  }
}

/** Weights exp((x - max) * invT) of the candidates, in place; returns their sum, added in cand order. */
function weigh(x: Float64Array, cand: Int32Array, invT: number): number {
  // (candidates are ids of x, so x[i] below is in range)
  let max = -Infinity;
  for (const i of cand) {
    const v = x[i]!;
    if (v > max) max = v;
  }
  let z = 0;
  for (const i of cand) {
    const p = Math.exp((x[i]! - max) * invT);
    x[i] = p;
    z += p;
  }
  return z;
}

/** One draw from weights p[ids] of total `mass`, with u uniform in [0, 1). */
function pick(p: Float64Array, ids: Int32Array, mass: number, u: number): number {
  let left = u * mass;
  for (const i of ids) {
    left -= p[i]!;
    if (left < 0) return i;
  }
  return ids[ids.length - 1] ?? argmax(p); // left == mass up to rounding: the last candidate
}

/**
 * The log-softmax of `copy` (processed logits that nothing else writes), read lazily.
 * Only finite logits count; a -Infinity logit has logprob -Infinity.
 */
function logSoftmaxOf(copy: Float64Array): { logprob(id: number): number; top(k: number): TokenProb[] } {
  const n = copy.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (copy[i]! > max) max = copy[i]!; // i < n
  let z = 0;
  if (max > -Infinity) for (let i = 0; i < n; i++) z += Math.exp(copy[i]! - max);
  const lse = max + Math.log(z);
  const logprob = (id: number) => {
    const v = copy[id] ?? -Infinity;
    return v === -Infinity ? -Infinity : v - lse;
  };
  const top = (k: number): TokenProb[] => {
    if (k <= 0) return [];
    const ids = k < copy.length ? topK(copy, k) : allSorted(copy);
    return Array.from(ids, (token) => ({ token, logprob: logprob(token) }));
  };
  return { logprob, top };
}

/** Every id with a finite value, best first (ties: lower id first). */
function allSorted(x: Float64Array): Int32Array {
  const ids: number[] = [];
  x.forEach((v, i) => v > -Infinity && ids.push(i));
  return Int32Array.from(ids.sort((a, b) => x[b]! - x[a]! || a - b)); // ids index x
}

function argmax(x: Float64Array): number {
  let best = 0;
  let top = x[0] ?? -Infinity;
  for (let i = 1; i < x.length; i++) {
    const v = x[i]!; // i < length
    if (v > top) {
      best = i;
      top = v;
    }
  }
  return best;
}

/** The k ids with the largest values (ties: lower id first; NaN and -inf never listed), by a min-heap. */
function topK(x: Float64Array, k: number): Int32Array {
  const heap = new Int32Array(k);
  // Heap slots are below k (0 < k < x.length) and hold ids of x: both accessors stay in range.
  const at = (slot: number) => heap[slot]!;
  const value = (id: number) => {
    const v = x[id]!;
    return v === v ? v : -Infinity; // NaN ranks with -inf: never a candidate
  };
  // "less" = worse candidate: smaller value, or equal value and larger id.
  const less = (a: number, b: number) => value(a) < value(b) || (value(a) === value(b) && a > b);
  const siftDown = (i: number) => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < k && less(at(l), at(m))) m = l;
      if (r < k && less(at(r), at(m))) m = r;
      if (m === i) return;
      const t = at(i);
      heap[i] = at(m);
      heap[m] = t;
      i = m;
    }
  };
  for (let i = 0; i < k; i++) heap[i] = i;
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(i);
  for (let i = k; i < x.length; i++) {
    if (less(at(0), i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => value(b) - value(a) || a - b).filter((i) => value(i) > -Infinity);
}

/**
 * Top-p over unnormalized probabilities `p[ids]` with total `z`: the most likely ids
 * until their mass reaches top_p. Only ids with p >= (1 - top_p) * z / n need sorting:
 * the others weigh less than (1 - top_p) * z together, so the cut lies before them.
 */
function nucleus(p: Float64Array, ids: Int32Array, z: number, topP: number): { ids: Int32Array; mass: number } {
  const floor = ((1 - topP) * z) / ids.length;
  const big = byWeight(p, ids.filter((i) => p[i]! >= floor)); // ids index p
  const cut = accumulate(p, big, topP * z);
  return { ids: big.subarray(0, cut.n), mass: cut.mass };
}

/** A copy of `ids` sorted by weight p, largest first (ties: lower id first). */
function byWeight(p: Float64Array, ids: Int32Array): Int32Array {
  return Int32Array.from(ids).sort((a, b) => p[b]! - p[a]! || a - b); // ids index p
}

/** The shortest prefix of `ids` whose mass (added in order) reaches `target` (all of them if none): its length, mass and the mass before its last id. */
function accumulate(p: Float64Array, ids: Int32Array, target: number): { n: number; mass: number; before: number } {
  let mass = 0;
  let before = 0;
  let n = 0;
  for (const id of ids) {
    before = mass;
    mass += p[id]!; // ids index p
    n++;
    if (mass >= target) break;
  }
  return { n, mass, before };
}
