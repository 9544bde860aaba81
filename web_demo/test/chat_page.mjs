// Drives the chat page (web_demo/) in headless Chromium with playwright-core, the way a
// user would: pick the model, load it, ask, watch the answer stream, ask again, stop a
// long answer, recover from a (simulated) GPU device loss with Reload model, ask the last
// question again greedily with speculative decoding switched on, and take screenshots at
// 1280x800 and 390x844. Run by
// tests/test_demo_browser.py, which serves the page and a real bundle; it prints one
// JSON line of observations, which the Python test checks.
//
// Backend: the runtime's own choice, as a user gets it ("auto": Wasm here, where the only
// WebGPU adapter is SwiftShader, a software renderer), then WebGPU picked in the page's
// backend select; the driver wraps prefill to record each call's past_len (KV cache reuse).
//
// Input: env LLMPACK_DEMO_TEST = {url, modelId, chromium, artifacts, maxTokens?, colorScheme?}.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../runtime_js/package.json"));
const { chromium } = require("playwright-core");

const cfg = JSON.parse(process.env.LLMPACK_DEMO_TEST);
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitState(page, states, timeout = 120_000) {
  const list = [].concat(states);
  await page.waitForFunction((s) => s.includes(document.body.dataset.state), list, { timeout, polling: 50 });
  return page.evaluate(() => document.body.dataset.state);
}

/** Sends `text`, records every length the newest answer passes through, waits for the end. */
async function ask(page, text, { stopAfterChars = 0 } = {}) {
  await page.evaluate(() => {
    window.__lengths = [];
    const box = document.getElementById("messages");
    window.__observer?.disconnect();
    window.__observer = new MutationObserver(() => {
      const answers = box.querySelectorAll(".msg.assistant .text");
      const last = answers[answers.length - 1];
      if (last) window.__lengths.push(last.textContent.length);
    });
    window.__observer.observe(box, { subtree: true, childList: true, characterData: true });
  });
  await page.fill("#prompt", text);
  await page.press("#prompt", "Enter");
  await waitState(page, "generating", 10_000).catch(() => {});
  let atStop = null;
  if (stopAfterChars) {
    await page.waitForFunction((n) => {
      const a = document.querySelectorAll(".msg.assistant .text");
      return a.length && a[a.length - 1].textContent.length >= n;
    }, stopAfterChars, { timeout: 120_000, polling: 20 });
    await page.click("#stop");
    atStop = await page.evaluate(() => Date.now());
  }
  await waitState(page, ["ready", "error"]);
  const settled = await lastAnswer(page);
  await sleep(stopAfterChars ? 600 : 0);
  const later = await lastAnswer(page);
  const lengths = await page.evaluate(() => window.__lengths);
  return { ...later, grewAfterEnd: later.text.length !== settled.text.length, distinctLengths: new Set(lengths).size, stoppedAt: atStop };
}

function lastAnswer(page) {
  return page.evaluate(() => {
    const rows = document.querySelectorAll(".msg.assistant");
    const row = rows[rows.length - 1];
    return {
      text: row?.querySelector(".text")?.textContent ?? "",
      meta: row?.querySelector(".meta")?.textContent ?? "",
      finish: row?.dataset.finish ?? null,
      failed: row?.classList.contains("failed") ?? false,
    };
  });
}

async function shot(page, name) {
  const file = path.join(cfg.artifacts, name);
  await page.screenshot({ path: file });
  return file;
}

