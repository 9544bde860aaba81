/**
 * Constrained decoding: a GrammarSpec compiled by XGrammar (Wasm) against the bundle's
 * vocabulary, and a LogitsProcessor that forbids, at every step, each token that
 * cannot continue the grammar (its logit becomes -Infinity). It sits between the
 * logits and the sampler, so it works the same on every backend.
 *
 * Costs: the engine (dist/xgrammar.js) is imported on the first constrained request;
 * the vocabulary is preprocessed once per tokenizer (~0.2 s for 49k tokens); each
 * grammar is compiled once and kept (a few compiled grammars per engine); the mask
 * of one step is a Wasm call plus one pass over the logits (bench/grammar_mask.mjs).
 */
import type { LogitsProcessor } from "../logits_processor.js";
import type { GrammarSpec } from "./response_format.js";
import { tokenBytes, Utf8Guard } from "./utf8.js";
import type { GrammarVocab } from "./vocab.js";
import type { CompiledGrammar as Compiled, GrammarCompiler as Compiler, GrammarMatcher as Matcher, XGrammar } from "./xgrammar.js";

/** A grammar or schema the engine cannot compile (the request is at fault). */
export class GrammarError extends TypeError {
  override name = "GrammarError";
}

interface Engine {
  xg: XGrammar;
  compiler: Compiler;
  stopTokenIds: number[];
  utf8: Utf8Guard;
}

let loading: Promise<XGrammar> | null = null;

/** The grammar engine, imported once (its own chunk: dist/xgrammar.js). */
export function loadXGrammar(): Promise<XGrammar> {
  loading ??= import("./xgrammar.js").then((m) => m.default);
  return loading;
}

/**
 * JSON output format: compact, on one line (indent -1: no whitespace a random model
 * could repeat forever), no properties the schema does not name (strict).
 */
const JSON_FORMAT = { anyWhitespace: false, indent: -1, separators: [",", ":"] as [string, string], strict: true };

/**
 * XGrammar 0.1.27 writes the characters of a length-bounded string as [^"\\\r\n], which
 * lets control characters through (a tab, U+0007) that JSON forbids unescaped and
 * JSON.parse refuses; its other string rules already exclude U+0000..U+001F.
 */
const LOOSE_STRING_CHAR = '[^"\\\\\\r\\n]';
const JSON_STRING_CHAR = '[^\\0-\\x1f"\\\\]';

/** The EBNF grammar of JSON valid against `schema`, in JSON_FORMAT. */
async function jsonGrammar(xg: XGrammar, schema: unknown): Promise<string> {
  const f = JSON_FORMAT;
  const ebnf = await xg.Testings._jsonSchemaToEBNF(JSON.stringify(schema), f.anyWhitespace, f.indent, f.separators, f.strict);
  return ebnf.replaceAll(LOOSE_STRING_CHAR, JSON_STRING_CHAR);
}

/** Compiled grammars kept per tokenizer (most recently used). */
const KEEP_COMPILED = 16;

/**
 * XGrammar prints what went wrong ("[FATAL] file.cc:552: EBNF parser error at line 1 ...")
 * and then aborts (the exception says only "Aborted()"): the printed line, without the
 * source location, is the message.
 */
function describe(xg: XGrammar, e: unknown): string {
  const printed = xg.takeMessage().replace(/^\[\w+\]\s+\S+:\d+:\s*/, "");
  const thrown = e instanceof Error ? e.message : String(e);
  return (printed || thrown).split("\n")[0]!.slice(0, 300);
}

export class GrammarCompilerCache {
  private compiler: Promise<Engine> | null = null;
  private readonly compiled = new Map<string, Promise<Compiled>>();

  constructor(
    /** the vocabulary (made lazily: only a constrained request needs it) */
    private readonly vocab: () => GrammarVocab,
    /** the length of a logits vector (the model's vocab_size, padding included) */
    readonly vocabSize: number,
  ) {}

  private engine(): Promise<Engine> {
    this.compiler ??= (async () => {
      const xg = await loadXGrammar();
      const v = this.vocab();
      const size = Math.max(this.vocabSize, v.tokens.length);
      const info = await xg.TokenizerInfo.createTokenizerInfo(v.tokens, v.vocabType, v.prependSpace, size, v.stopTokenIds);
      const utf8 = new Utf8Guard(tokenBytes(v.tokens, v.vocabType), v.stopTokenIds, size);
      return { xg, compiler: await xg.GrammarCompiler.createGrammarCompiler(info), stopTokenIds: v.stopTokenIds, utf8 };
    })();
    this.compiler.catch(() => (this.compiler = null));
    return this.compiler;
  }

  /** Compiles `spec` (or takes it from the cache); a bad grammar or schema rejects with a GrammarError. */
  async compile(spec: GrammarSpec): Promise<{ xg: XGrammar; compiled: Compiled; stopTokenIds: number[]; utf8: Utf8Guard }> {
    const { xg, compiler, stopTokenIds, utf8 } = await this.engine();
    const key = JSON.stringify(spec);
    let p = this.compiled.get(key);
    if (p) {
      this.compiled.delete(key); // most recent last
    } else {
      p = compileSpec(xg, compiler, spec);
      p.catch(() => this.compiled.delete(key));
      while (this.compiled.size >= KEEP_COMPILED) {
        const [oldest, entry] = this.compiled.entries().next().value!;
        this.compiled.delete(oldest);
        entry.then((c) => c.dispose()).catch(() => {});
      }
    }
    this.compiled.set(key, p);
    return { xg, compiled: await p, stopTokenIds, utf8 };
  }

