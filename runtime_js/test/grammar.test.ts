/**
 * Constrained decoding (src/grammar/): the output of a sampler whose logits pass
 * through a GrammarProcessor always matches the grammar, checked by real oracles:
 * JSON.parse and the ajv JSON-schema validator, and a GBNF grammar's own language.
 *
 * The logits are random (a seeded PRNG): the worst case for a grammar, as a random
 * model would give, with the real SmolLM2 tokenizer (49k byte-level BPE tokens). The
 * model-driven runs (a tiny random model and SmolLM2 on the Wasm backend) are in
 * tests/test_grammar.py.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import { GrammarCompilerCache, GrammarError, type GrammarProcessor } from "../src/grammar/constraint.js";
import { type GrammarSpec, responseFormatSpec } from "../src/grammar/response_format.js";
import { tokenBytes, Utf8Guard } from "../src/grammar/utf8.js";
import { grammarVocab, prependsSpace, vocabType } from "../src/grammar/vocab.js";
import { Prng, Sampler } from "../src/sampler.js";
import type { BundleTokenizer } from "../src/tokenizer.js";
import { requireComponent } from "./helpers.js";
import { smollm2Tokenizer, tokenizerCases } from "./reference.js";

const cases = tokenizerCases();
const skip = requireComponent("python", typeof cases === "string" && cases);

/** Random logits, uniform in [-scale, scale], from a seeded PRNG. */
function randomLogits(rng: Prng, n: number, scale = 8): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (rng.nextUint32() / 2 ** 31 - 1) * scale;
  return x;
}

/** Samples up to `max` tokens through `proc`; the text and whether a stop token ended it. */
function generate(tok: BundleTokenizer, proc: GrammarProcessor, seed: number, max: number, bias?: (logits: Float32Array) => void) {
  const rng = new Prng(seed);
  const sampler = new Sampler({ temperature: 1, seed });
  const ids: number[] = [];
  for (let i = 0; i < max; i++) {
    const logits = randomLogits(rng, 49152);
    bias?.(logits);
    proc.process(logits);
    const t = sampler.sample(logits);
    if (tok.eosTokenIds.has(t)) return { text: tok.decode(ids), stopped: true, ids };
    proc.accept(t);
    ids.push(t);
  }
  return { text: tok.decode(ids), stopped: false, ids };
}

/** Favours the tokens that close things (so random sampling ends within a few hundred tokens). */
function closers(tok: BundleTokenizer, boost = 8): (logits: Float32Array) => void {
  const ids = ['"', "}", "]", '"}', "},", '"]', "true", "false", ",", "0"].map((t) => tok.tokenId(t)).filter((x): x is number => x !== undefined);
  const eos = [...tok.eosTokenIds];
  return (logits) => {
    for (const id of [...ids, ...eos]) logits[id] = logits[id]! + boost;
  };
}

const SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 12 },
    age: { type: "integer", minimum: 0, maximum: 150 },
    tags: { type: "array", items: { type: "string", enum: ["a", "b", "c"] }, maxItems: 3 },
    admin: { type: "boolean" },
    kind: { enum: ["x", "y", 3] },
  },
  required: ["name", "age", "tags", "admin", "kind"],
  additionalProperties: false,
};

describe("vocabulary description", () => {
  test("decoder kinds map to XGrammar's vocab types", () => {
    assert.equal(vocabType({ decoder: { type: "ByteLevel" } }), "byte_level");
    assert.equal(vocabType({ decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }] } }), "byte_fallback");
    assert.equal(vocabType({ decoder: { type: "Metaspace", replacement: "▁" } }), "byte_fallback");
    assert.equal(vocabType({ decoder: null }), "raw");
    assert.equal(prependsSpace({ pre_tokenizer: { type: "Metaspace", prepend_scheme: "first" } }), true);
    assert.equal(prependsSpace({ normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }] } }), true);
    assert.equal(prependsSpace({ pre_tokenizer: { type: "ByteLevel" } }), false);
  });

  test("special and stop tokens have no text", () => {
    const v = grammarVocab({ decoder: { type: "ByteLevel" } }, ["<s>", "a", "</s>", "b"], new Set([0]), [2]);
    assert.deepEqual(v.tokens, ["", "a", "", "b"]);
    assert.deepEqual(v.stopTokenIds, [2]);
  });
});

