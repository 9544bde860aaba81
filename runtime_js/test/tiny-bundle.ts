/**
 * A tiny random Llama bundle packaged by the Python packager (test/fixtures/tiny_bundle.py),
 * made once and cached under node_modules/.cache, keyed by the sources that shape it
 * (the script, tests/checkpoints.py, packager/ and quantization/).
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { repoPath, runtimeDir } from "./helpers.js";

/** Hashes every file under `dir` (sorted; no caches, no links such as packager/web). */
function hashTree(hash: ReturnType<typeof createHash>, dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (e.name === "__pycache__" || e.isSymbolicLink()) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) hashTree(hash, p);
    else if (e.isFile()) hash.update(p.slice(dir.length)).update(readFileSync(p));
  }
}

/** The bundle's folder, or a string saying why it cannot be had. */
export function tinyBundle(): string | { missing: string } {
  const script = path.join(runtimeDir(), "test", "fixtures", "tiny_bundle.py");
  const hash = createHash("sha256").update(readFileSync(script)).update(readFileSync(repoPath("tests/checkpoints.py")));
  hashTree(hash, repoPath("packager"));
  hashTree(hash, repoPath("quantization"));
  const dir = path.join(runtimeDir(), "node_modules", ".cache", "llmpack-test", `tiny-${hash.digest("hex").slice(0, 16)}`);
  const bundle = path.join(dir, "bundle");
  if (!existsSync(path.join(bundle, "manifest.json"))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const r = spawnSync(process.env.PYTHON || "python3", [script, tmp], { encoding: "utf8", timeout: 300_000 });
    if (r.error || r.status === 3) {
      rmSync(tmp, { recursive: true, force: true });
      return { missing: `the Python packager is unavailable (${r.error?.message ?? r.stderr.trim().split("\n").at(-1)})` };
    }
    if (r.status !== 0) throw new Error(`${script} failed (${r.status}):\n${r.stderr.slice(-4000)}`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    // bundles of older sources are not used again
    const cache = path.dirname(dir);
    for (const old of readdirSync(cache)) if (/^tiny-[0-9a-f]{16}$/.test(old) && old !== path.basename(dir)) rmSync(path.join(cache, old), { recursive: true, force: true });
  }
  return bundle;
}
