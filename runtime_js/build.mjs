// Builds the runtime into one ES module (dist/llmpack.js) that runs in a page, a Web
// Worker and Node, the node:test suites (test/*.test.ts -> dist/test/*.test.js) and the
// Node host of `llmpack serve --api` (dist/api_host.js).
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

// The Node process behind `llmpack serve --api` (dist/api_host.js): it imports the runtime
// as its sibling ./llmpack.js instead of bundling a second copy.
const runtimeAsSibling = {
  name: "runtime-as-sibling",
  setup(b) {
    b.onResolve({ filter: /^\.\.\/index\.js$/ }, () => ({ path: "./llmpack.js", external: true }));
  },
};
const apiHost = build({
  entryPoints: ["src/node/api_host.ts"],
  outfile: "dist/api_host.js",
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  plugins: [runtimeAsSibling],
  logLevel: "warning",
});

await Promise.all([lib, tests, apiHost]);
