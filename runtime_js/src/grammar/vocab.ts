/**
 * What the grammar engine must know of a tokenizer: every token's text as stored in
 * tokenizer.json, and how stored text maps to output text (XGrammar's "vocab type"):
 *
 *   byte_level     GPT-2 style byte-to-unicode tokens (Ġ for a space): a ByteLevel decoder
 *   byte_fallback  SentencePiece style: ▁ for a space, <0x0A> for raw bytes (a Metaspace,
 *                  Replace("▁") or ByteFallback decoder)
 *   raw            the stored text is the output text
 *
 * Special tokens (<|im_start|> ...) are given as "": the engine never allows a token
 * whose text is empty, so a grammar cannot be satisfied by spelling a control token.
 * End-of-generation tokens are passed apart, as the stop tokens a finished grammar allows.
 */

export type VocabType = "byte_level" | "byte_fallback" | "raw";

export interface GrammarVocab {
  /** token text by id, as tokenizer.json stores it; special tokens "" */
  tokens: string[];
  vocabType: VocabType;
  /** the tokenizer puts a space before the text (SentencePiece's add_dummy_prefix) */
  prependSpace: boolean;
  /** stop tokens: allowed when the grammar is complete, and only then */
  stopTokenIds: number[];
}

type Json = Record<string, unknown>;

/** The components of a tokenizer.json part, a Sequence flattened. */
function parts(node: unknown): Json[] {
  if (!node || typeof node !== "object") return [];
  const n = node as Json;
  if (n.type === "Sequence") {
    const inner = (n.decoders ?? n.pretokenizers ?? n.normalizers) as unknown[] | undefined;
    return (inner ?? []).flatMap(parts);
  }
  return [n];
}

export function vocabType(tokenizerJson: object): VocabType {
  const decoders = parts((tokenizerJson as Json).decoder);
  if (decoders.some((d) => d.type === "ByteLevel")) return "byte_level";
  const sentencePiece = (d: Json) => d.type === "ByteFallback" || d.type === "Metaspace" || (d.type === "Replace" && JSON.stringify(d.pattern).includes("▁"));
  if (decoders.some(sentencePiece)) return "byte_fallback";
  return "raw";
}

export function prependsSpace(tokenizerJson: object): boolean {
  const j = tokenizerJson as Json;
  const metaspace = [...parts(j.pre_tokenizer), ...parts(j.normalizer)];
  return metaspace.some(
    (p) =>
      (p.type === "Metaspace" && (p.prepend_scheme === "always" || p.prepend_scheme === "first" || p.add_prefix_space === true)) ||
      (p.type === "Prepend" && p.prepend === "▁"),
  );
}

export function grammarVocab(
  tokenizerJson: object,
  tokens: string[],
  specialTokenIds: ReadonlySet<number>,
  stopTokenIds: Iterable<number>,
): GrammarVocab {
  const stops = [...stopTokenIds];
  const out = tokens.map((t, id) => (specialTokenIds.has(id) || stops.includes(id) ? "" : t));
  return { tokens: out, vocabType: vocabType(tokenizerJson), prependSpace: prependsSpace(tokenizerJson), stopTokenIds: stops };
}
