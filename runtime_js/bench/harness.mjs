// Runs a "job" module (an ES module exporting `run(args)`) with the built runtime, in
// Node or in headless Chromium, against a bundle served over HTTP on 127.0.0.1 with a
// request log. Used by bench.mjs (llmpack bench) and the end-to-end tests.
//
//   const h = await startHarness({ bundleDir, where: "chromium" });
//   const out = await h.run(jobFile, args);      // args.runtimeUrl / args.bundleUrl are set
//   h.requests("bundle/shards/");                 // request count by path prefix
//   await h.close();
import { createReadStream, existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const RUNTIME_DIR = path.resolve(here, "..");
const DIST = path.join(RUNTIME_DIR, "dist");

export const CHROMIUM_ARGS = [
  "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
];

/**
 * Dawn toggles (e.g. "disable_workgroup_init") as Node's Dawn options and as Chromium
 * switches. Node needs allow_unsafe_apis for such toggles; Chromium's
 * --enable-unsafe-webgpu grants it.
 */
export function dawnToggles(toggles = []) {
  if (!toggles.length) return { node: undefined, chromium: [] };
  return {
    node: [`enable-dawn-features=allow_unsafe_apis,${toggles.join(",")}`],
    chromium: [`--enable-dawn-features=${toggles.join(",")}`],
  };
}

const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".html": "text/html", ".map": "application/json", ".wgsl": "text/plain", ".wasm": "application/wasm" };

/** Serves `mounts` ({"/prefix/": dir}) on 127.0.0.1; logs every request path (without the leading "/"). */
export async function serveMounts(mounts) {
  const log = [];
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url, "http://x").pathname);
    log.push(urlPath.slice(1));
    // cross-origin isolated (as `llmpack serve`), so that the Wasm backend can use threads
    res.setHeader("cross-origin-opener-policy", "same-origin");
    res.setHeader("cross-origin-embedder-policy", "require-corp");
    res.setHeader("cross-origin-resource-policy", "same-origin");
    if (urlPath === "/" || urlPath === "/index.html") {
      res.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><link rel=icon href="data:,"><title>llmpack harness</title>');
      return;
    }
    const prefix = Object.keys(mounts).find((p) => urlPath.startsWith(p));
    const root = prefix && path.resolve(mounts[prefix]);
    const file = root && path.resolve(root, urlPath.slice(prefix.length));
    let size = -1;
    try {
      if (file && (file === root || file.startsWith(root + path.sep))) size = statSync(file).isFile() ? statSync(file).size : -1;
    } catch {}
    if (size < 0) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": size, "content-type": TYPES[path.extname(file)] ?? "application/octet-stream", "cache-control": "no-cache" });
    createReadStream(file).pipe(res);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    log,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/**
 * Starts the server (and Chromium when where === "chromium"). Options: bundleDir,
 * where ("node" | "chromium"), chromium (path), chromiumArgs (extra switches),
 * mounts (more {"/prefix/": dir}).
 */
export async function startHarness({ bundleDir, where = "node", chromium = process.env.CHROMIUM || "/usr/bin/chromium", chromiumArgs = [], mounts = {}, onConsole } = {}) {
  if (!existsSync(path.join(DIST, "llmpack.js"))) throw new Error(`${DIST}/llmpack.js is missing: run npm run build in ${RUNTIME_DIR}`);
  const jobs = new Map(); // served job folders
  const allMounts = { "/dist/": DIST, ...mounts };
  if (bundleDir) allMounts["/bundle/"] = bundleDir;
  const server = await serveMounts(allMounts);
  let browser = null;
  let page = null;
  let userDir = null;
  if (where === "chromium") {
    const require = createRequire(path.join(RUNTIME_DIR, "package.json"));
    const { chromium: pw } = require("playwright-core");
    if (!existsSync(chromium)) throw new Error(`no Chromium at ${chromium}`);
    userDir = mkdtempSync(path.join(os.tmpdir(), "llmpack-chromium-"));
    browser = await pw.launchPersistentContext(userDir, { executablePath: chromium, headless: true, args: [...CHROMIUM_ARGS, ...chromiumArgs] });
    page = browser.pages()[0] ?? (await browser.newPage());
    page.on("console", (m) => onConsole?.(`[page ${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => onConsole?.(`[page error] ${e.message}`));
    await page.goto(server.url);
  } else if (where !== "node") {
    throw new Error(`--where must be node or chromium, not ${where}`);
  }
  return {
    where,
    url: server.url,
    bundleUrl: `${server.url}bundle/`,
    log: server.log,
    requests: (prefix) => server.log.filter((p) => p.startsWith(prefix)).length,
    /** Runs job.run(args) with args.runtimeUrl and args.bundleUrl filled in. */
    async run(jobFile, args = {}) {
      const dir = path.dirname(path.resolve(jobFile));
      if (where === "node") {
        const mod = await import(pathToFileURL(path.resolve(jobFile)).href);
        return mod.run({ runtimeUrl: pathToFileURL(path.join(DIST, "llmpack.js")).href, bundleUrl: `${server.url}bundle/`, ...args });
      }
      if (!jobs.has(dir)) {
        const prefix = `/job${jobs.size}/`;
        jobs.set(dir, prefix);
        allMounts[prefix] = dir; // (mounts are looked up per request)
      }
      const jobUrl = `${server.url}${jobs.get(dir).slice(1)}${path.basename(jobFile)}`;
      const full = { runtimeUrl: `${server.url}dist/llmpack.js`, bundleUrl: `${server.url}bundle/`, ...args };
      // The module URL is an argument so that nothing rewrites the import.
      return page.evaluate(async ([url, a]) => (await import(url)).run(a), [jobUrl, full]);
    },
    /** "HeadlessChrome/131.0.6778.85" and the like; null in Node. */
    async browserVersion() {
      if (!page) return null;
      const ua = await page.evaluate(() => navigator.userAgent);
      return /(Headless)?Chrome\/[\d.]+/.exec(ua)?.[0] ?? ua;
    },
    async close() {
      await browser?.close().catch(() => {});
      await server.close();
      if (userDir) rmSync(userDir, { recursive: true, force: true });
    },
  };
}
