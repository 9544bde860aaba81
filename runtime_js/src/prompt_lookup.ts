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
}

/** The defaults; see the README's speculative decoding table for the measurements behind them. */
export const DEFAULT_SPECULATIVE: Required<SpeculativeOptions> = { maxDraft: 8, maxNgram: 3, minNgram: 2 };

/** Options with defaults filled in; a RangeError names a bad one. */
export function speculativeOptions(opts: SpeculativeOptions = {}): Required<SpeculativeOptions> {
  const o = { ...DEFAULT_SPECULATIVE, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) };
  for (const key of ["maxDraft", "maxNgram", "minNgram"] as const) {
    if (!Number.isInteger(o[key]) || o[key] < 1) throw new RangeError(`speculative.${key} must be a positive integer, got ${o[key]}`);
  }
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