async function main() {
  mkdirSync(cfg.artifacts, { recursive: true });
  const userDir = mkdtempSync(path.join(tmpdir(), "llmpack-demo-chromium-"));
  const context = await chromium.launchPersistentContext(userDir, {
    executablePath: cfg.chromium,
    headless: true,
    viewport: DESKTOP,
    colorScheme: cfg.colorScheme ?? "light",
    args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"],
  });
  const out = { screenshots: [], console: [], progress: [] };
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (m) => m.type() === "error" && out.console.push(m.text()));
    page.on("pageerror", (e) => out.console.push(`pageerror: ${e.message}`));
    // slow the shards down a little, so that the progress bar can be seen (and shot)
    await page.route("**/shards/*.bin", async (route) => {
      await sleep(150);
      await route.continue();
    });

    await page.goto(cfg.url);
    await waitState(page, "idle", 30_000);
    out.isolated = await page.evaluate(() => window.crossOriginIsolated);
    out.speculativeAtStart = await page.isChecked("#speculative");
    // the compatibility rules against a GPU with small limits and no shader-f16
    out.compat = await page.evaluate(async () => {
      const { checkModel, explainError } = await import("/compat.js");
      const env = { secure: true, webgpu: true, adapter: {}, features: new Set(), deviceMemoryGB: 4,
        limits: { maxStorageBufferBindingSize: 128 << 20, maxBufferSize: 256 << 20 } };
      const model = { memory_estimate_bytes: 3e9, requirements: { features: ["timestamp-query"], optional_features: ["shader-f16"],
        limits: { maxStorageBufferBindingSize: 300 << 20, maxBufferSize: 200 << 20 } } };
      const errors = [new Error("no backend is available; pass {backend} to createEngine"),
        Object.assign(new Error("shard 1 (shards/ab.bin): sha256 mismatch"), { name: "ShardError" }),
        new TypeError("Failed to fetch"), new Error("GPU out of memory")];
      return {
        notices: checkModel(env, model).map((n) => `${n.level}: ${n.title}`),
        insecure: checkModel({ ...env, secure: false }, model).map((n) => n.title),
        errors: errors.map((e) => explainError(e, env, model).title),
        noBackend: explainError(new Error("no backend is available that can run this bundle here " +
          "(webgpu: feature \"shader-f16\" is missing; wasm: needs 5.00 GiB of Wasm memory)"), env, model).text,
      };
    });
    out.screenshots.push(await shot(page, "desktop-start.png"));

    // pick the model and load it, recording what the progress line says
    await page.click(`.model[data-id="${cfg.modelId}"]`);
    await page.evaluate(() => {
      window.__progress = [];
      const el = document.getElementById("progress");
      new MutationObserver(() => window.__progress.push(el.innerText.replace(/\s+/g, " ").trim()))
        .observe(el, { subtree: true, childList: true, characterData: true });
    });
    await page.click("#load");
    await page.waitForFunction(() => /shard \d+ of \d+/.test(document.getElementById("progress-numbers").textContent), null, { timeout: 60_000, polling: 20 }).catch(() => {});
    out.screenshots.push(await shot(page, "desktop-loading.png"));
    out.loadState = await waitState(page, ["ready", "error"]);
    out.progress = [...new Set(await page.evaluate(() => window.__progress))];
    out.badge = await page.textContent("#backend-badge");
    out.backend = await page.evaluate(() => window.llmpackDemo.state.engine?.backend?.name ?? null);
    out.reason = await page.textContent("#backend-reason");
    out.badgeTitle = await page.getAttribute("#backend-badge", "title");
    out.notices = await page.evaluate(() => document.getElementById("notices").innerText);
    if (out.loadState !== "ready") {
      out.screenshots.push(await shot(page, "desktop-load-error.png"));
      return out;
    }

    await page.evaluate(() => {
      const b = window.llmpackDemo.state.engine.backend;
      const prefill = b.prefill.bind(b);
      window.__prefills = [];
      b.prefill = (tokens, pastLen) => {
        window.__prefills.push({ tokens: tokens.length, pastLen });
        return prefill(tokens, pastLen);
      };
      // (Wasm runs the tiny model so fast that an answer would end before Stop is clicked)
      const decode = b.decode.bind(b);
      b.decode = async (token, pos) => {
        await new Promise((r) => setTimeout(r, 25));
        return decode(token, pos);
      };
    });
    await page.fill("#max-tokens", String(cfg.maxTokens ?? 40));
    out.first = await ask(page, "What is the capital of France?");
    out.second = await ask(page, "And of Italy?");
    out.messages = await page.evaluate(() => window.llmpackDemo.state.messages.map((m) => m.role));
    out.prefills = await page.evaluate(() => window.__prefills);
    out.screenshots.push(await shot(page, "desktop-chat.png"));

    await page.fill("#max-tokens", "2000");
    out.stopped = await ask(page, "Tell me a very long story.", { stopAfterChars: 12 });
    out.screenshots.push(await shot(page, "desktop-stopped.png"));

    // a lost GPU device, simulated: the backend's next prefill rejects with a DeviceLostError;
    // the failed turn offers Reload model, which calls engine.reload(), and the chat goes on
    // (in a new chat: the conversation so far fills the tiny model's context window)
    out.reloadButtonBefore = await page.isVisible("#reload-model");
    await page.click("#new-chat");
    await page.evaluate(() => {
      const b = window.llmpackDemo.state.engine.backend;
      window.__lostBackend = b;
      const lost = Object.assign(new Error("the WebGPU device was lost (simulated)"), { name: "DeviceLostError" });
      b.prefill = () => new Promise((_, reject) => setTimeout(() => reject(lost), 300)); // (ask() sees "generating")
    });
    await page.fill("#max-tokens", String(cfg.maxTokens ?? 40));
    out.lost = await ask(page, "Are you still there?");
    out.lostNotice = await page.evaluate(() => document.querySelector(".device-lost")?.innerText ?? "");
    out.lostSendDisabled = await page.isDisabled("#send");
    out.screenshots.push(await shot(page, "desktop-device-lost.png"));
    await page.click("#reload-model");
    await page.waitForFunction(() => !window.llmpackDemo.state.loading && document.body.dataset.state !== "loading", null, { timeout: 120_000, polling: 50 });
    out.reloaded = await page.evaluate(() => ({ state: document.body.dataset.state, notice: !!document.querySelector(".device-lost"),
      newBackend: window.llmpackDemo.state.engine.backend !== window.__lostBackend }));
    // greedy from here (the speculative decoding check below compares two greedy answers)
    await page.evaluate(() => {
      const t = document.getElementById("temperature");
      t.value = "0";
      t.dispatchEvent(new Event("input"));
    });
    out.afterReload = await ask(page, "Are you still there?");

    // the same question in a new chat, with speculative decoding switched on: the same answer,
    // and the stats line counts the drafts
    await page.click("#new-chat");
    await page.check("#speculative");
    out.speculative = await ask(page, "Are you still there?");
    out.speculativeHint = await page.textContent("#speculative-hint");
    out.screenshots.push(await shot(page, "desktop-speculative.png"));

    await page.setViewportSize(PHONE);
    await sleep(200);
    out.panelOpenAfterLoad = await page.evaluate(() => document.getElementById("sidebar").classList.contains("open"));
    out.screenshots.push(await shot(page, "phone-chat.png"));
    await page.click("#panel-toggle");
    await sleep(100);
    out.panelOpens = await page.isVisible("#load");
    out.screenshots.push(await shot(page, "phone-panel.png"));
    out.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);

    // a second page at phone size loads the model from the start
    const fresh = await context.newPage();
    await fresh.setViewportSize(PHONE);
    await fresh.goto(cfg.url);
    await waitState(fresh, "idle", 30_000);
    out.speculativeRemembered = await fresh.isChecked("#speculative");
    out.screenshots.push(await shot(fresh, "phone-start.png"));
    await fresh.click("#load");
    out.plainLoad = await waitState(fresh, ["ready", "error"]);
    out.plainNotices = await fresh.evaluate(() => document.getElementById("notices").innerText);
    out.plainBackend = await fresh.evaluate(() => window.llmpackDemo.state.engine?.backend?.name ?? null);
    out.screenshots.push(await shot(fresh, `phone-${out.plainLoad === "ready" ? "loaded" : "load-error"}.png`));
    // the backend select: WebGPU, asked for, loads the model again on it
    await fresh.click("#panel-toggle"); // (the phone's model panel closed after the load)
    await fresh.selectOption("#backend", "webgpu");
    await waitState(fresh, "loading", 10_000).catch(() => {});
    out.switchedLoad = await waitState(fresh, ["ready", "error"]);
    out.switchedBackend = await fresh.evaluate(() => window.llmpackDemo.state.engine?.backend?.name ?? null);
    out.switchedReason = await fresh.textContent("#backend-reason");
    await fresh.close();

    // a browser without WebGPU: the page says so before and after trying to load
    const nogpu = await context.newPage();
    await nogpu.addInitScript(() => delete Navigator.prototype.gpu);
    await nogpu.goto(`${cfg.url}&backend=auto`); // (the select's last choice, webgpu, is remembered)
    await waitState(nogpu, "idle", 30_000);
    out.noGpuBefore = await nogpu.evaluate(() => document.getElementById("notices").innerText);
    await nogpu.click("#load");
    out.noGpuLoad = await waitState(nogpu, ["ready", "error"]);
    out.noGpuAfter = await nogpu.evaluate(() => document.getElementById("notices").innerText);
    out.noGpuBackend = await nogpu.evaluate(() => window.llmpackDemo.state.engine?.backend?.name ?? null);
    out.screenshots.push(await shot(nogpu, "desktop-no-webgpu.png"));
    await nogpu.close();
    return out;
  } finally {
    await context.close();
    rmSync(userDir, { recursive: true, force: true });
  }
}

main().then(
  (out) => {
    console.log(JSON.stringify(out));
  },
  (e) => {
    console.error(e?.stack ?? String(e));
    process.exit(1);
  },
);