  /** A fresh processor (one per generated sequence) for `spec`. */
  async processor(spec: GrammarSpec): Promise<GrammarProcessor> {
    const { xg, compiled, stopTokenIds, utf8 } = await this.compile(spec);
    const matcher = await xg.GrammarMatcher.createGrammarMatcher(compiled);
    return new GrammarProcessor(xg, matcher, stopTokenIds, utf8);
  }
}

async function compileSpec(xg: XGrammar, compiler: Compiler, spec: GrammarSpec): Promise<Compiled> {
  xg.takeMessage();
  try {
    switch (spec.kind) {
      case "json_object":
        return await compiler.compileGrammar(await jsonGrammar(xg, { type: "object" }));
      case "json_schema":
        return await compiler.compileGrammar(await jsonGrammar(xg, spec.schema));
      case "grammar":
        return await compiler.compileGrammar(spec.grammar, spec.root ?? "root");
      case "structural_tag":
        return await compiler.compileStructuralTag({ type: "structural_tag", format: await compactJson(xg, spec.format) });
    }
  } catch (e) {
    const what = spec.kind === "grammar" ? "the grammar" : spec.kind === "structural_tag" ? "the tool-call format" : "the JSON schema";
    throw new GrammarError(`${what} cannot be compiled: ${describe(xg, e)}`);
  }
}

/**
 * A structural tag's JSON contents allow any whitespace between tokens (a random model
 * fills them with it): each becomes the compact grammar of its schema instead.
 */
async function compactJson(xg: XGrammar, node: unknown): Promise<unknown> {
  if (Array.isArray(node)) return Promise.all(node.map((n) => compactJson(xg, n)));
  if (!node || typeof node !== "object") return node;
  const n = node as Record<string, unknown>;
  if (n.type === "json_schema" && "json_schema" in n) return { type: "grammar", grammar: await jsonGrammar(xg, n.json_schema) };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(n)) out[k] = await compactJson(xg, v);
  return out;
}

const finalizer = new FinalizationRegistry<{ dispose(): void }>((m) => m.dispose());

/**
 * Masks the logits to the tokens the grammar allows next, and advances on each token
 * picked. A picked token the grammar refuses (only possible when something after the
 * mask changed the choice) throws: the output would no longer match.
 */
export class GrammarProcessor implements LogitsProcessor {
  private mask: Int32Array | null = null;
  /** the grammar's mask AND the UTF-8 guard's (reused) */
  private both = new Int32Array(0);
  /** the stop tokens as a bitmask */
  private readonly stopBits: Int32Array;
  /** where the output stands in a UTF-8 character (Utf8Guard) */
  private utf8State = 0;

  constructor(
    private readonly xg: XGrammar,
    private readonly matcher: Matcher,
    private readonly stopTokenIds: readonly number[],
    private readonly utf8: Utf8Guard | null = null,
  ) {
    finalizer.register(this, matcher);
    this.stopBits = new Int32Array(stopTokenIds.reduce((n, t) => Math.max(n, (t >> 5) + 1), 0));
    for (const t of stopTokenIds) this.stopBits[t >> 5]! |= 1 << (t & 31);
  }

  /** Words of the allowed-token bitmask for the current state (bit t of word t >> 5). */
  nextMask(): Int32Array {
    if (this.mask) return this.mask;
    const mask = this.xg.nextTokenBitmask(this.matcher);
    this.mask = mask;
    if (this.utf8) {
      const valid = this.utf8.mask(this.utf8State);
      let any = 0;
      if (this.both.length !== mask.length) this.both = new Int32Array(mask.length);
      for (let i = 0; i < mask.length; i++) any |= this.both[i] = mask[i]! & (valid[i] ?? 0); // (i < length)
      if (any) this.mask = this.both; // (a grammar that allows only broken UTF-8 here still gets its way)
    }
    return this.mask;
  }

  process(logits: Float32Array): void {
    const mask = this.nextMask();
    const n = logits.length;
    let open = false; // some allowed token kept a finite logit
    for (let w = 0; w * 32 < n; w++) {
      const bits = mask[w] ?? 0;
      const end = Math.min(n, w * 32 + 32);
      if (bits === 0) {
        logits.fill(-Infinity, w * 32, end);
        continue;
      }
      if (bits === -1) {
        for (let t = w * 32; !open && t < end; t++) open = logits[t]! > -Infinity;
        continue;
      }
      for (let t = w * 32; t < end; t++) {
        if (!((bits >>> (t & 31)) & 1)) logits[t] = -Infinity;
        else if (!open && logits[t]! > -Infinity) open = true;
      }
    }
    // Every allowed token was forbidden before (-Infinity from the model or an earlier
    // processor): choose among the allowed ones evenly rather than leave the grammar.
    if (!open) for (let t = 0; t < n; t++) if ((mask[t >> 5]! >>> (t & 31)) & 1) logits[t] = 0;
  }

  accept(token: number): void {
    this.mask = null;
    if (this.utf8) this.utf8State = this.utf8.step(this.utf8State, token);
    if (this.matcher.isTerminated()) return; // (a stop token after completion)
    if (!this.matcher.acceptToken(token)) throw new GrammarError(`token ${token} does not continue the grammar`);
  }

  /** True once the grammar is complete and only a stop token may follow. */
  isDone(): boolean {
    if (this.matcher.isTerminated()) return true;
    const mask = this.nextMask();
    for (let w = 0; w < mask.length; w++) if ((mask[w]! & ~(this.stopBits[w] ?? 0)) !== 0) return false; // (w < length)
    return true;
  }
}
