/**
 * The prefill / decode loop every plan backend shares (WebGPU and Wasm run the same
 * plan.json): one call at a time, token ids checked against the vocabulary and the
 * positions against the context window before anything runs, a prompt cut into chunks
 * that the plan's `prefill` entry accepts, each chunk run at its own past_len, and the
 * last token's logits read once at the end.
 *
 * A backend supplies only what depends on where the plan runs (PlanDevice): write the
 * token ids, run one entry point for given dynamic dims, read the logits.
 */
import {
  ARGMAX_ENTRY,
  type Dims,
  type Plan,
  TOPK_ENTRY,
  VERIFY_ARGMAX_ENTRY,
  VERIFY_ENTRY,
  checkWindow,
  hasArgmax,
  hasVerifyArgmax,
  topKOf,
  verifyMaxTokens,
} from "./plan.js";
import type { TopCandidates } from "./sampler.js";

export interface PlanDevice {
  /** Writes the ids of the next run's tokens (already checked) into the plan's tokens buffer. */
  writeTokens(tokens: Int32Array): void;
  /**
   * Runs entry point `entry` for `dims` on the tokens written last. May resolve as soon
   * as the work is queued: the device keeps runs and reads in order.
   */
  runEntry(entry: string, dims: Dims): Promise<void>;
  /** The last token's logits of the last run, once it finished; the array may be reused by the next read. */
  readLogits(): Promise<Float32Array>;
  /**
   * Optional: the id the plan's argmax entry wrote (outputs.next_token), once the runs
   * finished; a few bytes read back instead of the logits.
   */
  readNextToken?(): Promise<number>;
  /** Optional: writes f32 values at the start of plan buffer `name` (an input such as inv_temperature). */
  writeF32?(name: string, values: Float32Array): void;
  /** Optional: the first `count` u32 words of plan buffer `name` (an output such as topk), once the runs finished. */
  readWords?(name: string, count: number): Promise<Uint32Array>;
  /**
   * Optional: the first `rows` rows of outputs.logits_rows (rows × vocab floats) that the
   * plan's verify entry wrote, once the runs finished; the array may be reused by the next read.
   */
  readLogitsRows?(rows: number): Promise<Float32Array>;
}

const NONE = 0xffffffff;

/** The words of a plan's topk output (docs/plan.md) as TopCandidates. */
export function topCandidatesOf(words: Uint32Array, k: number, vocab: number): TopCandidates {
  let m = 0;
  while (m < k && words[2 * m] !== NONE) m++;
  const ids = new Int32Array(m);
  const bits = new Uint32Array(m);
  for (let j = 0; j < m; j++) {
    ids[j] = words[2 * j]!; // j < m <= k: inside the 2 k + 2 words
    bits[j] = words[2 * j + 1]!;
  }
  const sum = new Float32Array(words.buffer, words.byteOffset + 8 * k, 1)[0]!;
  return { ids, logits: new Float32Array(bits.buffer), sum, finite: words[2 * k + 1]!, vocab };
}

export class PlanCalls {
  private busy = false;
  /** tokens per prefill run */
  readonly chunk: number;

  /**
   * `backend` names the backend in errors; `vocab` is the manifest's vocab_size.
   */
  constructor(
    private readonly backend: string,
    private readonly plan: Plan,
    private readonly vocab: number,
    private readonly device: PlanDevice,
  ) {
    this.chunk = Math.min(plan.prefill_chunk, plan.entries.prefill.max_seq_len);
  }

