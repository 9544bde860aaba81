/**
 * Prompt-lookup drafting for speculative decoding: the tokens that will come next are
 * often a copy of tokens already seen (a corrected paragraph repeats the paragraph, an
 * edited list or program repeats the original). The draft is what followed the most
 * recent earlier occurrence of the sequence's longest suffix n-gram (n from maxNgram
 * down to minNgram). The session has the model check a draft in one batched step.
 *
 * Each n-gram size has a map from the n-gram to the end of its most recent occurrence
 * that some token follows; a pushed token adds one entry per size, so drafting costs
 * O(maxNgram) map lookups per token whatever the prompt's length.
 */

export interface SpeculativeOptions {
  /** most draft tokens checked per step (also bounded by the backend's verifyMaxTokens) */
  maxDraft?: number;
  /** longest suffix n-gram looked up */
  maxNgram?: number;
  /** shortest suffix n-gram looked up (1: a single token may start a draft) */
  minNgram?: number;
  /**
   * true (default): each draft is cut to the length expected to give the most tokens per
   * millisecond, from the acceptance so far and the measured cost of decode and verify
   * calls ({@link DraftBudget}); false: every draft is as long as maxDraft allows
   */
  adaptive?: boolean;
}

/** The defaults; see the README's speculative decoding table for the measurements behind them. */
export const DEFAULT_SPECULATIVE: Required<SpeculativeOptions> = { maxDraft: 8, maxNgram: 3, minNgram: 2, adaptive: true };

/** Options with defaults filled in; a RangeError names a bad one. */
export function speculativeOptions(opts: SpeculativeOptions = {}): Required<SpeculativeOptions> {
  const o = { ...DEFAULT_SPECULATIVE, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) };
  for (const key of ["maxDraft", "maxNgram", "minNgram"] as const) {
    if (!Number.isInteger(o[key]) || o[key] < 1) throw new RangeError(`speculative.${key} must be a positive integer, got ${o[key]}`);
  }
  if (typeof o.adaptive !== "boolean") throw new RangeError(`speculative.adaptive must be true or false, got ${o.adaptive}`);
  if (o.minNgram > o.maxNgram) throw new RangeError(`speculative.minNgram (${o.minNgram}) must not exceed maxNgram (${o.maxNgram})`);
  return o;
}

export class PromptLookup {
  private readonly tokens: number[] = [];
  /** per n (index n - minNgram): n-gram key -> end of its most recent occurrence followed by a token */
  private readonly index: Map<string, number>[];
  private readonly opts: Required<SpeculativeOptions>;

  constructor(tokens: ArrayLike<number> = [], opts: SpeculativeOptions = {}) {
    this.opts = speculativeOptions(opts);
    this.index = Array.from({ length: this.opts.maxNgram - this.opts.minNgram + 1 }, () => new Map());
    for (let i = 0; i < tokens.length; i++) this.push(tokens[i]!); // i < length
  }

  get length(): number {
    return this.tokens.length;
  }

  /** Appends a token: the n-grams ending just before it now have a continuation. */
  push(token: number): void {
    const end = this.tokens.length;
    for (let n = this.opts.minNgram; n <= this.opts.maxNgram && n <= end; n++) this.index[n - this.opts.minNgram]!.set(this.key(end - n, end), end);
    this.tokens.push(token);
  }

  /**
   * Up to `max` (default maxDraft) tokens that may come next: those that followed the
   * most recent earlier occurrence of the longest suffix n-gram that occurred before;
   * empty when none did.
   */
  draft(max = this.opts.maxDraft): number[] {
    const len = this.tokens.length;
    if (max <= 0) return [];
    for (let n = Math.min(this.opts.maxNgram, len); n >= this.opts.minNgram; n--) {
      const at = this.index[n - this.opts.minNgram]!.get(this.key(len - n, len));
      if (at !== undefined) return this.tokens.slice(at, Math.min(at + max, len));
    }
    return [];
  }

