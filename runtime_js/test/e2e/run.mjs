#!/usr/bin/env node
// End-to-end driver for tests/test_runtime_e2e.py:
//   node test/e2e/run.mjs --where node|chromium --bundle DIR --spec spec.json
// spec: {cases, chat?, dawnFlags?, registryUrl?, model? (e.g. "registry:id@1"), reload?}
// Serves the bundle on 127.0.0.1 with a request log, runs greedy_job.mjs, optionally a
// second load (reload: the persistent cache must serve every shard), and prints one
// JSON object: {first, reload?, requests: {first, reload}}.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { dawnToggles, startHarness } from "../../bench/harness.mjs";

const { values: o } = parseArgs({ options: { where: { type: "string", default: "node" }, bundle: { type: "string" }, spec: { type: "string" } } });
const spec = JSON.parse(readFileSync(o.spec, "utf8"));
const job = path.join(path.dirname(fileURLToPath(import.meta.url)), "greedy_job.mjs");
const cacheDir = o.where === "node" ? mkdtempSync(path.join(os.tmpdir(), "llmpack-e2e-cache-")) : undefined;
const toggles = dawnToggles(spec.dawnFlags ?? []);
const h = await startHarness({
  bundleDir: o.bundle,
  where: o.where,
  chromiumArgs: toggles.chromium,
  onConsole: (line) => console.error(line),
});
const since = (n) => h.log.slice(n);
try {
  const args = {
    cacheDir,
    registryUrl: spec.registryUrl,
    dawnFlags: o.where === "node" ? toggles.node : undefined,
    ...(spec.model ? { bundleUrl: spec.model } : {}),
  };
  const first = await h.run(job, { ...args, cases: spec.cases, chat: spec.chat });
  const out = { where: o.where, browser: await h.browserVersion(), first, requests: { first: since(0) } };
  if (spec.reload) {
    const n = h.log.length;
    out.reload = await h.run(job, { ...args, cases: spec.reload.cases ?? [] });
    out.requests.reload = since(n);
  }
  console.log(JSON.stringify(out));
} finally {
  await h.close();
  if (cacheDir) rmSync(cacheDir, { recursive: true, force: true });
}
