// Builds the runtime into one ES module (dist/llmpack.js) that runs in a page, a Web
// Worker and Node, the node:test suites (test/*.test.ts -> dist/test/*.test.js) and the
// Node host of `llmpack serve --api` (dist/api_host.js).
import { build } from "esbuild";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";

/**
 * @mlc-ai/web-xgrammar ships one UMD file (Emscripten output with its Wasm inlined) that
 * neither imports as an ES module in Node 20 (it calls `require` and reads `__filename`)
 * nor exports a synchronous token mask (getNextTokenBitmask() is async; the sampler's
 * processors are not). Each rewrite below must match the pinned version exactly: a
 * new version that changed the file fails the build here instead of at run time.
 */
const XGRAMMAR_REWRITES = [
  // UMD header -> a plain object that the module exports
  [/^\(function \(global, factory\) \{[\s\S]*?\}\)\(this, \(function \(exports\) \{ 'use strict';/, "const xgrammar = {};\n(function (factory) { factory(xgrammar); })((function (exports) { 'use strict';", 1],
  // Node: the module's own URL without CommonJS
  ["require('u' + 'rl').pathToFileURL(__filename).href", "import.meta.url", 3],
  ["await import('module')", "await import('node:module')", 1],
  // an error is printed, then the C++ code aborts: keep the message for the exception instead
  ["binding = await Module();", "binding = await Module({ printErr: (line) => { if (!String(line).startsWith(\"Aborted(\")) lastMessage = String(line); } });", 1],
  ["let binding = null;", "let binding = null;\n  let lastMessage = \"\";\n  exports.takeMessage = () => { const m = lastMessage; lastMessage = \"\"; return m; };", 1],
  // the mask, synchronously (the binding is ready once any async factory returned)
  [
    "exports.CompiledGrammar = CompiledGrammar;",
    "exports.nextTokenBitmask = (matcher) => { const v = matcher.handle.GetNextTokenBitmask(matcher.vocab_size); " +
      "try { return binding.vecIntToView(v).slice(); } finally { v.delete(); } };\n  exports.CompiledGrammar = CompiledGrammar;",
    1,
  ],
];

const xgrammarAsModule = {
  name: "xgrammar-as-module",
  setup(b) {
    // (resolved here so that the test build, which leaves other packages external, bundles it too)
    b.onResolve({ filter: /^@mlc-ai\/web-xgrammar$/ }, () => ({ path: createRequire(import.meta.url).resolve("@mlc-ai/web-xgrammar") }));
    b.onLoad({ filter: /web-xgrammar[\\/]lib[\\/]index\.js$/ }, async (args) => {
      let src = await readFile(args.path, "utf8");
      for (const [from, to, count] of XGRAMMAR_REWRITES) {
        const found = typeof from === "string" ? src.split(from).length - 1 : (src.match(new RegExp(from, "g")) ?? []).length;
        if (found !== count) throw new Error(`${args.path}: expected ${count} of ${from}, found ${found}; update XGRAMMAR_REWRITES in build.mjs for this version`);
        src = typeof from === "string" ? src.replaceAll(from, to) : src.replace(from, to);
      }
      return { contents: `${src}\nexport default xgrammar;\n`, loader: "js" };
    });
  },
};

rmSync("dist/types", { recursive: true, force: true }); // no declarations of removed modules

const lib = build({
  // llmpack.js, and xgrammar.js (the grammar engine) loaded by it on the first
  // constrained request: pages that never ask for structured output never fetch it
  entryPoints: { llmpack: "src/index.ts" },
  outdir: "dist",
  splitting: true,
  chunkNames: "[name]",
  plugins: [xgrammarAsModule],
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
}).then(hideNodeImports);

/**
 * The runtime reaches Node's modules only through `await import("node:...")` behind
 * runtime checks. An app that bundles the npm package for the web (esbuild, webpack,
 * Vite) would try to resolve those and fail, so the built files pass the name through
 * `String(...)`, which bundlers do not evaluate (they fold `"node:" + "fs"`), with the
 * ignore comments webpack and Vite read.
 */
function hideNodeImports() {
  for (const file of ["dist/llmpack.js", "dist/xgrammar.js"]) {
    const src = readFileSync(file, "utf8");
    const out = src.replace(/\bimport\("(node:[a-z_/]+)"\)/g, 'import(/* webpackIgnore: true */ /* @vite-ignore */ String("$1"))');
    if (/\bimport\(\s*["']node:/.test(out)) throw new Error(`${file}: an import("node:...") is left that bundlers would resolve`);
    writeFileSync(file, out);
  }
}

const tests = build({
  // *.long.ts: the long suites (npm run test:long; LLMPACK_LONG_TESTS=1 in scripts/test.sh)
  entryPoints: readdirSync("test").filter((f) => f.endsWith(".test.ts") || f.endsWith(".long.ts")).map((f) => `test/${f}`),
  outdir: "dist/test",
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external", // (but xgrammar: the tests run the patched module, as the runtime does)
  plugins: [xgrammarAsModule],
  sourcemap: "inline",
  logLevel: "warning",
});

// Type declarations for the npm package (dist/types/*.d.ts, package.json "types"): tsc
// emits them from src alone (tsconfig.types.json), while esbuild writes the JavaScript.
// The package has no dependencies (esbuild bundles them all), so the declarations must
// not name another package either: web-xgrammar's own declarations, which the grammar
// API's types refer to, are copied into dist/types/vendor/ and referred to there.
const VENDORED_TYPES = { "@mlc-ai/web-xgrammar": "vendor/web-xgrammar/index.js" };

function vendorTypes() {
  const require = createRequire(import.meta.url);
  for (const [name, target] of Object.entries(VENDORED_TYPES)) {
    const lib = path.dirname(require.resolve(name));
    const dest = path.join("dist/types", path.dirname(target));
    mkdirSync(dest, { recursive: true });
    for (const f of readdirSync(lib).filter((f) => f.endsWith(".d.ts"))) copyFileSync(path.join(lib, f), path.join(dest, f));
  }
  const files = readdirSync("dist/types", { recursive: true }).filter((f) => f.endsWith(".d.ts") && !f.startsWith("vendor"));
  for (const f of files) {
    const file = path.join("dist/types", f);
    let src = readFileSync(file, "utf8");
    for (const [name, target] of Object.entries(VENDORED_TYPES)) {
      let rel = path.relative(path.dirname(f), target).split(path.sep).join("/");
      if (!rel.startsWith(".")) rel = `./${rel}`;
      src = src.replaceAll(`from "${name}"`, `from "${rel}"`);
    }
    const bare = src.match(/\bfrom "(?![./])[^"]+"|\bimport\("(?![./])[^"]+"\)/);
    if (bare) throw new Error(`${file} refers to another package (${bare[0]}): add it to VENDORED_TYPES in build.mjs or keep it out of the public types`);
    writeFileSync(file, src);
  }
}

const types = new Promise((resolve, reject) => {
  const pkg = createRequire(import.meta.url).resolve("typescript/package.json");
  const tsc = path.join(path.dirname(pkg), "bin", "tsc");
  execFile(process.execPath, [tsc, "-p", "tsconfig.types.json"], (err, stdout, stderr) =>
    err ? reject(new Error(`type declarations: tsc failed\n${stdout}${stderr}`)) : resolve());
}).then(vendorTypes);

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

await Promise.all([lib, tests, types, apiHost]);
