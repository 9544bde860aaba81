/**
 * The generation loop over a Backend: prefill, sample, decode, detokenize, stop.
 *
 * The session remembers which tokens the backend's KV cache holds, so a request whose
 * prompt extends the previous conversation only prefills the new tokens. A prompt that
 * leaves the cached sequence earlier than the backend's kvRewindLimit allows (a
 * sliding-window layer's ring buffer has overwritten what it would need) is prefilled
 * from the start.
 *
 * Context window: a prompt must leave room for at least one generated token
 * (otherwise the request is rejected); generation ends with finish_reason "length"
 * when the cache is full, exactly as when max_tokens is reached. Nothing is evicted
 * or shifted.
 */
import type { Backend } from "./backend.js";
import type { Manifest } from "./manifest.js";
import { type SamplingParams, Sampler } from "./sampler.js";
import { StopMatcher } from "./stop.js";
import type { BundleTokenizer } from "./tokenizer.js";

export interface GenerationParams extends SamplingParams {
  /** most tokens to generate (default: the bundle's max_new_tokens) */
  max_tokens?: number;
  stop?: string | string[] | null;
}

export type FinishReason = "stop" | "length" | "abort";

export interface Timings {
  prefill_ms: number;
  /** tokens actually prefilled (a reused prefix is not counted) */
  prefill_tokens: number;
  decode_ms: number;
  decode_tokens: number;
}

export interface GenerationResult {
  finishReason: FinishReason;
  promptTokens: number;
  /** sampled tokens, including a final EOS */
  completionTokens: number;
  seed: number;
  timings: Timings;
}

export class ContextWindowError extends Error {
  override name = "ContextWindowError";
}

export class Session {
  /** the tokens whose keys and values the backend holds, in order */
  private cached: number[] = [];
  /** the backend call in flight, if any */
  private inflight: Promise<unknown> | null = null;

  constructor(
    private readonly backend: Backend,
    private readonly tokenizer: BundleTokenizer,
    readonly contextWindow: number,
    private readonly defaults: Manifest["generation"],
  ) {}

  /** Sampling parameters: the request's, else the bundle's generation defaults. */
  resolve(params: GenerationParams): Required<Pick<GenerationParams, "max_tokens">> & GenerationParams {
    const d = this.defaults;
    return {
      ...params,
      temperature: params.temperature ?? d.temperature,
      top_p: params.top_p ?? d.top_p,
      top_k: params.top_k ?? d.top_k,
      repetition_penalty: params.repetition_penalty ?? d.repetition_penalty,
      max_tokens: params.max_tokens ?? d.max_new_tokens,
    };
  }

  /**
   * Generates from `prompt`; yields text deltas (complete characters, stop strings
   * held back and removed) and returns how it ended. `interrupted` is polled before
   * every step. Stopping the iteration early is safe.
   */
  async *run(prompt: number[], params: GenerationParams, interrupted: () => boolean): AsyncGenerator<string, GenerationResult> {
    const p = this.resolve(params);
    if (prompt.length === 0) throw new Error("the prompt is empty");
    if (prompt.length >= this.contextWindow) {
      throw new ContextWindowError(
        `the prompt has ${prompt.length} tokens; this bundle's context window is ${this.contextWindow} ` +
          "and must leave room for at least one generated token",
      );
    }
    if (!Number.isInteger(p.max_tokens) || p.max_tokens < 0) throw new RangeError(`max_tokens must be a non-negative integer, got ${p.max_tokens}`);
    const budget = Math.min(p.max_tokens, this.contextWindow - prompt.length);
    const sampler = new Sampler(p, prompt);
    const stops = typeof p.stop === "string" ? [p.stop] : (p.stop ?? []);
    const stopper = new StopMatcher(stops);
    const text = this.tokenizer.streamDecoder();
    const eos = this.tokenizer.eosTokenIds;
    const timings: Timings = { prefill_ms: 0, prefill_tokens: 0, decode_ms: 0, decode_tokens: 0 };
    const result = (finishReason: FinishReason, completionTokens: number): GenerationResult => ({
      finishReason,
      promptTokens: prompt.length,
      completionTokens,
      seed: sampler.seed,
      timings,
    });

    if (budget === 0) return result("length", 0);
    let consistent = true; // false while a backend call is in flight
    try {
      // Reuse the cached prefix; at least one token must run to produce logits.
      let past = 0;
      while (past < this.cached.length && past < prompt.length - 1 && this.cached[past] === prompt[past]) past++;
      const limit = this.backend.kvRewindLimit;
      if (limit !== undefined && this.cached.length - past > limit) past = 0;
      this.cached.length = past;
      const t0 = performance.now();
      consistent = false;
      let logits = await this.call(this.backend.prefill(Int32Array.from(prompt.slice(past)), past));
      this.cached.push(...prompt.slice(past));
      consistent = true;
      timings.prefill_ms = performance.now() - t0;
      timings.prefill_tokens = prompt.length - past;

      let n = 0;
      let finish: FinishReason = "length";
      while (n < budget) {
        if (interrupted()) {
          finish = "abort";
          break;
        }
        const token = sampler.sample(logits);
        n++;
        if (eos.has(token)) {
          finish = "stop";
          break;
        }
        const out = stopper.push(text.push(token));
        if (out.text) yield out.text;
        if (out.stop) {
          finish = "stop";
          break;
        }
        if (n === budget) break; // its logits would not be used
        if (interrupted()) {
          finish = "abort";
          break;
        }
        const t1 = performance.now();
        consistent = false;
        logits = await this.call(this.backend.decode(token, this.cached.length));
        this.cached.push(token);
        consistent = true;
        timings.decode_ms += performance.now() - t1;
        timings.decode_tokens++;
      }
      if (!stopper.isStopped) {
        const tail = stopper.push(text.flush());
        const rest = tail.text + (tail.stop ? "" : stopper.flush());
        if (tail.stop) finish = "stop";
        if (rest) yield rest;
      }
      return result(finish, n);
    } finally {
      // A backend call that failed leaves the cache contents unknown: start the next
      // request from scratch. (A consumer that stops iterating does so at a yield,
      // where the cache is consistent.)
      if (!consistent) this.reset();
    }
  }

  private async call<T>(p: Promise<T>): Promise<T> {
    this.inflight = p;
    try {
      return await p;
    } finally {
      this.inflight = null;
    }
  }

  /** Resolves when no backend call is running. */
  async idle(): Promise<void> {
    while (this.inflight) await this.inflight.catch(() => {});
  }

  reset(): void {
    this.cached = [];
    this.backend.reset();
  }
}