  private key(from: number, to: number): string {
    let k = String(this.tokens[from]);
    for (let i = from + 1; i < to; i++) k += `,${this.tokens[i]}`;
    return k;
  }
}

/**
 * How long a draft to verify: the length k (0 = a plain decode step) with the most
 * expected tokens per millisecond. A verify of k draft tokens yields
 * E(k) = 1 + p + ... + p^k tokens when each draft token is accepted with probability p
 * once the ones before it were (p: accepted / tested so far in this answer, from a prior
 * of 1/2), and costs C(k): a moving average of the verify calls of k + 1 tokens measured
 * on this backend, C(0) that of decode steps; an unmeasured length is interpolated
 * between its measured neighbours (past the longest one measured: extended along the
 * last slope, or taken as a decode step's cost while nothing was, so that it gets
 * measured). Where a verified token costs about what a decode step does (a CPU backend
 * whose batched step is not much cheaper per token) it drafts little or nothing; where it
 * is nearly free (a GPU's batched step), long drafts. After PROBE_AFTER declined drafts
 * in a row it verifies a one-token draft anyway, so that the acceptance is measured again
 * where the text turned into a copy.
 */
export class DraftBudget {
  static readonly PROBE_AFTER = 16;
  private accepted = 1;
  private tested = 2;
  private declined = 0;
  /** ms per call by draft length (index 0: a decode step); NaN: not measured */
  private readonly ms: number[] = [NaN];

  /** Forgets the acceptance (a new choice), keeping the measured costs. */
  restart(): void {
    this.accepted = 1;
    this.tested = 2;
    this.declined = 0;
  }

  /** A decode step took `ms`. */
  decoded(ms: number): void {
    this.record(0, ms);
  }

  /** A verify of a `drafted`-token draft took `ms`, and the first `accepted` draft tokens were sampled. */
  verified(drafted: number, accepted: number, ms: number): void {
    this.accepted += accepted;
    this.tested += accepted + (accepted < drafted ? 1 : 0);
    this.record(drafted, ms);
  }

  /** The acceptance estimate (per draft token, given the ones before it were accepted). */
  get acceptance(): number {
    return this.accepted / this.tested;
  }

  /** The expected cost of a call with a `k`-token draft (see the class comment). */
  cost(k: number): number {
    const at = (i: number) => this.ms[i] ?? NaN;
    if (!Number.isNaN(at(k))) return at(k);
    let lo = k - 1;
    while (lo >= 0 && Number.isNaN(at(lo))) lo--;
    let hi = k + 1;
    while (hi < this.ms.length && Number.isNaN(at(hi))) hi++;
    const loMs = lo >= 0 ? at(lo) : 0;
    if (hi < this.ms.length) return loMs + ((at(hi) - loMs) * (k - lo)) / (hi - lo);
    let before = lo - 1;
    while (before >= 0 && Number.isNaN(at(before))) before--;
    const slope = before >= 0 ? Math.max(0, (loMs - at(before)) / (lo - before)) : 0;
    return loMs + slope * (k - lo);
  }

  /** The draft length to verify of `available` draft tokens (0: decode instead). */
  length(available: number): number {
    if (available <= 0) return 0;
    const p = this.acceptance;
    let best = 0;
    let bestRate = 1 / Math.max(this.cost(0), 1e-6);
    let tokens = 1;
    let pk = 1;
    for (let k = 1; k <= available; k++) {
      pk *= p;
      tokens += pk;
      const rate = tokens / Math.max(this.cost(k), 1e-6);
      if (rate > bestRate) [best, bestRate] = [k, rate];
    }
    if (best === 0 && ++this.declined >= DraftBudget.PROBE_AFTER) best = 1;
    if (best > 0) this.declined = 0;
    return best;
  }

  private record(k: number, ms: number): void {
    while (this.ms.length <= k) this.ms.push(NaN);
    const old = this.ms[k]!; // (k < length)
    this.ms[k] = Number.isNaN(old) ? ms : 0.7 * old + 0.3 * ms;
  }
}
