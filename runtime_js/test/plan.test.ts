import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { parseManifest } from "../src/manifest.js";
import {
  EntryProgram,
  PlanError,
  bufferBytes,
  checkCall,
  chooseVariant,
  forEachBlockPiece,
  parsePlan,
  planBytes,
  topKOf,
  weightBlocks,
} from "../src/plan.js";
import { type PlanDevice, PlanCalls, topCandidatesOf } from "../src/plan_calls.js";
import { CHUNK, WINDOW, makePlanBundle } from "./plan-fixture.js";

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x));

describe("parsePlan", () => {
  const b = makePlanBundle();
  const manifest = parseManifest(b.manifest);

  test("accepts the fixture's plan", () => {
    const p = parsePlan(clone(b.plan), manifest);
    assert.equal(p.prefill_chunk, CHUNK);
    assert.equal(p.kv_rewind_limit, undefined);
    assert.equal(parsePlan({ ...clone(b.plan), kv_rewind_limit: 7 }, manifest).kv_rewind_limit, 7);
  });

  test("rejects what a runtime cannot trust, naming the place", () => {
    const bad = (edit: (p: any) => void, re: RegExp) => {
      const p = clone(b.plan);
      edit(p);
      assert.throws(() => parsePlan(p, manifest), (e: Error) => e instanceof PlanError && re.test(e.message), re.source);
    };
    bad((p) => (p.version = 2), /version 2 is not supported/);
    bad((p) => (p.format = "x"), /format is "x"/);
    bad((p) => (p.variant_order = ["f16"]), /variant_order names a variant/);
    bad((p) => (p.entries.decode.dispatches[0].kernel = "nope"), /dispatch 0 \(block 0\): unknown kernel "nope"/);
    bad((p) => (p.entries.decode.dispatches[0].bindings[0][1] = "ghost"), /names unknown buffer "ghost"/);
    bad((p) => p.entries.decode.dispatches[0].bindings.pop(), /bindings 8 are not bound/);
    bad((p) => (p.entries.decode.dispatches[0].uniforms = ["seq_len"]), /1 uniform values for kernel fields/);
    bad((p) => (p.entries.prefill.dispatches[1].workgroups[0] = "eval(1)"), /unknown function eval/);
    bad((p) => (p.buffers["table:p0:1"].bytes += 4), /lie outside the part/);
    bad((p) => (p.buffers["table:p0:1"].part = "p9"), /has no part p9 of tensor table/);
    bad((p) => (p.buffers.logits.dtype = "f64"), /malformed/);
    bad((p) => delete p.entries.decode, /no "decode" entry point/);
    bad((p) => (p.entries.prefill.max_seq_len = 0), /plan entry prefill is malformed/);
    bad((p) => (p.entries.prefill.dispatches[0].bindings = { 8: "table:p0:0" }), /dispatch 0 \(block 0\) is malformed/);
    bad((p) => (p.entries.prefill.dispatches[0].bindings[0] = "tokens"), /not a \[binding, buffer\] pair/);
    bad((p) => delete p.kernels.pick.uniforms, /plan kernel pick is malformed/);
    bad((p) => (p.inputs.tokens = "nowhere"), /tokens buffer "nowhere" must be a u32 array/);
    bad((p) => (p.kv_rewind_limit = -1), /kv_rewind_limit must be a non-negative integer/);
    bad((p) => (p.kv_rewind_limit = "4"), /kv_rewind_limit must be a non-negative integer/);
  });

  test("the optional topk entry: its k, output and input are checked", () => {
    const withTopK = (edit: (p: any) => void = () => {}) => {
      const p = clone(b.plan) as any;
      p.entries.topk = { max_seq_len: 1, k: 4, dispatches: [] };
      p.buffers.topk = { kind: "output", dtype: "u32", elements: 10 };
      p.buffers.inv_temperature = { kind: "input", dtype: "f32", elements: 1 };
      p.outputs.topk = "topk";
      p.inputs.inv_temperature = "inv_temperature";
      edit(p);
      return p;
    };
    assert.equal(topKOf(parsePlan(withTopK(), manifest)), 4);
    assert.equal(topKOf(parsePlan(clone(b.plan), manifest)), 0); // older plans: none
    const refused = /the "topk" entry needs a count k, outputs.topk \(u32 \[2 k \+ 2\]\) and inputs.inv_temperature/;
    assert.throws(() => parsePlan(withTopK((p) => delete p.entries.topk.k), manifest), refused);
    assert.throws(() => parsePlan(withTopK((p) => (p.buffers.topk.elements = 9)), manifest), refused);
    assert.throws(() => parsePlan(withTopK((p) => delete p.outputs.topk), manifest), refused);
    assert.throws(() => parsePlan(withTopK((p) => (p.buffers.inv_temperature.dtype = "u32")), manifest), refused);
  });
});

