import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { evalExpr, ExprError } from "../src/expr.js";
import { repoPath } from "./helpers.js";

const data = JSON.parse(readFileSync(repoPath("tests/data/expr_cases.json"), "utf8")) as {
  env: Record<string, number>;
  cases: [string, number][];
  errors: string[];
};

test("shared cases evaluate to their values", () => {
  for (const [src, want] of data.cases) assert.equal(evalExpr(src, data.env), want, src);
});

test("shared error cases throw ExprError", () => {
  for (const src of data.errors) assert.throws(() => evalExpr(src, data.env), ExprError, JSON.stringify(src));
});

test("precedence, floor division and modulo follow Python", () => {
  const env = { a: 7, b: 2 };
  assert.equal(evalExpr("a - b - 1", env), 4);
  assert.equal(evalExpr("a / b * b", env), 6);
  assert.equal(evalExpr("b - a / 2", env), -1);
  assert.equal(evalExpr("(b - a) / 2", env), -3); // floor, not truncation
  assert.equal(evalExpr("(b - a) % 3", env), 1);
  assert.equal(evalExpr("cdiv(a, b) + cdiv(8, b)", env), 8);
  assert.equal(evalExpr(12, env), 12);
});

test("rejects malformed input and unsafe names", () => {
  for (const src of ["1 +* 2", "(1", "1)", "min(1, 2, 3)", "cdiv(1 2)", "a b", "constructor", "toString", "1.5", "0x10", "a[0]"]) {
    assert.throws(() => evalExpr(src, { a: 1 }), ExprError, src);
  }
});

test("a cached parse still reads the current environment", () => {
  assert.equal(evalExpr("seq_len * 2", { seq_len: 3 }), 6);
  assert.equal(evalExpr("seq_len * 2", { seq_len: 5 }), 10);
});
