// Drives a static site written by `llmpack site` in headless Chromium (playwright-core):
// the page lists its models from models.json, shows the model card, loads the model on
// the runtime's own backend choice, and answers one question greedily (temperature 0).
// Run by tests/test_site.py, which serves the site folder with a plain static server (no
// COOP/COEP headers); it prints one JSON line of observations, which the test checks
// against the reference.
//
// Input: env LLMPACK_SITE_TEST = {url, modelId, chromium, question, maxTokens, screenshot?, futureModelId?}.
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../runtime_js/package.json"));
const { chromium } = require("playwright-core");

const cfg = JSON.parse(process.env.LLMPACK_SITE_TEST);

async function waitState(page, states, timeout) {
  const list = [].concat(states);
  await page.waitForFunction((s) => s.includes(document.body.dataset.state), list, { timeout, polling: 100 });
  return page.evaluate(() => document.body.dataset.state);
}

async function main() {
  const userDir = mkdtempSync(path.join(tmpdir(), "llmpack-site-chromium-"));
  const context = await chromium.launchPersistentContext(userDir, {
    executablePath: cfg.chromium,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
  });
  const out = { console: [], failed: [] };
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (m) => m.type() === "error" && out.console.push(m.text()));
    page.on("pageerror", (e) => out.console.push(`pageerror: ${e.message}`));
    page.on("response", (r) => r.status() >= 400 && out.failed.push(`${r.status()} ${r.url()}`));
    await page.goto(cfg.url);
    await page.waitForSelector(`.model[data-id="${cfg.modelId}"]`, { timeout: 30_000 });
    out.isolated = await page.evaluate(() => self.crossOriginIsolated);
    out.models = await page.evaluate(() => window.llmpackDemo.state.models.map((m) => ({ id: m.id, url: m.url })));
    await page.click(`.model[data-id="${cfg.modelId}"] input`);
    out.card = await page.evaluate(() => {
      const box = document.getElementById("model-card");
      const fields = {};
      for (const dd of box.querySelectorAll("dd")) fields[dd.dataset.field] = dd.textContent;
      return { hidden: box.hidden, fields };
    });
    // greedy: temperature 0, as a user sets it with the slider
    await page.evaluate(() => {
      const t = document.getElementById("temperature");
      t.value = "0";
      t.dispatchEvent(new Event("input", { bubbles: true }));
    });
    await page.fill("#max-tokens", String(cfg.maxTokens));
    await page.dispatchEvent("#max-tokens", "change");
    await page.click("#load");
    out.loadState = await waitState(page, ["ready", "error"], 300_000);
    out.backend = await page.evaluate(() => window.llmpackDemo.state.engine?.backendInfo?.name ?? null);
    out.notices = await page.evaluate(() => [...document.querySelectorAll("#notices .notice")].map((n) => n.textContent));
    if (out.loadState === "ready") {
      await page.fill("#prompt", cfg.question);
      await page.press("#prompt", "Enter");
      await waitState(page, "generating", 10_000).catch(() => {});
      await waitState(page, ["ready", "error"], 600_000);
      out.messages = await page.evaluate(() => window.llmpackDemo.state.messages);
      out.meta = await page.evaluate(() => [...document.querySelectorAll(".msg.assistant .meta")].map((m) => m.textContent));
      if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot });
    }
    if (cfg.futureModelId) {
      // a bundle whose manifest asks for a newer runtime than the site's: refused at load, and said so
      await page.click(`.model[data-id="${cfg.futureModelId}"] input`);
      await page.click("#load");
      out.futureState = await waitState(page, ["ready", "error"], 120_000);
      out.futureNotices = await page.evaluate(() => [...document.querySelectorAll("#notices .notice")].map((n) => n.textContent));
    }
  } finally {
    await context.close();
    rmSync(userDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
