/**
 * OpenAI's `logit_bias`: a map from token id (as a string) to a number in -100..100
 * that is added to that token's logit before sampling (and before logprobs are taken).
 * As in OpenAI's API it is an addition, not a mask: -100 makes a token practically
 * impossible and 100 practically certain on models whose logits span less than that.
 */
import type { LogitsProcessor } from "./logits_processor.js";

export const LOGIT_BIAS_LIMIT = 100;

/** Checks a request's logit_bias against the vocabulary; null/undefined/{} -> null. */
export function parseLogitBias(raw: unknown, vocabSize: number): Map<number, number> | null {
  if (raw == null) return null;
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new TypeError('logit_bias must be an object mapping token ids (as strings) to numbers, e.g. {"50256": -100}');
  }
  const bias = new Map<number, number>();
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(key)) {
      throw new TypeError(`logit_bias: key ${JSON.stringify(key.slice(0, 40))} is not a token id; keys are token ids written as decimal strings`);
    }
    const id = Number(key);
    if (id >= vocabSize) throw new RangeError(`logit_bias: token id ${id} is outside the vocabulary (0..${vocabSize - 1})`);
    if (typeof value !== "number" || !Number.isFinite(value) || Math.abs(value) > LOGIT_BIAS_LIMIT) {
      throw new RangeError(`logit_bias["${key}"] must be a number in -${LOGIT_BIAS_LIMIT}..${LOGIT_BIAS_LIMIT}, got ${String(value).slice(0, 40)}`);
    }
    if (value !== 0) bias.set(id, value);
  }
  return bias.size ? bias : null;
}

/** Adds the bias to the logits of its tokens. */
export class LogitBias implements LogitsProcessor {
  constructor(private readonly bias: ReadonlyMap<number, number>) {}

  process(logits: Float32Array): void {
    for (const [id, b] of this.bias) if (id < logits.length) logits[id] = logits[id]! + b; // id < length
  }

  accept(): void {}
}
