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
}

let loading: Promise<XGrammar> | null = null;

/** The grammar engine, imported once (its own chunk: dist/xgrammar.js). */
export function loadXGrammar(): Promise<XGrammar> {
  loading ??= import("./xgrammar.js").then((m) => m.default);
  return loading;
}

/** JSON output format: compact, one line (no whitespace a random model could repeat forever). */
const JSON_FORMAT = { anyWhitespace: false, indent: undefined, separators: [",", ":"] as [string, string], strict: true };

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
      return { xg, compiler: await xg.GrammarCompiler.createGrammarCompiler(info), stopTokenIds: v.stopTokenIds };
    })();
    this.compiler.catch(() => (this.compiler = null));
    return this.compiler;
  }

  /** Compiles `spec` (or takes it from the cache); a bad grammar or schema rejects with a GrammarError. */
  async compile(spec: GrammarSpec): Promise<{ xg: XGrammar; compiled: Compiled; stopTokenIds: number[] }> {
    const { xg, compiler, stopTokenIds } = await this.engine();
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
    return { xg, compiled: await p, stopTokenIds };
  }

  /** A fresh processor (one per generated sequence) for `spec`. */
  async processor(spec: GrammarSpec): Promise<GrammarProcessor> {
    const { xg, compiled, stopTokenIds } = await this.compile(spec);
    const matcher = await xg.GrammarMatcher.createGrammarMatcher(compiled);
    return new GrammarProcessor(xg, matcher, stopTokenIds);
  }
}

async function compileSpec(xg: XGrammar, compiler: Compiler, spec: GrammarSpec): Promise<Compiled> {
  xg.takeMessage();
  try {
    switch (spec.kind) {
      case "json_object":
        return await compiler.compileJSONSchema(JSON.stringify({ type: "object" }), JSON_FORMAT.anyWhitespace, JSON_FORMAT.indent, JSON_FORMAT.separators, JSON_FORMAT.strict);
      case "json_schema":
        return await compiler.compileJSONSchema(JSON.stringify(spec.schema), JSON_FORMAT.anyWhitespace, JSON_FORMAT.indent, JSON_FORMAT.separators, JSON_FORMAT.strict);
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
  if (n.type === "json_schema" && "json_schema" in n) {
    const f = JSON_FORMAT;
    const grammar = await xg.Testings._jsonSchemaToEBNF(JSON.stringify(n.json_schema), f.anyWhitespace, f.indent, f.separators, f.strict);
    return { type: "grammar", grammar };
  }
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

  constructor(
    private readonly xg: XGrammar,
    private readonly matcher: Matcher,
    private readonly stopTokenIds: readonly number[],
  ) {
    finalizer.register(this, matcher);
  }

  /** Words of the allowed-token bitmask for the current state (bit t of word t >> 5). */
  nextMask(): Int32Array {
    this.mask ??= this.xg.nextTokenBitmask(this.matcher);
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
    if (this.matcher.isTerminated()) return; // (a stop token after completion)
    if (!this.matcher.acceptToken(token)) throw new GrammarError(`token ${token} does not continue the grammar`);
  }

  /** True once the grammar is complete and only a stop token may follow. */
  isDone(): boolean {
    if (this.matcher.isTerminated()) return true;
    const mask = Int32Array.from(this.nextMask());
    for (const t of this.stopTokenIds) if (mask[t >> 5] !== undefined) mask[t >> 5]! &= ~(1 << (t & 31));
    return mask.every((w) => w === 0);
  }
}
