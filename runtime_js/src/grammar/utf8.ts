/**
 * Keeps constrained output valid UTF-8 across tokens.
 *
 * A byte-level vocabulary has tokens that are single bytes, or end or begin inside a
 * character. XGrammar 0.1.27 lets lone lead or continuation bytes and overlong forms
 * through where its grammar takes "any character" (a JSON string), so a random model's
 * string can decode with U+FFFD in it, longer than its maxLength. This tracks where the
 * output stands in a UTF-8 character and allows, in each state, only the tokens whose
 * bytes continue valid UTF-8 from it; the stop tokens only between characters. Per step
 * it is one AND over the mask's words.
 */

const INVALID = -1;

/**
 * States: 0 between characters; 1..3 continuation bytes owed (any of 80..BF next);
 * 4..7 two or three owed where the next byte has a narrower range, as UTF-8 forbids
 * overlong forms, surrogates and code points past U+10FFFF (RFC 3629).
 */
const STATES = 8;
const NARROW: Record<number, { lo: number; hi: number; owed: number }> = {
  4: { lo: 0xa0, hi: 0xbf, owed: 2 }, // after E0
  5: { lo: 0x80, hi: 0x9f, owed: 2 }, // after ED
  6: { lo: 0x90, hi: 0xbf, owed: 3 }, // after F0
  7: { lo: 0x80, hi: 0x8f, owed: 3 }, // after F4
};

/** The state after `bytes` from `state`, or INVALID. */
function advance(state: number, bytes: Uint8Array): number {
  for (const b of bytes) {
    const narrow = NARROW[state];
    if (narrow) {
      if (b < narrow.lo || b > narrow.hi) return INVALID;
      state = narrow.owed - 1;
    } else if (state > 0) {
      if ((b & 0xc0) !== 0x80) return INVALID;
      state--;
    } else if (b < 0x80) {
      // ASCII
    } else if (b >= 0xc2 && b <= 0xdf) state = 1;
    else if (b === 0xe0) state = 4;
    else if (b === 0xed) state = 5;
    else if (b >= 0xe1 && b <= 0xef) state = 2;
    else if (b === 0xf0) state = 6;
    else if (b === 0xf4) state = 7;
    else if (b >= 0xf1 && b <= 0xf3) state = 3;
    else return INVALID; // a continuation byte with no lead, or a byte UTF-8 never uses
  }
  return state;
}

export class Utf8Guard {
  /** masks[state]: bit t of word t >> 5 set when token t may follow in that state */
  private readonly masks: Int32Array[];
  /** next[state * size + t]: the state after token t */
  private readonly next: Int8Array;

  /** `bytes[t]`: token t's output bytes (empty for special tokens); `size`: the mask's token count. */
  constructor(bytes: readonly Uint8Array[], stopTokenIds: readonly number[], readonly size: number) {
    const words = Math.ceil(size / 32);
    this.masks = Array.from({ length: STATES }, () => new Int32Array(words));
    this.next = new Int8Array(STATES * size).fill(INVALID);
    const stops = new Set(stopTokenIds);
    for (let t = 0; t < Math.min(size, bytes.length); t++) {
      const b = bytes[t]!; // (t < bytes.length)
      for (let state = 0; state < STATES; state++) {
        const after = b.length === 0 && stops.has(t) && state > 0 ? INVALID : advance(state, b);
        this.next[state * size + t] = after;
        if (after !== INVALID) this.masks[state]![t >> 5]! |= 1 << (t & 31);
      }
    }
  }

  mask(state: number): Int32Array {
    return this.masks[state]!; // (state in 0..STATES-1)
  }

  /** The state after `token` (a token the mask allowed). */
  step(state: number, token: number): number {
    const s = token < this.size ? this.next[state * this.size + token]! : INVALID;
    return s === INVALID ? 0 : s; // (only after a fallback past the mask: start afresh)
  }
}

/** GPT-2's byte-to-unicode alphabet, inverted: character -> byte. */
function byteLevelDecoder(): Map<string, number> {
  const direct = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const map = new Map<string, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) map.set(String.fromCodePoint(direct(b) ? b : next++), b);
  return map;
}

/** Each token's output bytes, from its stored text and the vocabulary type ("" stays empty). */
export function tokenBytes(tokens: readonly string[], vocabType: "byte_level" | "byte_fallback" | "raw"): Uint8Array[] {
  const utf8 = new TextEncoder();
  const byteLevel = vocabType === "byte_level" ? byteLevelDecoder() : null;
  return tokens.map((t) => {
    if (!t) return new Uint8Array(0);
    if (byteLevel) {
      const out: number[] = [];
      for (const ch of t) {
        const b = byteLevel.get(ch);
        if (b === undefined) return utf8.encode(t); // (an added token stored as plain text)
        out.push(b);
      }
      return Uint8Array.from(out);
    }
    if (vocabType === "byte_fallback") {
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
      return byte ? Uint8Array.of(parseInt(byte[1]!, 16)) : utf8.encode(t.replaceAll("▁", " "));
    }
    return utf8.encode(t);
  });
}