describe("UTF-8 across tokens", () => {
  test("each state allows exactly the bytes that continue valid UTF-8 (TextDecoder as the oracle)", () => {
    // every single byte, a few multi-byte tokens, a stop token (id 300) and empty ones
    const tokens: Uint8Array[] = Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));
    tokens.push(Uint8Array.of(0xc3, 0xa9), Uint8Array.of(0xa9, 0x41), Uint8Array.of(0xe2, 0x82), Uint8Array.of(0x82, 0xac, 0xe2));
    while (tokens.length < 302) tokens.push(new Uint8Array(0));
    const guard = new Utf8Guard(tokens, [300], 302);
    const fatal = new TextDecoder("utf-8", { fatal: true });
    const valid = (bytes: number[]) => {
      try {
        fatal.decode(Uint8Array.from(bytes));
        return true;
      } catch {
        return false;
      }
    };
    const rng = new Prng(5);
    for (let run = 0; run < 300; run++) {
      let state = 0;
      const out: number[] = [];
      for (let i = 0; i < 12; i++) {
        const mask = guard.mask(state);
        const allowed = [...Array(302).keys()].filter((t) => (mask[t >> 5]! >>> (t & 31)) & 1);
        // a token is allowed iff the output can still become valid UTF-8 after it
        for (const t of [0x41, 0x80, 0xa0, 0xbf, 0xc0, 0xc3, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 256, 257, 258, 259]) {
          const next = [...out, ...tokens[t]!];
          const completable = [[], [0x80], [0x80, 0x80], [0x80, 0x80, 0x80], [0xa0, 0x80], [0x90, 0x80, 0x80]].some((tail) => valid([...next, ...tail]));
          assert.equal(allowed.includes(t), completable, `after ${out.map((b) => b.toString(16))} token ${t}`);
        }
        assert.equal(allowed.includes(300), state === 0, "the stop token only between characters");
        const t = allowed[rng.nextUint32() % allowed.length]!;
        out.push(...tokens[t]!);
        state = guard.step(state, t);
      }
    }
  });

  test("token bytes from byte-level and byte-fallback vocabularies", () => {
    assert.deepEqual([...tokenBytes(["Ġhi", "Ċ", "Ã©"], "byte_level")[0]!], [0x20, 0x68, 0x69]);
    assert.deepEqual([...tokenBytes(["Ċ"], "byte_level")[0]!], [0x0a]);
    assert.deepEqual([...tokenBytes(["Ã©"], "byte_level")[0]!], [0xc3, 0xa9]);
    assert.deepEqual([...tokenBytes(["<0xE2>", "▁hi", ""], "byte_fallback")[0]!], [0xe2]);
    assert.deepEqual([...tokenBytes(["▁hi"], "byte_fallback")[0]!], [0x20, 0x68, 0x69]);
    assert.equal(tokenBytes([""], "raw")[0]!.length, 0);
  });
});

describe("response_format", () => {
  test("the OpenAI forms and the grammar form are read; bad ones name the field", () => {
    assert.equal(responseFormatSpec(undefined), null);
    assert.equal(responseFormatSpec({ type: "text" }), null);
    assert.deepEqual(responseFormatSpec({ type: "json_object" }), { kind: "json_object" });
    assert.deepEqual(responseFormatSpec({ type: "json_schema", json_schema: { name: "p", schema: SCHEMA, strict: true } }), { kind: "json_schema", schema: SCHEMA });
    assert.deepEqual(responseFormatSpec({ type: "grammar", grammar: 'root ::= "a"' }), { kind: "grammar", grammar: 'root ::= "a"', root: undefined });
    assert.throws(() => responseFormatSpec({ type: "json_schema" }), /needs json_schema/);
    assert.throws(() => responseFormatSpec({ type: "json_schema", json_schema: { name: "bad name", schema: {} } }), /name must be/);
    assert.throws(() => responseFormatSpec({ type: "yaml" }), /"yaml" is not supported/);
    assert.throws(() => responseFormatSpec("json"), /must be an object/);
  });
});