describe("topCandidatesOf", () => {
  test("reads the topk output's pairs up to the first empty slot, the sum and the count", () => {
    const k = 4;
    const words = new Uint32Array(2 * k + 2);
    const f32 = new Float32Array(words.buffer);
    words.set([7, 0, 3, 0, 0xffffffff, 0, 0xffffffff, 0]);
    f32[1] = 2.5;
    f32[3] = -0;
    f32[2 * k] = 1.75;
    words[2 * k + 1] = 2;
    const top = topCandidatesOf(words, k, 100);
    assert.deepEqual([...top.ids], [7, 3]);
    assert.deepEqual([...top.logits], [2.5, -0]);
    assert.ok(Object.is(top.logits[1], -0)); // the logit's own bits
    assert.equal(top.sum, 1.75);
    assert.equal(top.finite, 2);
    assert.equal(top.vocab, 100);
  });
});

describe("buffers", () => {
  const plan = parsePlan(clone(makePlanBundle().plan));

  test("sizes follow docs/plan.md: align16, act is 2 bytes in f16", () => {
    assert.equal(bufferBytes({ kind: "weight", tensor: "t", part: "p", offset: 0, bytes: 6 }, "f32"), 16);
    assert.equal(bufferBytes({ kind: "activation", dtype: "act", elements: 9 }, "f16"), 32);
    assert.equal(bufferBytes({ kind: "activation", dtype: "act", elements: 9 }, "f32"), 48);
    assert.equal(bufferBytes({ kind: "kv_cache", dtype: "f32", elements: 9 }, "f16"), 48);
    assert.equal(bufferBytes({ kind: "input", dtype: "u32", elements: 0 }, "f32"), 16);
    assert.equal(planBytes(plan, "f32", "weight"), 64 * 64 * 4);
  });

  test("weight blocks map part ranges to buffers", () => {
    const blocks = weightBlocks(plan).get("table:p0")!;
    assert.deepEqual(blocks.map((b) => [b.buffer, b.offset, b.bytes]), [["table:p0:0", 0, 8192], ["table:p0:1", 8192, 8192]]);
    const pieces: unknown[] = [];
    forEachBlockPiece(blocks, 8000, 400, (blk, inBlock, inRange, n) => pieces.push([blk.buffer, inBlock, inRange, n]));
    assert.deepEqual(pieces, [["table:p0:0", 8000, 0, 192], ["table:p0:1", 0, 192, 208]]);
  });
});

describe("variants", () => {
  const plan = parsePlan({
    ...clone(makePlanBundle().plan),
    variant_order: ["f16", "f32"],
    variants: {
      f16: { features: ["shader-f16"], limits: {}, memory: {} },
      f32: { features: [], limits: {}, memory: {} },
    },
  });

  test("the first variant whose features the device has", () => {
    assert.equal(chooseVariant(plan, new Set(["shader-f16"])), "f16");
    assert.equal(chooseVariant(plan, new Set()), "f32");
    assert.equal(chooseVariant(plan, new Set(), "f16"), null);
    assert.equal(chooseVariant(plan, new Set(["shader-f16"]), "f32"), "f32");
  });
});

