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
  weightBlocks,
} from "../src/plan.js";
import { CHUNK, WINDOW, makePlanBundle } from "./plan-fixture.js";

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x));

describe("parsePlan", () => {
  const b = makePlanBundle();
  const manifest = parseManifest(b.manifest);

  test("accepts the fixture's plan", () => {
    const p = parsePlan(clone(b.plan), manifest);
    assert.equal(p.prefill_chunk, CHUNK);
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
