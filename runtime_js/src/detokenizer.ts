/**
 * Incremental detokenization for streaming.
 *
 * Decoding token by token is wrong in two ways: byte-level BPE splits one character
 * (an emoji, most CJK) over several tokens, each of which alone decodes to U+FFFD;
 * and decoders that strip a word's leading space (Metaspace) or merge across tokens
 * give a different string for a token alone than in context. So each step decodes a
 * short window: the ids since `prefix` (tokens already emitted, kept as context)
 * against the same window without the new ids, and emits the difference once it no
 * longer ends in U+FFFD. The concatenated deltas equal decode(all ids).
 */
export class IncrementalDecoder {
  private readonly ids: number[] = [];
  /** start of the context window */
  private prefix = 0;
  /** ids before this index have been emitted as text */
  private read = 0;

  constructor(private readonly decode: (ids: number[]) => string) {}

  /** Adds one id; returns the text it completes (often "", sometimes several characters). */
  push(id: number): string {
    this.ids.push(id);
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const now = this.decode(this.ids.slice(this.prefix));
    if (now.length <= before.length || now.endsWith("\uFFFD") || !now.startsWith(before)) return "";
    this.prefix = this.read;
    this.read = this.ids.length;
    return now.slice(before.length);
  }

  /** The text still held back (an incomplete character at the end becomes U+FFFD). */
  flush(): string {
    if (this.read === this.ids.length) return "";
    const before = this.decode(this.ids.slice(this.prefix, this.read));
    const now = this.decode(this.ids.slice(this.prefix));
    this.prefix = this.read = this.ids.length;
    return now.startsWith(before) ? now.slice(before.length) : now;
  }
}