describe("EntryProgram", () => {
  const entry = {
    max_seq_len: 8,
    dispatches: [
      { kernel: "a", bindings: [], uniforms: ["seq_len", "0", "576"], workgroups: ["9", "cdiv(seq_len, 32)", "1"] },
      { kernel: "b", bindings: [], uniforms: ["seq_len", "past_len"], workgroups: ["cdiv(past_len + 1, 256)", "1", "1"] },
      { kernel: "a", bindings: [], uniforms: ["seq_len", "0", "576"], workgroups: ["9", "cdiv(seq_len,32)", "1"] },
      { kernel: "c", bindings: [], uniforms: ["seq_len * 192", "past_len * 192"], workgroups: ["min(cdiv(seq_len * 192, 256), 65535)", "1", "1"] },
    ],
  } as any;

  test("shares uniform slots and expressions, evaluates per call", () => {
    const p = new EntryProgram("prefill", entry);
    assert.equal(p.slots.length, 3);
    assert.deepEqual([...p.slotOf], [0, 1, 0, 2]);
    assert.equal(p.exprs.filter((e) => e === "cdiv(seq_len, 32)" || e === "cdiv(seq_len,32)").length, 1, "whitespace-insensitive dedupe");
    p.evaluate(40, 300);
    assert.deepEqual([...p.counts], [9, 2, 1, 2, 1, 1, 9, 2, 1, 30, 1, 1]);
    const u = new Uint32Array(2);
    assert.equal(p.fillSlot(2, u), true);
    assert.deepEqual([...u], [7680, 57600]);
    assert.equal(p.fillSlot(2, u), false, "unchanged values need no upload");
    p.evaluate(1, 300);
    assert.equal(p.fillSlot(2, u), true);
    assert.deepEqual([...u], [192, 57600]);
  });

  test("a negative or non-u32 value is a PlanError naming the expression", () => {
    const p = new EntryProgram("x", { max_seq_len: 1, dispatches: [{ kernel: "k", bindings: [], uniforms: ["seq_len * 4294967296"], workgroups: ["1", "1", "1"] }] } as any);
    assert.throws(() => p.evaluate(1, 0), /"seq_len \* 4294967296" = 4294967296 .* is not a u32/);
    const q = new EntryProgram("x", { max_seq_len: 1, dispatches: [{ kernel: "k", bindings: [], uniforms: ["past_len"], workgroups: ["cdiv(past_len, 0)", "1", "1"] }] } as any);
    assert.throws(() => q.evaluate(1, 0), PlanError);
  });

  test("checkCall keeps calls inside the entry's seq_len and the context window", () => {
    const plan = parsePlan(clone(makePlanBundle().plan));
    checkCall(plan, "prefill", CHUNK, WINDOW - CHUNK);
    assert.throws(() => checkCall(plan, "prefill", CHUNK + 1, 0), /seq_len 5 outside 1..4/);
    assert.throws(() => checkCall(plan, "decode", 1, WINDOW), /do not fit the context window of 32/);
    assert.throws(() => checkCall(plan, "nope", 1, 0), /no entry point "nope"/);
  });
});

describe("PlanCalls (the prefill/decode loop both backends share)", () => {
  /** A device that records what it is asked to do; its logits say how many runs it made. */
  function recorder() {
    const log: string[] = [];
    let runs = 0;
    let release = () => {};
    let gate: Promise<void> | null = null;
    const device: PlanDevice = {
      writeTokens: (t) => void log.push(`tokens ${[...t].join(",")}`),
      runEntry: async (entry, dims) => {
        log.push(`${entry} seq_len=${dims.seq_len} past_len=${dims.past_len}`);
        runs++;
        if (gate) await gate;
      },
      readLogits: async () => (log.push("read"), Float32Array.of(runs)),
    };
    const hold = () => (gate = new Promise((r) => (release = r)));
    return { log, device, hold, release: () => release() };
  }
  const plan = parsePlan(clone(makePlanBundle().plan)); // prefill_chunk 4, window 32
  const VOCAB = 64;

  test("a prompt runs in chunks of prefill_chunk at their past_len; logits are read once, at the end", async () => {
    const r = recorder();
    const calls = new PlanCalls("Test", plan, VOCAB, r.device);
    const logits = await calls.prefill(Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 3);
    assert.deepEqual([...logits], [3]);
    assert.deepEqual(r.log, [
      "tokens 1,2,3,4", "prefill seq_len=4 past_len=3",
      "tokens 5,6,7,8", "prefill seq_len=4 past_len=7",
      "tokens 9,10", "prefill seq_len=2 past_len=11",
      "read",
    ]);
    r.log.length = 0;
    await calls.decode(42, 13);
    assert.deepEqual(r.log, ["tokens 42", "decode seq_len=1 past_len=13", "read"]);
  });

  test("the window, the vocabulary and an empty prompt are checked before anything runs", async () => {
    const r = recorder();
    const calls = new PlanCalls("Test", plan, VOCAB, r.device);
    await assert.rejects(calls.prefill(new Int32Array(WINDOW - 1), 2), /prefill: positions 2..32 do not fit the context window of 32 tokens/);
    await assert.rejects(calls.decode(1, WINDOW), /decode: positions 32..32 do not fit the context window of 32/);
    await assert.rejects(calls.decode(1, -1), /do not fit the context window/);
    await assert.rejects(calls.prefill(Int32Array.from([1, VOCAB]), 0), /token id 64 is outside the vocabulary \(0..63\)/);
    await assert.rejects(calls.decode(-1, 0), /token id -1 is outside the vocabulary/);
    await assert.rejects(calls.prefill(new Int32Array(0), 0), /at least one token/);
    assert.deepEqual(r.log, []);
    await calls.prefill(new Int32Array(WINDOW), 0); // exactly the window: fine
  });

  test("one call at a time", async () => {
    const r = recorder();
    const calls = new PlanCalls("Test", plan, VOCAB, r.device);
    r.hold();
    const first = calls.decode(1, 0);
    await assert.rejects(calls.decode(2, 1), /the Test backend runs one call at a time/);
    r.release();
    await first;
    await calls.decode(2, 1); // free again
  });
});
