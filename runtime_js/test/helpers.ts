import { test } from "node:test";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { existsSync } from "node:fs";

/** runtime_js/, found from this file whether it runs from test/ or dist/test/. */
export function runtimeDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) dir = path.dirname(dir);
  return dir;
}

/** A path relative to the repository root (runtime_js/..). */
export function repoPath(rel: string): string {
  return path.join(runtimeDir(), "..", rel);
}

/**
 * A missing component fails the run: with `missing` (the reason it is missing) this
 * registers a failing test and returns the reason, to skip the suites that need it;
 * unless $LLMPACK_ALLOW_MISSING (comma-separated, as in tests/conftest.py) names the
 * component, then the suites are only skipped. `missing` false: nothing is missing.
 */
export function allowedMissing(component: string): boolean {
  return (process.env.LLMPACK_ALLOW_MISSING ?? "").split(",").map((s) => s.trim()).includes(component);
}

export function requireComponent(component: string, missing: string | false): string | false {
  if (!missing) return false;
  if (allowedMissing(component)) return `${missing} (allowed by LLMPACK_ALLOW_MISSING)`;
  test(`${component} is available`, () => {
    throw new Error(`${component} is missing: ${missing}. Install it, or set LLMPACK_ALLOW_MISSING=${component} to skip what needs it`);
  });
  return missing;
}

/** Every item of an async iterable (a streamed completion's chunks), in order. */
export async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const c of stream) out.push(c);
  return out;
}
