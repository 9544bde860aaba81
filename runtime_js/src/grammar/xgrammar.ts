/**
 * The one module that imports @mlc-ai/web-xgrammar (XGrammar compiled to Wasm, about
 * 1.1 MB with its Wasm inlined). build.mjs makes it a chunk of its own (dist/xgrammar.js)
 * that the runtime imports on the first constrained request, and rewrites the package
 * into an ES module that also exports `nextTokenBitmask` (see build.mjs).
 */
import xgrammar, { type GrammarMatcher } from "@mlc-ai/web-xgrammar";

export type { CompiledGrammar, GrammarCompiler, GrammarMatcher } from "@mlc-ai/web-xgrammar";

export type XGrammar = typeof xgrammar & {
  /** The matcher's next-token bitmask (bit t of word t >> 5 set: token t allowed), synchronously. */
  nextTokenBitmask(matcher: GrammarMatcher): Int32Array;
  /** The last error line the engine printed ("" if none since the last call), and forget it. */
  takeMessage(): string;
};

export default xgrammar as XGrammar;