  /** Backend.prefill: `tokens` at positions pastLen.., in chunks; the last token's logits. */
  async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    if (tokens.length === 0) throw new RangeError("prefill needs at least one token");
    checkWindow(this.plan, "prefill", pastLen, tokens.length);
    return this.exclusive(tokens, async () => {
      for (let i = 0; i < tokens.length; i += this.chunk) {
        await this.run("prefill", tokens.subarray(i, i + this.chunk), pastLen + i);
      }
      return this.device.readLogits();
    });
  }

  /** Backend.decode: one token at position `pos`; its logits. */
  async decode(token: number, pos: number): Promise<Float32Array> {
    const one = Int32Array.of(token);
    checkWindow(this.plan, "decode", pos, 1);
    return this.exclusive(one, async () => {
      await this.run("decode", one, pos);
      return this.device.readLogits();
    });
  }

  /** Whether decodeArgmax can run: the plan has the argmax entry and the device reads its output. */
  get argmaxOnDevice(): boolean {
    return hasArgmax(this.plan) && this.device.readNextToken !== undefined;
  }

  /**
   * One token at position `pos`, then the plan's argmax entry on its logits: resolves to
   * the greedy next token (the largest logit, lowest id on ties, as the CPU sampler's
   * argmax), reading back its id instead of the vocabulary's logits.
   */
  async decodeArgmax(token: number, pos: number): Promise<number> {
    if (!this.argmaxOnDevice) throw new Error(`the ${this.backend} backend's plan has no ${ARGMAX_ENTRY} entry`);
    const one = Int32Array.of(token);
    checkWindow(this.plan, "decode", pos, 1);
    return this.exclusive(one, async () => {
      await this.run("decode", one, pos);
      await this.device.runEntry(ARGMAX_ENTRY, { seq_len: 1, past_len: pos });
      return this.device.readNextToken!(); // argmaxOnDevice: defined
    });
  }

  /** K of decodeTopK: the plan's "topk" entry's, when the device can write its input and read its output; else 0. */
  get topKOnDevice(): number {
    return this.device.writeF32 && this.device.readWords ? topKOf(this.plan) : 0;
  }

  /**
   * One token at position `pos`, then the plan's topk entry on its logits: resolves to the
   * K largest logits (best first, lowest id on ties) and the softmax sum at 1 / invTemperature
   * over the vocabulary, reading back 2 K + 2 words instead of the vocabulary's logits. The
   * logits stay on the device: `readLastLogits` reads them.
   */
  async decodeTopK(token: number, pos: number, invTemperature: number): Promise<TopCandidates> {
    const k = this.topKOnDevice;
    if (!k) throw new Error(`the ${this.backend} backend's plan has no ${TOPK_ENTRY} entry`);
    const one = Int32Array.of(token);
    checkWindow(this.plan, "decode", pos, 1);
    return this.exclusive(one, async () => {
      await this.run("decode", one, pos);
      this.device.writeF32!(this.plan.inputs.inv_temperature!, Float32Array.of(invTemperature)); // topKOnDevice: defined
      await this.device.runEntry(TOPK_ENTRY, { seq_len: 1, past_len: pos });
      return topCandidatesOf(await this.device.readWords!(this.plan.outputs.topk!, 2 * k + 2), k, this.vocab);
    });
  }

  /** The logits of the last run (after decodeTopK, when its candidates could not decide the token). */
  async readLastLogits(): Promise<Float32Array> {
    return this.exclusive(new Int32Array(0), () => this.device.readLogits());
  }

  /** Backend.verifyMaxTokens: the verify entry's max_seq_len, when the plan has it and the device reads its rows. */
  get verifyMaxTokens(): number | undefined {
    return this.device.readLogitsRows ? verifyMaxTokens(this.plan) : undefined;
  }

  /**
   * Backend.verify: `tokens` (1 ..= verifyMaxTokens) at positions pastLen.. in one run of the
   * plan's verify entry (their KV rows written, as prefill does); the logits of every token,
   * tokens.length × vocab floats, row i after tokens[i].
   */
  async verify(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    this.checkVerify(this.verifyMaxTokens !== undefined, VERIFY_ENTRY, tokens, pastLen);
    return this.exclusive(tokens, async () => {
      await this.run(VERIFY_ENTRY, tokens, pastLen);
      return this.device.readLogitsRows!(tokens.length); // verifyMaxTokens: defined
    });
  }

  /** Refuses a verify call (of `entry`, present when `can`) for tokens it cannot take, before anything runs. */
  private checkVerify(can: boolean, entry: string, tokens: Int32Array, pastLen: number): void {
    if (!can) throw new Error(`the ${this.backend} backend's plan has no ${entry} entry (package the model again)`);
    const max = this.verifyMaxTokens!; // (can: the verify entry is there)
    if (tokens.length < 1 || tokens.length > max) {
      throw new RangeError(`verify takes 1..${max} tokens (the plan's ${VERIFY_ENTRY} entry), got ${tokens.length}`);
    }
    checkWindow(this.plan, "verify", pastLen, tokens.length);
  }

  /** Whether verifyArgmax can run: the plan has the verify and verify_argmax entries and the device reads words. */
  get verifyArgmaxOnDevice(): boolean {
    return this.verifyMaxTokens !== undefined && hasVerifyArgmax(this.plan) && this.device.readWords !== undefined;
  }

  /**
   * As verify, then the plan's verify_argmax entry on the rows: resolves to the greedy token
   * of every row (the largest logit, lowest id on ties, as the CPU sampler's argmax), reading
   * back 8 bytes a row instead of tokens.length × vocab floats.
   */
  async verifyArgmax(tokens: Int32Array, pastLen: number): Promise<Int32Array> {
    this.checkVerify(this.verifyArgmaxOnDevice, VERIFY_ARGMAX_ENTRY, tokens, pastLen);
    return this.exclusive(tokens, async () => {
      await this.run(VERIFY_ENTRY, tokens, pastLen);
      await this.device.runEntry(VERIFY_ARGMAX_ENTRY, { seq_len: tokens.length, past_len: pastLen });
      const words = await this.device.readWords!(this.plan.outputs.verify_tokens!, 2 * tokens.length); // verifyArgmaxOnDevice: defined
      const ids = new Int32Array(tokens.length);
      for (let i = 0; i < ids.length; i++) ids[i] = words[2 * i]!; // 2 words a row
      return ids;
    });
  }

  /**
   * Median ms of `steps` decode steps (token 0 at positions 1..steps, after one untimed
   * step at 0): what "auto" compares between backends. Leaves junk in the KV cache,
   * which the next call's past_len overwrites.
   */
  async timeDecode(steps: number): Promise<number> {
    const last = Math.min(steps, this.plan.context_window - 1);
    const t0 = performance.now();
    await this.decode(0, 0);
    if (last < 1) return performance.now() - t0; // (a one-token window: the first step is all there is)
    const times: number[] = [];
    for (let pos = 1; pos <= last; pos++) {
      const t0 = performance.now();
      await this.decode(0, pos);
      times.push(performance.now() - t0);
    }
    times.sort((x, y) => x - y);
    return times[times.length >> 1] ?? 0;
  }

  private async run(entry: "prefill" | "decode" | typeof VERIFY_ENTRY, tokens: Int32Array, pastLen: number): Promise<void> {
    this.device.writeTokens(tokens);
    await this.device.runEntry(entry, { seq_len: tokens.length, past_len: pastLen });
  }

  /** The backend's activations and KV cache serve one call at a time. */
  private async exclusive<T>(tokens: Int32Array, fn: () => Promise<T>): Promise<T> {
    if (this.busy) throw new Error(`the ${this.backend} backend runs one call at a time`);
    for (const t of tokens) {
      if (!(t >= 0 && t < this.vocab)) throw new RangeError(`token id ${t} is outside the vocabulary (0..${this.vocab - 1})`);
    }
    this.busy = true;
    try {
      return await fn();
    } finally {
      this.busy = false;
    }
  }
}
