/**
 * The generation loop over a Backend: prefill, sample, decode, detokenize, stop.
 *
 * The session remembers which tokens the backend's KV cache holds, so a request
 * prefills only what follows the longest prefix its prompt shares with them (a
 * follow-up turn, a regenerated answer, an edited last message), within the backend's
 * kvRewindLimit; with `n > 1` the prompt is prefilled once for every choice.
 *
 * Context window: a prompt must leave room for at least one generated token
 * (otherwise the request is rejected); generation ends with finish_reason "length"
 * when the cache is full, exactly as when max_tokens is reached. Nothing is evicted
 * or shifted.
 *
 * Speculative decoding (prompt lookup, where the backend has `verify` and the request or
 * engine asks for it): before a step, the tokens that followed an earlier occurrence of
 * the sequence's last n-gram are drafted (src/prompt_lookup.ts) and run with the step's
 * token in one batched `verify`; its rows are then sampled in order, with the same
 * sampler, processors and random draws as plain decoding, and a row is used only while
 * the token sampled before it equals the draft token it follows. The output is the
 * plain decoding's (up to the float rounding of a batched step against a single one);
 * the rejected draft tokens' KV rows are overwritten by the next call. Requests that take
 * the backend's greedy decode step (decodeArgmax) verify with verifyArgmax where the backend
 * has it: the backend picks every row's token, and the session reads no rows.
 */
import type { Backend } from "./backend.js";
import { LogitBias, parseLogitBias } from "./logit_bias.js";
import type { LogitsProcessor, LogitsProcessorFactory } from "./logits_processor.js";
import type { Manifest } from "./manifest.js";
import { DraftBudget, PromptLookup, type SpeculativeOptions, speculativeOptions } from "./prompt_lookup.js";
import { type SamplingParams, Sampler, type TopCandidates, randomSeed } from "./sampler.js";
import { StopMatcher } from "./stop.js";
import type { BundleTokenizer } from "./tokenizer.js";

/** Most alternatives `top_logprobs` may ask for (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;
/** Most choices `n` may ask for: each is generated in turn on the one backend. */
export const MAX_CHOICES = 16;

export interface GenerationParams extends SamplingParams {
  /** most tokens to generate per choice (default: the bundle's max_new_tokens) */
  max_tokens?: number;
  stop?: string | string[] | null;
  /** token id (decimal string) -> -100..100, added to the logit (OpenAI's logit_bias) */
  logit_bias?: Record<string, number> | null;
  /** report each generated token's logprob */
  logprobs?: boolean;
  /** with logprobs: also the 0..20 most likely tokens at each position */
  top_logprobs?: number;
  /**
   * choices generated from one prefill of the prompt (default 1); choice i samples
   * with seed + i when a seed is given
   */
  n?: number;
  /** more LogitsProcessors (after logit_bias), made afresh for every choice */
  logitsProcessors?: LogitsProcessorFactory;
  /**
   * prompt-lookup speculative decoding where the backend can verify drafts: options,
   * true (the defaults) or false (off); absent: the session's (the engine's) setting
   */
  speculative?: SpeculativeOptions | boolean;
}

export type FinishReason = "stop" | "length" | "abort";

export interface Timings {
  prefill_ms: number;
  /** tokens actually prefilled (a reused prefix is not counted) */
  prefill_tokens: number;
  decode_ms: number;
  /** tokens sampled from decode-time logits (a decode step's, or a verified draft's row) */
  decode_tokens: number;
  /** with speculative decoding: batched verify calls, draft tokens they checked, and those accepted */
  verify_steps?: number;
  draft_tokens?: number;
  accepted_tokens?: number;
}

/** A generated token's logprob and the most likely alternatives (token ids). */
export interface TokenLogprobs {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
}

/**
 * What a generation yields, in order: text (complete characters, stop strings held
 * back and removed) and, with logprobs, the entries of the tokens sampled since the
 * last event (text may then be ""); then one event with `finishReason` per choice.
 * Choices run one after the other.
 */
