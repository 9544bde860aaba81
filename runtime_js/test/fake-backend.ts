/**
 * A deterministic stand-in for a model executor: it keeps the token history as its
 * "KV cache" (checking the engine's positions against it) and answers with logits
 * chosen by a script of the step number after the prompt. With `verifyMaxTokens` it
 * also verifies drafts (speculative decoding): token by token, as decode would. With
 * `argmax` it also picks greedy tokens itself (decodeArgmax, verifyArgmax: the CPU sampler's
 * greedy choice from the same logits), as a WebGPU backend with those plan entries does.
 */
import { Sampler } from "../src/sampler.js";
import type { Backend, BackendLoadOptions } from "../src/backend.js";
import type { BundleLoader, LoadStats } from "../src/loader.js";
import type { Manifest } from "../src/manifest.js";

export const EOS = 257;

/** Script that greedily spells `text` (one token per UTF-8 byte), then EOS. */
export function spell(text: string): (step: number) => number {
  const ids = [...new TextEncoder().encode(text)];
  return (step) => ids[step] ?? EOS;
}

export class FakeBackend implements Backend {
  readonly name = "fake";
  kv: number[] = [];
  calls: string[] = [];
  /** backend calls that ran the model (prefill, decode, verify) */
  runs = 0;
  loadStats: LoadStats | null = null;
  committed = new Set<number>();
  private promptEnd = 0;
  private readonly vocab: number;

  constructor(
    private readonly script: (step: number, history: number[]) => number | Float32Array,
    readonly opts: { vocab?: number; delayMs?: number; contextWindow?: number; failDecodeAt?: number; kvRewindLimit?: number; verifyMaxTokens?: number; argmax?: boolean } = {},
  ) {
    this.vocab = opts.vocab ?? 258;
  }

  get contextWindow(): number | undefined {
    return this.opts.contextWindow;
  }

  get kvRewindLimit(): number | undefined {
    return this.opts.kvRewindLimit;
  }

  get verifyMaxTokens(): number | undefined {
    return this.opts.verifyMaxTokens;
  }

  get argmaxOnDevice(): boolean {
    return this.opts.argmax === true;
  }

  get verifyArgmaxOnDevice(): boolean {
    return this.opts.argmax === true && this.opts.verifyMaxTokens !== undefined;
  }

  async decodeArgmax(token: number, pos: number): Promise<number> {
    if (!this.opts.argmax) throw new Error("this fake backend does not pick tokens");
    return greedy(await this.decode(token, pos));
  }

  async verifyArgmax(tokens: Int32Array, pastLen: number): Promise<Int32Array> {
    if (!this.opts.argmax) throw new Error("this fake backend does not pick tokens");
    const rows = await this.verify(tokens, pastLen);
    this.calls[this.calls.length - 1] = `verifyArgmax ${tokens.length}@${pastLen}`;
    const vocab = rows.length / tokens.length;
    return Int32Array.from(tokens, (_, i) => greedy(rows.subarray(i * vocab, (i + 1) * vocab)));
  }

  async load(_m: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    this.loadStats = await loader.loadShards(
      { write: () => {}, commit: (i) => void this.committed.add(i) },
      { signal: opts.signal, onProgress: opts.onProgress },
    );
  }

  /** A call at `pastLen` overwrites the cache from there: at most its length, within kvRewindLimit (but from 0). */
  private rollTo(call: string, pastLen: number): void {
    if (pastLen > this.kv.length) throw new Error(`${call} at ${pastLen} but the cache holds ${this.kv.length}`);
    if (pastLen > 0 && this.kv.length - pastLen > (this.opts.kvRewindLimit ?? Infinity)) {
      throw new Error(`${call} at ${pastLen} rolls back ${this.kv.length - pastLen} positions, more than kvRewindLimit`);
    }
    this.kv.length = pastLen;
  }

  async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    this.rollTo("prefill", pastLen);
    this.runs++;
    this.calls.push(`prefill ${tokens.length}@${pastLen}`);
    this.kv.push(...tokens);
    this.promptEnd = this.kv.length;
    return this.logits();
  }

  async verify(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    if (!this.opts.verifyMaxTokens) throw new Error("this fake backend does not verify");
    if (tokens.length > this.opts.verifyMaxTokens) throw new Error(`verify of ${tokens.length} tokens, more than verifyMaxTokens`);
    this.rollTo("verify", pastLen);
    this.runs++;
    this.calls.push(`verify ${tokens.length}@${pastLen}`);
    const rows: Float32Array[] = [];
    for (const t of tokens) {
      this.kv.push(t);
      rows.push(this.logits().slice());
    }
    const out = new Float32Array(rows.length * rows[0]!.length); // (tokens: at least one)
    rows.forEach((r, i) => out.set(r, i * r.length));
    if (this.opts.delayMs) await new Promise((r) => setTimeout(r, this.opts.delayMs));
    return out;
  }

  async decode(token: number, pos: number): Promise<Float32Array> {
    if (pos < this.kv.length) this.calls.push(`decode 1@${pos}`); // a rollback
    this.rollTo("decode", pos);
    if (this.opts.failDecodeAt === pos) {
      this.opts.failDecodeAt = undefined; // once
      throw new Error("device lost");
    }
    this.runs++;
    this.kv.push(token);
    if (this.opts.delayMs) await new Promise((r) => setTimeout(r, this.opts.delayMs));
    return this.logits();
  }

  reset(): void {
    this.calls.push("reset");
    this.kv = [];
  }

  unload(): void {
    this.calls.push("unload");
  }

  private logits(): Float32Array {
    const out = this.script(this.kv.length - this.promptEnd, this.kv);
    if (out instanceof Float32Array) return out;
    const l = new Float32Array(this.vocab);
    l[out] = 5;
    return l;
  }
}

/** The CPU sampler's greedy choice (lowest id on ties). */
function greedy(logits: Float32Array): number {
  return new Sampler({ temperature: 0 }).choose(Float32Array.from(logits)).token;
}
