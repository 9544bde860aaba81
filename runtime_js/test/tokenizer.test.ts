import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { BundleTokenizer } from "../src/tokenizer.js";
import { IncrementalDecoder } from "../src/detokenizer.js";
import { StopMatcher } from "../src/stop.js";
import { requireComponent } from "./helpers.js";
import { smollm2Tokenizer, tokenizerCases } from "./reference.js";

const cases = tokenizerCases();
const skip = requireComponent("python", typeof cases === "string" && cases);

describe("SmolLM2 tokenizer against Python tokenizers", { skip }, () => {
  const c = cases as Exclude<typeof cases, string>;
  const tok = skip ? (null as unknown as BundleTokenizer) : smollm2Tokenizer(cases);

  test("encode matches, with and without special tokens", () => {
    for (const t of c.texts) {
      assert.deepEqual(tok.encode(t.text, { addSpecialTokens: false }), t.ids, JSON.stringify(t.text));
      assert.deepEqual(tok.encode(t.text), t.ids_special, JSON.stringify(t.text));
    }
  });

  test("decode matches, keeping and skipping special tokens", () => {
    for (const t of c.texts) {
      assert.equal(tok.decode(t.ids, { skipSpecialTokens: false }), t.decoded, JSON.stringify(t.text));
      assert.equal(tok.decode(t.ids), t.decoded_skip, JSON.stringify(t.text));
    }
  });

  test("chat template renders as transformers' apply_chat_template", () => {
    for (const chat of c.chats) {
      assert.equal(tok.applyChatTemplate(chat.messages), chat.rendered);
      assert.deepEqual(tok.encodeChat(chat.messages), chat.ids);
    }
  });

  test("EOS ids come from the manifest and the eos token", () => {
    assert.ok(tok.eosTokenIds.has(c.eos_token_id));
    assert.equal(tok.tokenId("<|im_end|>"), c.eos_token_id);
  });

  test("streaming deltas concatenate to the full decode and never split a character", () => {
    for (const t of c.texts) {
      const dec = tok.streamDecoder();
      const deltas = t.ids.map((id) => dec.push(id));
      deltas.push(dec.flush());
      assert.equal(deltas.join(""), t.decoded_skip, JSON.stringify(t.text));
      if (!t.text.includes("\uFFFD")) for (const d of deltas) assert.ok(!d.includes("\uFFFD"), JSON.stringify(d));
    }
    // Each emoji of this text is several byte-level tokens.
    const ids = tok.encode("🎉👋🏽", { addSpecialTokens: false });
    assert.ok(ids.length > 2);
    const dec = tok.streamDecoder();
    const seen = ids.map((id) => dec.push(id)).filter((d) => d);
    assert.deepEqual(seen, ["🎉", "👋", "🏽"]);
  });
});

describe("incremental decoder", () => {
  test("holds back replacement characters and keeps context for leading spaces", () => {
    // A toy decoder: ids are bytes of UTF-8; a leading space is stripped like Metaspace.
    const decode = (ids: number[]) => new TextDecoder().decode(new Uint8Array(ids)).replace(/^ /, "");
    const bytes = [...new TextEncoder().encode("a é 日本 🙂 b")];
    const d = new IncrementalDecoder(decode);
    const out = bytes.map((b) => d.push(b));
    assert.equal(out.join("") + d.flush(), decode(bytes));
    assert.ok(out.every((s) => !s.includes("\uFFFD")));
    const cut = new IncrementalDecoder(decode);
    cut.push(0xf0);
    cut.push(0x9f);
    assert.equal(cut.flush(), "\uFFFD");
  });
});

describe("stop strings", () => {
  test("a stop string split across deltas is found and not emitted", () => {
    const m = new StopMatcher(["<|end|>", "\n\n"]);
    const out: string[] = [];
    for (const d of ["Hello", " wor", "ld<|e", "nd", "|> trailing"]) {
      const r = m.push(d);
      out.push(r.text);
      if (r.stop) break;
    }
    assert.equal(out.join(""), "Hello world");
    assert.ok(m.isStopped);
  });

  test("a held-back prefix that does not complete is released", () => {
    const m = new StopMatcher(["STOP"]);
    assert.deepEqual(m.push("abc ST"), { text: "abc ", stop: false });
    assert.deepEqual(m.push("O"), { text: "", stop: false });
    assert.deepEqual(m.push("P!"), { text: "", stop: true });
    const n = new StopMatcher(["STOP"]);
    assert.deepEqual(n.push("x STO"), { text: "x ", stop: false });
    assert.deepEqual(n.push("RM"), { text: "STORM", stop: false });
    assert.deepEqual(n.push("ST"), { text: "", stop: false });
    assert.equal(n.flush(), "ST");
  });

  test("the earliest of several stop strings wins; no stops passes text through", () => {
    const m = new StopMatcher(["bc", "abcd"]);
    assert.deepEqual(m.push("xabcd"), { text: "x", stop: true });
    const none = new StopMatcher([]);
    assert.deepEqual(none.push("anything"), { text: "anything", stop: false });
  });
});