export interface GenerationEvent {
  choice: number;
  text: string;
  logprobs?: TokenLogprobs[];
  finishReason?: FinishReason;
}

export interface ChoiceResult {
  finishReason: FinishReason;
  /** sampled tokens, including a final EOS */
  completionTokens: number;
  seed: number;
}

export interface GenerationResult {
  /** of choice 0 */
  finishReason: FinishReason;
  promptTokens: number;
  /** prompt tokens whose KV cache an earlier request left (not prefilled again) */
  cachedTokens: number;
  /** sampled tokens of all choices, including final EOS tokens */
  completionTokens: number;
  /** of choice 0 */
  seed: number;
  choices: ChoiceResult[];
  timings: Timings;
}

export class ContextWindowError extends Error {
  override name = "ContextWindowError";
}

type Resolved = Required<Pick<GenerationParams, "max_tokens">> & GenerationParams & { bias: Map<number, number> | null };

/** A batched call's result: one row per token, of `width` values (the logits: any one width). */
function checkRows<T extends { length: number }>(out: T, tokens: number, width?: number): T {
  const ok = width === undefined ? out.length > 0 && out.length % tokens === 0 : out.length === tokens * width;
  if (!ok) throw new Error(`a batched call returned ${out.length} values for ${tokens} tokens`);
  return out;
}

export class Session {
  /** the tokens whose keys and values the backend holds, in order */
  private cached: number[] = [];
  /** the backend call in flight, if any */
  private inflight: Promise<unknown> | null = null;
  /** speculative decoding's draft lengths: this backend's measured call costs (acceptance: per choice) */
  private readonly drafts = new DraftBudget();

  constructor(
    private readonly backend: Backend,
    private readonly tokenizer: BundleTokenizer,
    readonly contextWindow: number,
    private readonly defaults: Manifest["generation"],
    /** the logits' length (manifest model.config.vocab_size), for checking logit_bias */
    private readonly vocabSize = Infinity,
    /** speculative decoding for requests that do not say (GenerationParams.speculative) */
    private readonly speculativeDefault: SpeculativeOptions | boolean = false,
  ) {
    if (typeof speculativeDefault === "object") speculativeOptions(speculativeDefault); // (checks)
  }

  /**
   * The drafting options a request runs with, or null: off, or the backend cannot verify
   * drafts. The draft length is bounded by the backend's verifyMaxTokens and by its
   * kvRewindLimit (rejected draft tokens are rolled back).
   */
  speculation(asked: SpeculativeOptions | boolean | undefined): Required<SpeculativeOptions> | null {
    const on = asked ?? this.speculativeDefault;
    if (on === false) return null;
    const opts = speculativeOptions(on === true ? {} : on);
    const most = Math.min(opts.maxDraft, (this.backend.verifyMaxTokens ?? 0) - 1, this.rewindLimit);
    if (!this.backend.verify || !(most >= 1)) return null;
    return { ...opts, maxDraft: most };
  }

  /** Most recent cache positions a call may roll back (the backend's kvRewindLimit; no limit without). */
  get rewindLimit(): number {
    return this.backend.kvRewindLimit ?? Infinity;
  }

