#!/usr/bin/env node
// The runtime run directly, as the oracle of tests/test_api_serve.py: loads a bundle from
// disk (backend "auto", no shard cache: what `llmpack serve --api` does) and answers each
// request of a JSON list read from stdin with engine.chat.completions.create(request).
// Prints the list of answers (ChatCompletion objects, or {error: message}) as JSON.
//   node test/e2e/chat_direct.mjs BUNDLE_DIR < requests.json
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const runtime = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "dist", "llmpack.js");
const { createEngine } = await import(runtime);
const requests = JSON.parse(readFileSync(0, "utf8"));
const engine = await createEngine(process.argv[2], { cache: null });
const out = [];
try {
  for (const req of requests) {
    try {
      out.push(await engine.chat.completions.create({ ...req, stream: false }));
    } catch (e) {
      out.push({ error: e.message });
    }
  }
} finally {
  await engine.unload();
}
process.stdout.write(JSON.stringify(out) + "\n");