describe("constrained decoding with the SmolLM2 tokenizer and random logits", { skip }, () => {
  const tok = skip ? (null as unknown as BundleTokenizer) : smollm2Tokenizer(cases);
  const cache = skip
    ? (null as unknown as GrammarCompilerCache)
    : new GrammarCompilerCache(() => grammarVocab(tok.tokenizerJson, tok.tokens(), tok.specialTokenIds(), tok.eosTokenIds), 49152);
  const ajv = new Ajv({ strict: false });

  test("json_schema: every sampled output that ends parses and validates against the schema", async () => {
    const validate = ajv.compile(SCHEMA);
    const spec: GrammarSpec = { kind: "json_schema", schema: SCHEMA };
    for (let seed = 1; seed <= 6; seed++) {
      const proc = await cache.processor(spec);
      const { text, stopped } = generate(tok, proc, seed, 400, closers(tok));
      assert.ok(stopped, `seed ${seed}: no stop token within 400 tokens: ${text}`);
      const value = JSON.parse(text);
      assert.ok(validate(value), `seed ${seed}: ${text}: ${ajv.errorsText(validate.errors)}`);
    }
  });

  test("json_object: an object, nothing else, and only the stop token once it closed", async () => {
    const proc = await cache.processor({ kind: "json_object" });
    const { text, stopped, ids } = generate(tok, proc, 7, 400, closers(tok, 14));
    assert.ok(stopped, text);
    const value = JSON.parse(text);
    assert.equal(typeof value, "object");
    assert.ok(!Array.isArray(value) && value !== null);
    // replaying the same tokens: the grammar is done, so the mask allows the stop tokens only
    const replay = await cache.processor({ kind: "json_object" });
    for (const t of ids) {
      assert.equal(replay.isDone(), false);
      replay.accept(t);
    }
    assert.equal(replay.isDone(), true);
    const logits = new Float32Array(49152);
    replay.process(logits);
    const allowed = [...logits.keys()].filter((i) => logits[i] !== -Infinity);
    assert.deepEqual(allowed, [...tok.eosTokenIds]);
  });

  test("a GBNF grammar: the output is in its language", async () => {
    const grammar = [
      "# a date, then a yes/no answer",
      'root ::= date " " answer',
      'date ::= year "-" month "-" day',
      "year ::= [12] [0-9] [0-9] [0-9]",
      'month ::= "0" [1-9] | "1" [0-2]',
      'day ::= "0" [1-9] | [12] [0-9] | "3" [01]',
      'answer ::= "yes" | "no"',
    ].join("\n");
    for (let seed = 1; seed <= 4; seed++) {
      const proc = await cache.processor({ kind: "grammar", grammar });
      const { text, stopped } = generate(tok, proc, seed, 100);
      assert.ok(stopped, text);
      assert.match(text, /^[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]) (yes|no)$/);
    }
  });

  test("the mask forbids exactly the tokens that cannot continue", async () => {
    const proc = await cache.processor({ kind: "grammar", grammar: 'root ::= "hello" " world"' });
    const logits = new Float32Array(49152);
    proc.process(logits);
    const allowed = [...logits.keys()].filter((i) => logits[i] !== -Infinity).map((i) => tok.decode([i]));
    assert.ok(allowed.length > 0);
    for (const t of allowed) assert.ok("hello world".startsWith(t), `${JSON.stringify(t)} is not a prefix of "hello world"`);
    assert.ok(allowed.includes("hello"));
    assert.throws(() => proc.accept(tok.tokenId("world")!), GrammarError);
  });

  test("a grammar or schema that does not compile is a GrammarError naming it", async () => {
    await assert.rejects(cache.processor({ kind: "grammar", grammar: "root ::= (" }), (e: Error) => e instanceof GrammarError && /^the grammar cannot be compiled: EBNF parser error at line 1, column 11/.test(e.message));
    await assert.rejects(cache.processor({ kind: "grammar", grammar: 'start ::= "a"' }), /root rule with name "root" is not found/);
    await assert.rejects(cache.processor({ kind: "json_schema", schema: { type: "object", properties: { a: { $ref: "#/nowhere" } }, required: ["a"] } }), /^GrammarError: the JSON schema cannot be compiled: .*nowhere/);
    // the engine keeps working
    const proc = await cache.processor({ kind: "grammar", grammar: 'root ::= "ok"' });
    const logits = new Float32Array(49152);
    proc.process(logits);
    assert.ok(logits[tok.tokenId("ok")!]! === 0);
  });
});
