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
