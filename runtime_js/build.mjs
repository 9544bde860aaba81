// Builds the runtime into one ES module (dist/llmpack.js) that runs in a page, a Web
// Worker and Node, and the node:test suites (test/*.test.ts -> dist/test/*.test.js).
import { build } from "esbuild";
import { readdirSync } from "node:fs";

const lib = build({
  entryPoints: ["src/index.ts"],
  outfile: "dist/llmpack.js",
  bundle: true,
  format: "esm",
  // "neutral": no browser or Node shims; Node-only modules are reached through
  // dynamic `import("node:...")` behind runtime checks and stay external.
  platform: "neutral",
  mainFields: ["module", "main"],
  external: ["node:*"],
  target: "es2022",
  sourcemap: true,
  legalComments: "linked",
});

const tests = build({
  // *.long.ts: the long suites (npm run test:long; LLMPACK_LONG_TESTS=1 in scripts/test.sh)
  entryPoints: readdirSync("test").filter((f) => f.endsWith(".test.ts") || f.endsWith(".long.ts")).map((f) => `test/${f}`),
  outdir: "dist/test",
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  sourcemap: "inline",
  logLevel: "warning",
});

await Promise.all([lib, tests]);
