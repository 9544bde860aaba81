/**
 * This runtime's version (package.json "version"; tests/test_site.py checks they agree).
 * A bundle names the oldest runtime that runs it in its manifest's
 * `"runtime": {"min_version"}` (docs/bundle.md); parseManifest refuses an older runtime.
 */
export const RUNTIME_VERSION = "0.1.0";

/** "MAJOR.MINOR.PATCH" as three numbers; null for anything else. */
export function parseVersion(text: unknown): [number, number, number] | null {
  const m = typeof text === "string" ? /^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$/.exec(text) : null;
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/** a < b: -1, a == b: 0, a > b: 1 (both parsed by parseVersion). */
export function compareVersions(a: [number, number, number], b: [number, number, number]): number {
  for (let i = 0; i < 3; i++) if (a[i]! !== b[i]!) return a[i]! < b[i]! ? -1 : 1;
  return 0;
}
