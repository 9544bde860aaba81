/**
 * The manifest's `runtime.min_version` (docs/bundle.md): an older runtime refuses the
 * bundle with an error naming both versions; bundles without the field still load.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { readFileSync } from "node:fs";

import { ManifestError, parseManifest } from "../src/manifest.js";
import { RUNTIME_VERSION, compareVersions, parseVersion } from "../src/version.js";
import { makeChatBundle } from "./fixtures.js";

const bump = (v: string, i: number) => {
  const p = parseVersion(v)!;
  p[i]! += 1;
  for (let j = i + 1; j < 3; j++) p[j] = 0;
  return p.join(".");
};

describe("runtime version", () => {
  test("RUNTIME_VERSION is package.json's version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    assert.equal(RUNTIME_VERSION, pkg.version);
  });

  test("versions compare by number, not text", () => {
    assert.equal(compareVersions(parseVersion("0.10.0")!, parseVersion("0.9.9")!), 1);
    assert.equal(compareVersions(parseVersion("1.2.3")!, parseVersion("1.2.3")!), 0);
    assert.equal(parseVersion("1.2"), null);
    assert.equal(parseVersion("01.2.3"), null);
  });

  test("a bundle without runtime.min_version loads; one at or below this runtime loads", () => {
    const m = structuredClone(makeChatBundle().manifest) as any;
    delete m.runtime;
    assert.doesNotThrow(() => parseManifest(structuredClone(m)));
    for (const v of ["0.0.1", RUNTIME_VERSION]) assert.doesNotThrow(() => parseManifest({ ...structuredClone(m), runtime: { min_version: v } }));
  });

  test("a bundle needing a newer runtime is refused, naming both versions", () => {
    const m = structuredClone(makeChatBundle().manifest) as any;
    for (const i of [0, 1, 2]) {
      const need = bump(RUNTIME_VERSION, i);
      assert.throws(
        () => parseManifest({ ...structuredClone(m), runtime: { min_version: need } }),
        (e: Error) => e instanceof ManifestError && e.message.includes(`needs llmpack runtime ${need} or newer`) && e.message.includes(`this runtime is ${RUNTIME_VERSION}`),
      );
    }
    for (const bad of [{ min_version: "latest" }, { min_version: 1 }, "0.1.0", {}]) {
      assert.throws(() => parseManifest({ ...structuredClone(m), runtime: bad }), /"runtime.min_version" must be a version/);
    }
  });
});
