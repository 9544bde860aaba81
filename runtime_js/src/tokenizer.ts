/**
 * The bundle's tokenizer: tokenizer.json / tokenizer_config.json through
 * @huggingface/tokenizers, the chat template through @huggingface/jinja.
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { IncrementalDecoder } from "./detokenizer.js";
import { BundleFileError } from "./loader.js";
import type { Manifest } from "./manifest.js";
import { ChatTemplate, type TemplateLimits } from "./template.js";

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

export interface TokenizerSource {
  fetchJson<T = unknown>(path: string, signal?: AbortSignal): Promise<T>;
}

export class BundleTokenizer {
  readonly eosTokenIds: ReadonlySet<number>;
  readonly bosTokenId: number | null;
  private readonly tok: Tokenizer;
  private template: ChatTemplate | null = null;
  /** the vocabulary's strings spell bytes in GPT-2's byte-to-unicode alphabet */
  private readonly byteLevel: boolean;
  private readonly pieces = new Map<number, { text: string; bytes: number[] }>();

  constructor(
    /** tokenizer.json as parsed (the grammar engine reads its decoder and vocabulary) */
    readonly tokenizerJson: object,
    private readonly config: Record<string, unknown>,
    private readonly info: Manifest["tokenizer"],
    generation?: Partial<Manifest["generation"]>,
  ) {
    this.tok = new Tokenizer(tokenizerJson, config);
    this.byteLevel = usesByteLevel((tokenizerJson as { decoder?: unknown }).decoder);
    const eos = new Set<number>(generation?.eos_token_ids ?? []);
    const eosId = info.eos_token ? this.tok.token_to_id(info.eos_token) : undefined;
    if (eosId !== undefined) eos.add(eosId);
    this.eosTokenIds = eos;
    const bosId = info.bos_token ? this.tok.token_to_id(info.bos_token) : undefined;
    this.bosTokenId = bosId ?? generation?.bos_token_id ?? null;
  }

  /** Loads tokenizer.json and tokenizer_config.json named by the manifest. */
  static async load(manifest: Manifest, source: TokenizerSource, signal?: AbortSignal): Promise<BundleTokenizer> {
    const info = manifest.tokenizer;
    const [json, config] = await Promise.all([
      source.fetchJson<unknown>(info.file, signal),
      info.config_file ? source.fetchJson<unknown>(info.config_file, signal) : Promise.resolve({}),
    ]);
    const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);
    if (!isObject(json) || !isObject(config)) {
      throw new BundleFileError(`the bundle's ${isObject(json) ? info.config_file : info.file} is not a JSON object; package the model again`);
    }
    try {
      return new BundleTokenizer(json, config, info, manifest.generation);
    } catch (e) {
      throw new BundleFileError(`the bundle's ${info.file} is not a tokenizer this runtime reads (${String((e as Error)?.message).slice(0, 200)})`, { cause: e });
    }
  }

  get vocabSize(): number {
    return this.tok.get_vocab(true).size;
  }

  /**
   * Text to ids. With `addSpecialTokens` (default) the tokenizer's post-processor adds
   * what the model expects around plain text (e.g. BOS), as `tokenizer(text)` does in
   * transformers.
   */
  encode(text: string, { addSpecialTokens = true } = {}): number[] {
    if (!text) return addSpecialTokens && this.needsBos([]) ? [this.bosTokenId!] : [];
    const ids = this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    return addSpecialTokens && this.needsBos(ids) ? [this.bosTokenId!, ...ids] : ids;
  }

  /** `add_bos_token` for tokenizers whose post-processor does not add it itself. */
  private needsBos(ids: number[]): boolean {
    return this.info.add_bos_token && this.bosTokenId !== null && ids[0] !== this.bosTokenId;
  }

  decode(ids: ArrayLike<number>, { skipSpecialTokens = true } = {}): string {
    if (ids.length === 0) return "";
    return this.tok.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens });
  }

  /** The vocabulary's tokens as stored in tokenizer.json, by id (added tokens included; gaps are ""). */
  tokens(): string[] {
    const out: string[] = [];
    for (const [token, id] of this.tok.get_vocab(true)) out[id] = token;
    return Array.from(out, (t) => t ?? "");
  }

  /** Ids of the added tokens marked special (control tokens such as <|im_start|>). */
  specialTokenIds(): Set<number> {
    const ids = new Set<number>();
    for (const [id, t] of this.tok.get_added_tokens_decoder()) if (t.special) ids.add(id);
    return ids;
  }

  /**
   * One token on its own, as OpenAI's logprobs show it: `text` is the token decoded
   * alone (U+FFFD where it holds part of a character), `bytes` its exact UTF-8 bytes
   * (from the byte-level alphabet, or a `<0xNN>` byte-fallback token, else the text's).
   */
  tokenPiece(id: number): { text: string; bytes: number[] } {
    let piece = this.pieces.get(id);
    if (!piece) {
      const text = this.decode([id], { skipSpecialTokens: false });
      const raw = this.tok.id_to_token(id);
      const byte = raw === undefined ? null : /^<0x([0-9A-Fa-f]{2})>$/.exec(raw);
      let bytes: number[] | null = byte ? [parseInt(byte[1]!, 16)] : null; // (one group)
      if (!bytes && raw !== undefined && this.byteLevel) bytes = byteLevelBytes(raw);
      piece = { text, bytes: bytes ?? [...new TextEncoder().encode(text)] };
      if (this.pieces.size < 65536) this.pieces.set(id, piece);
    }
    return piece;
  }

  tokenId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplateSource() !== null;
  }

  /** The chat template's Jinja source (the manifest's, else tokenizer_config.json's), or null. */
  chatTemplateSource(): string | null {
    if (this.info.chat_template) return this.info.chat_template;
    const fromConfig = this.config.chat_template;
    return typeof fromConfig === "string" ? fromConfig : null;
  }

  /**
   * Renders the conversation with the model's chat template, as transformers'
   * apply_chat_template(tokenize=False), under `limits` (template.ts): a template that
   * loops, grows or runs past them throws a TemplateError.
   */
  applyChatTemplate(
    messages: ChatMessage[],
    { addGenerationPrompt = true, extra = {} as Record<string, unknown>, limits = {} as Partial<TemplateLimits> } = {},
  ): string {
    if (!this.template) {
      const src = this.chatTemplateSource();
      if (src === null) throw new Error("this bundle has no chat template; use engine.generate() with a raw prompt");
      this.template = new ChatTemplate(src);
    }
    return this.template.render(
      {
        bos_token: this.info.bos_token ?? "",
        eos_token: this.info.eos_token ?? "",
        ...extra,
        messages,
        add_generation_prompt: addGenerationPrompt,
      },
      limits,
    );
  }

  /** The prompt ids of a conversation: the template supplies the special tokens. */
  encodeChat(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean; limits?: Partial<TemplateLimits> } = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }

  /** A decoder that turns generated ids into text deltas, holding back incomplete characters. */
  streamDecoder(): IncrementalDecoder {
    return new IncrementalDecoder((ids) => this.decode(ids));
  }
}

/** True when a tokenizer.json decoder is (or contains) ByteLevel. */
function usesByteLevel(decoder: unknown): boolean {
  if (!decoder || typeof decoder !== "object") return false;
  const d = decoder as { type?: unknown; decoders?: unknown };
  if (d.type === "ByteLevel") return true;
  return d.type === "Sequence" && Array.isArray(d.decoders) && d.decoders.some(usesByteLevel);
}

/** GPT-2's byte-to-unicode alphabet, inverted: code point -> byte. */
let byteOfChar: Map<number, number> | null = null;

/** The bytes a byte-level vocabulary string spells, or null when it is not one (an added token). */
function byteLevelBytes(raw: string): number[] | null {
  if (!byteOfChar) {
    byteOfChar = new Map();
    let extra = 0;
    for (let b = 0; b < 256; b++) {
      const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      byteOfChar.set(printable ? b : 256 + extra++, b);
    }
  }
  const out: number[] = [];
  for (const ch of raw) {
    const b = byteOfChar.get(ch.codePointAt(0)!); // (a non-empty character)
    if (b === undefined) return null;
    out.push(b);
  }
  return out;
}