  /** Sampling parameters: the request's, else the bundle's generation defaults; checked. */
  resolve(params: GenerationParams): Resolved {
    const d = this.defaults;
    const p = {
      ...params,
      temperature: params.temperature ?? d.temperature,
      top_p: params.top_p ?? d.top_p,
      top_k: params.top_k ?? d.top_k,
      repetition_penalty: params.repetition_penalty ?? d.repetition_penalty,
      max_tokens: params.max_tokens ?? d.max_new_tokens,
      bias: parseLogitBias(params.logit_bias, this.vocabSize),
    };
    const n = p.n ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > MAX_CHOICES) throw new RangeError(`n must be an integer in 1..${MAX_CHOICES}, got ${p.n}`);
    if (p.top_logprobs != null) {
      if (!Number.isInteger(p.top_logprobs) || p.top_logprobs < 0 || p.top_logprobs > MAX_TOP_LOGPROBS) {
        throw new RangeError(`top_logprobs must be an integer in 0..${MAX_TOP_LOGPROBS}, got ${p.top_logprobs}`);
      }
      if (!p.logprobs) throw new TypeError("top_logprobs needs logprobs: true");
    }
    if (p.seed != null && !Number.isSafeInteger(p.seed + n - 1)) throw new RangeError(`seed must be an integer, got ${p.seed}`);
    new Sampler({ ...p, seed: p.seed ?? 0 }); // (checks the sampling parameters)
    if (typeof p.speculative === "object") speculativeOptions(p.speculative);
    return p;
  }

  /**
   * Generates from `prompt`: text deltas, and per choice how it ended (see
   * GenerationEvent); returns the totals. `interrupted` is polled before every step.
   * Stopping the iteration early is safe.
   *
   * The KV cache: the longest common prefix of the prompt and the cached tokens is kept
   * (unless rolling back to it would pass the backend's kvRewindLimit: then the whole
   * prompt is prefilled); the prompt is prefilled once for all `n` choices, and every
   * choice after the first starts by rolling the cache back to the prompt's end (the
   * same limit: past it the prompt is prefilled again).
   */
  async *generate(prompt: number[], params: GenerationParams, interrupted: () => boolean): AsyncGenerator<GenerationEvent, GenerationResult> {
    const p = this.resolve(params);
    if (prompt.length === 0) throw new Error("the prompt is empty");
    if (prompt.length >= this.contextWindow) {
      throw new ContextWindowError(
        `the prompt has ${prompt.length} tokens; this bundle's context window is ${this.contextWindow} ` +
          "and must leave room for at least one generated token",
      );
    }
    if (!Number.isInteger(p.max_tokens) || p.max_tokens < 0) throw new RangeError(`max_tokens must be a non-negative integer, got ${p.max_tokens}`);
    const n = p.n ?? 1;
    const budget = Math.min(p.max_tokens, this.contextWindow - prompt.length);
    const stops = typeof p.stop === "string" ? [p.stop] : (p.stop ?? []);
    const eos = this.tokenizer.eosTokenIds;
    const topLogprobs = p.logprobs ? (p.top_logprobs ?? 0) : undefined;
    const base = p.seed ?? null;
    const seeds = Array.from({ length: n }, () => (base === null ? randomSeed() : 0)).map((s, i) => (base === null ? s : base + i));
    const timings: Timings = { prefill_ms: 0, prefill_tokens: 0, decode_ms: 0, decode_tokens: 0 };
    const spec = this.speculation(p.speculative);
    if (spec) Object.assign(timings, { verify_steps: 0, draft_tokens: 0, accepted_tokens: 0 });
    const choices: ChoiceResult[] = [];
    let cachedTokens = 0;
    const result = (): GenerationResult => ({
      finishReason: choices[0]?.finishReason ?? "length",
      promptTokens: prompt.length,
      cachedTokens,
      completionTokens: choices.reduce((a, c) => a + c.completionTokens, 0),
      seed: seeds[0]!, // n >= 1
      choices,
      timings,
    });

    if (budget === 0) {
      for (let c = 0; c < n; c++) {
        choices.push({ finishReason: "length", completionTokens: 0, seed: seeds[c]! }); // c < n
        yield { choice: c, text: "", finishReason: "length" };
      }
      return result();
    }
    let consistent = true; // false while a backend call is in flight
    try {
      const prefill = async (from: number): Promise<Float32Array> => {
        const t0 = performance.now();
        this.cached.length = from;
        consistent = false;
        const logits = await this.call(this.backend.prefill(Int32Array.from(prompt.slice(from)), from));
        this.cached.push(...prompt.slice(from));
        consistent = true;
        timings.prefill_ms += performance.now() - t0;
        timings.prefill_tokens += prompt.length - from;
        return logits;
      };
      // Reuse the longest cached prefix; at least one token must run to produce logits.
      let past = 0;
      while (past < this.cached.length && past < prompt.length - 1 && this.cached[past] === prompt[past]) past++;
      if (this.cached.length - past > this.rewindLimit) past = 0;
      cachedTokens = past;
      let logits = await prefill(past);
      // the prompt's logits, kept for the choices after the first (the backend may reuse its array)
      const promptLogits = n > 1 ? Float32Array.from(logits) : logits;

      for (let c = 0; c < n; c++) {
        if (c > 0) {
          logits = promptLogits;
          // rolling back to the prompt's end: past the backend's limit, prefill the prompt again
          if (this.cached.length - prompt.length > this.rewindLimit && !interrupted()) logits = Float32Array.from(await prefill(0));
        }
        const processors: LogitsProcessor[] = [...(p.bias ? [new LogitBias(p.bias)] : []), ...(p.logitsProcessors?.(c) ?? [])];
        const sampler = new Sampler({ ...p, seed: seeds[c] }, prompt, processors);
        const stopper = new StopMatcher(stops);
        const text = this.tokenizer.streamDecoder();
        let pending: TokenLogprobs[] = [];
        const event = (delta: string): GenerationEvent => {
          const e: GenerationEvent = { choice: c, text: delta };
          if (topLogprobs !== undefined && pending.length) {
            e.logprobs = pending;
            pending = [];
          }
          return e;
        };
        let count = 0;
        let finish: FinishReason = "length";
        // greedy with nothing that needs the logits on the CPU: the backend picks the next token
        const onDevice = sampler.plainArgmax && topLogprobs === undefined && this.backend.argmaxOnDevice === true;
        // the same requests' verify steps: the backend picks every row's token (no rows read back)
        const verifyOnDevice = onDevice && this.backend.verifyArgmaxOnDevice === true;
        let next: number | null = null; // the token the backend picked at the last step
        // top-k / top-p that the backend's K largest logits can answer: those are read back, not the logits
        const topAsk = !onDevice && topLogprobs === undefined && this.backend.topKOnDevice ? sampler.topCandidates(this.backend.topKOnDevice, this.vocabSize) : null;
        let top: TopCandidates | null = null; // the candidates the backend listed at the last step
        // speculation: the prompt and the tokens so far, and the last verify's draft and rows
        const lookup = spec ? new PromptLookup(prompt, spec) : null;
        this.drafts.restart();
        let draft: number[] = [];
        let verifyMs = 0;
        let rows: Float32Array = new Float32Array(0);
        let rowIds: Int32Array | null = null; // verifyOnDevice: the last verify's token per row, instead of rows
        let row = 0; // the row `logits` (or rowIds) is

        while (count < budget) {
          if (interrupted()) {
            finish = "abort";
            break;
          }
          const chosen =
            next !== null ? sampler.accept(next)
            : top !== null ? (sampler.chooseFromTop(top) ?? sampler.choose(await this.call(this.backend.readLastLogits!()), topLogprobs))
            : sampler.choose(logits, topLogprobs);
          next = null;
          top = null;
          const token: number = chosen.token;
          count++;
          if (eos.has(token)) {
            finish = "stop";
            break;
          }
          if (chosen.logprob !== undefined) pending.push({ token, logprob: chosen.logprob, top: chosen.top ?? [] });
          const out = stopper.push(text.push(token));
          if (out.text || pending.length) yield event(out.text);
          if (out.stop || sampler.done) {
            finish = "stop";
            break;
          }
          if (count === budget) break; // its logits would not be used
          if (interrupted()) {
            finish = "abort";
            break;
          }
          lookup?.push(token);
          if (row < draft.length && token === draft[row]) {
            // the last verify ran this token: its logits are the next row
            row++;
            if (rowIds) next = rowIds[row]!; // row <= draft.length: rowIds has draft.length + 1 ids
            else {
              const vocab = rows.length / (draft.length + 1);
              logits = rows.subarray(row * vocab, (row + 1) * vocab);
            }
            timings.accepted_tokens!++; // (spec: timings has the counters)
            timings.decode_tokens++;
            continue;
          }
          if (draft.length) this.drafts.verified(draft.length, row, verifyMs);
          const t1 = performance.now();
          const pos = prompt.length + count - 1;
          // (rows are used only for tokens this choice may still sample)
          draft = lookup ? lookup.draft(Math.min(spec!.maxDraft, budget - count - 1)) : [];
          if (spec?.adaptive && draft.length) draft.length = this.drafts.length(draft.length);
          row = 0;
          rowIds = null;
          const ran = () => (consistent = false);
          const b = this.backend; // (the optional methods below: defined where their flags said so)
          if (draft.length) {
            const tokens: number[] = [token, ...draft];
            const batch = Int32Array.from(tokens);
            if (verifyOnDevice) {
              rowIds = checkRows(await this.runAt(tokens, pos, ran, () => b.verifyArgmax!(batch, pos)), tokens.length, 1);
              next = rowIds[0]!;
            } else {
              rows = checkRows(await this.runAt(tokens, pos, ran, () => b.verify!(batch, pos)), tokens.length);
              logits = rows.subarray(0, rows.length / tokens.length);
            }
            timings.verify_steps!++; // (spec: timings has the counters)
            timings.draft_tokens! += draft.length;
          } else if (onDevice) next = await this.runAt([token], pos, ran, () => b.decodeArgmax!(token, pos));
          else if (topAsk) top = await this.runAt([token], pos, ran, () => b.decodeTopK!(token, pos, topAsk.invTemperature));
          else logits = await this.runAt([token], pos, ran, () => b.decode(token, pos));
          consistent = true;
          const ms = performance.now() - t1;
          if (draft.length) verifyMs = ms;
          else this.drafts.decoded(ms);
          timings.decode_ms += ms;
          timings.decode_tokens++;
        }
        if (!stopper.isStopped) {
          const tail = stopper.push(text.flush());
          const rest = tail.text + (tail.stop ? "" : stopper.flush());
          if (tail.stop) finish = "stop";
          if (rest || pending.length) yield event(rest);
        } else if (pending.length) {
          yield event("");
        }
        choices.push({ finishReason: finish, completionTokens: count, seed: seeds[c]! }); // c < n
        yield { choice: c, text: "", finishReason: finish };
      }
      return result();
    } finally {
      // A backend call that failed leaves the cache contents unknown: start the next
      // request from scratch. (A consumer that stops iterating does so at a yield,
      // where the cache is consistent.)
      if (!consistent) this.reset();
    }
  }

  /**
   * Runs `tokens` at `pos` by `call` (a decode step, a verify of a step's token and its draft,
   * or their variants that pick tokens on the backend): the cache holds `pos` tokens, or more
   * when rolled back (a choice after the first, back to the prompt; the step after a rejected
   * draft), and the call overwrites the positions from `pos`; the cache then holds `tokens`
   * after them (a verify's rejected drafts too: the next call starts before them, at most
   * maxDraft positions back).
   */
  private async runAt<T>(tokens: number[], pos: number, running: () => void, call: () => Promise<T>): Promise<T> {
    this.cached.length = Math.min(this.cached.length, pos);
    running();
    const out = await this.call(call());
    this.cached.push(...tokens);
    return out;
  }

  /**
   * The text of the first choice: yields its deltas and returns how it ended (the older
   * interface; `generate` has every choice and logprobs).
   */
  async *run(prompt: number[], params: GenerationParams, interrupted: () => boolean): AsyncGenerator<string, GenerationResult> {
    const events = this.generate(prompt, { ...params, n: 1 }, interrupted);
    for (let r = await events.next(); ; r = await events.next()) {
      if (r.done) return r.value;
      if (r.value.text) yield r.value.text;
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
