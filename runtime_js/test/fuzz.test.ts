/**
 * Property-based fuzzing (fast-check, fixed seeds) of the two parsers that read what a
 * bundle's author wrote: manifest.json and plan.json. Property: any JSON value gives a
 * parsed result or the parser's named error (ManifestError / PlanError), never a
 * TypeError or RangeError from deep inside. Inputs are random JSON, and valid documents
 * with a few of their fields replaced, deleted, or set to names that JavaScript objects
 * already have (`__proto__`, `constructor`, `toString`).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { ManifestError, parseManifest } from "../src/manifest.js";
import { PlanError, parsePlan } from "../src/plan.js";
import { makeChatBundle } from "./fixtures.js";
import { makePlanBundle } from "./plan-fixture.js";

const RUNS = 400;

type Path = (string | number)[];

/** Every path to a value inside `v` (objects and arrays), the root excluded. */
function pathsOf(v: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  if (v && typeof v === "object") {
    for (const [k, child] of Object.entries(v)) {
      const p = [...prefix, Array.isArray(v) ? Number(k) : k];
      out.push(p);
      pathsOf(child, p, out);
    }
  }
  return out;
}

/** A copy of `doc` with the value at `path` replaced by `value` (or deleted when undefined). */
function withValue(doc: unknown, path: Path, value: unknown): unknown {
  const copy = structuredClone(doc) as Record<string | number, any>;
  let node = copy;
  for (const k of path.slice(0, -1)) node = node[k];
  const last = path.at(-1)!;
  if (value === undefined) delete node[last];
  else node[last] = value;
  return copy;
}

const objectKeys = fc.constantFrom("__proto__", "constructor", "toString", "hasOwnProperty", "valueOf");
const nasty = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  objectKeys,
  fc.constantFrom(null, -1, 0, 1.5, 2 ** 53, 1e308, "", [], {}, [[]], { __proto__: null }),
  fc.dictionary(objectKeys, fc.jsonValue({ maxDepth: 2 })),
  fc.constant(undefined), // delete the field
);

/** Valid `doc` with 1 to 3 of its values replaced by nasty ones. */
function mutants(doc: unknown): fc.Arbitrary<unknown> {
  const paths = pathsOf(doc);
  return fc.array(fc.tuple(fc.nat({ max: paths.length - 1 }), nasty), { minLength: 1, maxLength: 3 }).map((edits) => {
    let out = doc;
    for (const [i, value] of edits) {
      const p = paths[i]!;
      try {
        out = withValue(out, p, value);
      } catch {
        // an earlier edit removed the path's parent: skip this one
      }
    }
    return out;
  });
}

/** Runs `parse` on a JSON round-trip of `input` (what JSON.parse would hand it) and checks the outcome. */
function parsesOrNamed(parse: (json: unknown) => unknown, named: new (...a: any[]) => Error) {
  return (input: unknown) => {
    const json = input === undefined ? undefined : JSON.parse(JSON.stringify(input) ?? "null");
    try {
      parse(json);
    } catch (e) {
      if (!(e instanceof named)) throw new Error(`${(e as Error)?.name}: ${(e as Error)?.message} for ${JSON.stringify(json)?.slice(0, 400)}`);
    }
  };
}

describe("fuzzing the manifest parser", () => {
  const manifest = makeChatBundle().manifest;

  test("valid manifests still parse", () => {
    assert.doesNotThrow(() => parseManifest(structuredClone(manifest)));
  });

  test(`random JSON (${RUNS} cases): a Manifest or a ManifestError`, () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }), parsesOrNamed(parseManifest, ManifestError)), { seed: 15, numRuns: RUNS });
  });

  test(`mutated manifests (${RUNS} cases): a Manifest or a ManifestError`, () => {
    fc.assert(fc.property(mutants(manifest), parsesOrNamed(parseManifest, ManifestError)), { seed: 15, numRuns: RUNS });
  });

  test("deep nesting in any field is a ManifestError", () => {
    let deep: unknown = 1;
    for (let i = 0; i < 20000; i++) deep = [deep];
    for (const p of [["shards", 0], ["files", 0], ["tensors", 0], ["model", "config", "vocab_size"], ["format"]]) {
      assert.throws(() => parseManifest(withValue(manifest, p, deep)), ManifestError);
    }
  });
});

describe("fuzzing the plan parser", () => {
  const b = makePlanBundle();
  const manifest = parseManifest(structuredClone(b.manifest));

  test("the valid plan still parses", () => {
    assert.doesNotThrow(() => parsePlan(structuredClone(b.plan), manifest));
  });

  test(`random JSON (${RUNS} cases): a Plan or a PlanError`, () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }), parsesOrNamed((j) => parsePlan(j, manifest), PlanError)), { seed: 15, numRuns: RUNS });
  });

  test(`mutated plans (${RUNS} cases each, with and without a manifest): a Plan or a PlanError`, () => {
    fc.assert(fc.property(mutants(b.plan), parsesOrNamed((j) => parsePlan(j, manifest), PlanError)), { seed: 15, numRuns: RUNS });
    fc.assert(fc.property(mutants(b.plan), parsesOrNamed((j) => parsePlan(j), PlanError)), { seed: 16, numRuns: RUNS });
  });
});
