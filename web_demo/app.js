// The chat page of `llmpack serve` and of static sites (`llmpack site`): lists the models
// (models.json), loads one with the llmpack runtime (runtime/llmpack.js), and chats with
// it, streaming tokens as they come. Every URL is relative to the page, so a site works
// from any folder of any static host.
import { checkModel, explainError, probeBrowser } from "./compat.js";
import { cardRows, describeBackend, formatMB, formatMs, modelFacts, modelTitle, replyStats } from "./format.js";
import { renderMarkdown } from "./markdown.js";

const RUNTIME_URL = new URL("runtime/llmpack.js", import.meta.url).href;
const MODELS_URL = new URL("models.json", import.meta.url).href;
const $ = (id) => document.getElementById(id);

const ui = {
  body: document.body,
  badge: $("backend-badge"),
  backend: $("backend"),
  backendReason: $("backend-reason"),
  panelToggle: $("panel-toggle"),
  sidebar: $("sidebar"),
  modelList: $("model-list"),
  modelCard: $("model-card"),
  refresh: $("refresh-models"),
  load: $("load"),
  cancelLoad: $("cancel-load"),
  progress: $("progress"),
  progressFill: $("progress-fill"),
  progressPhase: $("progress-phase"),
  progressNumbers: $("progress-numbers"),
  notices: $("notices"),
  temperature: $("temperature"),
  temperatureValue: $("temperature-value"),
  maxTokens: $("max-tokens"),
  speculative: $("speculative"),
  speculativeHint: $("speculative-hint"),
  newChat: $("new-chat"),
  messages: $("messages"),
  empty: $("empty"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
};

const state = {
  models: [],
  selected: null, // the model chosen in the list
  loaded: null, // the model the engine holds
  engine: null,
  loading: null, // AbortController of the load in progress
  generating: null, // AbortController of the reply in progress
  messages: [], // the conversation sent with every request
  env: null, // what probeBrowser found
  runtime: null,
  lost: false, // the GPU device was lost (DeviceLostError): nothing runs until engine.reload()
};

// ------------------------------------------------------------------------- state

function setState(name) {
  ui.body.dataset.state = name;
  const busy = name === "loading";
  const generating = name === "generating";
  ui.load.disabled = busy || !state.selected;
  ui.load.hidden = busy;
  ui.cancelLoad.hidden = !busy;
  ui.prompt.disabled = !state.engine || busy || state.lost;
  ui.prompt.placeholder = state.lost ? "Reload the model to continue"
    : state.engine ? `Message ${modelTitle(state.loaded)}` : "Load a model to start";
  ui.send.hidden = generating;
  ui.stop.hidden = !generating;
  ui.send.disabled = !state.engine || busy || generating || state.lost;
  ui.load.textContent = state.engine && state.selected === state.loaded ? "Reload model" : "Load model";
  for (const el of ui.modelList.querySelectorAll("input")) el.disabled = busy;
  ui.backend.disabled = busy;
}

function setBadge(text, kind = "", why = "") {
  ui.badge.textContent = text;
  ui.badge.className = `badge ${kind}`.trim();
  ui.badge.dataset.backend = kind === "on" ? text : "";
  ui.badge.title = why || "the backend running the model";
}

/** Which backend runs the model and why (the runtime's engine.backendInfo). */
function showBackendReason(engine) {
  const info = engine?.backendInfo;
  ui.backendReason.textContent = info ? `${info.label ?? info.name}: ${info.reason}` : "";
  ui.backendReason.dataset.backend = info?.name ?? "";
}

const BACKEND_KEY = "llmpack-demo-backend";

/** The backend choice: ?backend= in the URL, else the one last picked here, else auto. */
function initialBackend() {
  const wanted = new URLSearchParams(location.search).get("backend");
  let saved = null;
  try {
    saved = localStorage.getItem(BACKEND_KEY);
  } catch {}
  const value = [wanted, saved].find((v) => v && [...ui.backend.options].some((o) => o.value === v));
  ui.backend.value = value ?? "auto";
}

function changeBackend() {
  try {
    localStorage.setItem(BACKEND_KEY, ui.backend.value);
  } catch {}
  // a loaded model moves to the backend picked
  if (state.engine && !state.loading && state.selected === state.loaded) loadSelected();
}

const SPECULATIVE_KEY = "llmpack-demo-speculative";
const SPECULATIVE_HINT = ui.speculativeHint.textContent.replace(/\s+/g, " ");

/** The speculative decoding switch: off unless it was turned on here before. */
function initialSpeculative() {
  try {
    ui.speculative.checked = localStorage.getItem(SPECULATIVE_KEY) === "on";
  } catch {}
}

function changeSpeculative() {
  try {
    localStorage.setItem(SPECULATIVE_KEY, ui.speculative.checked ? "on" : "off");
  } catch {}
  showSpeculativeHint();
}

/** The switch's hint; it says so when the loaded model's backend cannot check drafts (then it runs without). */
function showSpeculativeHint() {
  const b = state.engine?.backend;
  const cannot = ui.speculative.checked && b && !(typeof b.verify === "function" && b.verifyMaxTokens >= 2);
  ui.speculativeHint.textContent = cannot
    ? `${describeBackend(state.engine)} cannot check drafts for this model (its bundle has no verify step): answers run without`
    : SPECULATIVE_HINT;
}

function togglePanel(open = !ui.sidebar.classList.contains("open")) {
  ui.sidebar.classList.toggle("open", open);
  ui.panelToggle.setAttribute("aria-expanded", String(open));
}

// ------------------------------------------------------------------------ models

async function fetchModels() {
  ui.refresh.disabled = true;
  try {
    const res = await fetch(MODELS_URL, { cache: "no-cache" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = await res.json();
    // a static site lists its bundles relative to models.json
    state.models = (body.models ?? []).map((m) => ({ ...m, url: new URL(m.url, res.url).href }));
    renderModels(body.errors ?? []);
  } catch (e) {
    state.models = [];
    ui.modelList.replaceChildren(paragraph(`Could not list the models (${e.message} at ${MODELS_URL}). Is llmpack serve running, or the site complete?`, "muted error-text"));
  } finally {
    ui.refresh.disabled = false;
  }
}

function renderModels(errors) {
  const wanted = new URLSearchParams(location.search).get("model");
  const keep = state.selected?.url;
  ui.modelList.replaceChildren();
  if (!state.models.length) {
    ui.modelList.append(paragraph("No models are served. Start the server with llmpack serve BUNDLE, or llmpack demo.", "muted"));
  }
  state.models.forEach((m, i) => {
    const label = document.createElement("label");
    label.className = "model";
    label.dataset.id = m.id;
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "model";
    input.value = String(i);
    input.addEventListener("change", () => selectModel(m));
    const text = document.createElement("span");
    text.className = "model-text";
    const name = document.createElement("span");
    name.className = "model-name";
    name.textContent = modelTitle(m);
    const facts = document.createElement("span");
    facts.className = "model-facts";
    facts.textContent = modelFacts(m).join(" · ");
    text.append(name, facts);
    if (m.source === "registry") {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "registry";
      tag.title = m.registry ?? "";
      name.append(" ", tag);
    }
    label.append(input, text);
    ui.modelList.append(label);
  });
  for (const err of errors) ui.modelList.append(paragraph(err, "muted small"));
  const pick = state.models.find((m) => m.url === keep) ?? state.models.find((m) => m.id === wanted) ?? state.models[0] ?? null;
  if (pick) selectModel(pick);
  else setState(ui.body.dataset.state);
}

function selectModel(model) {
  state.selected = model;
  const i = state.models.indexOf(model);
  for (const input of ui.modelList.querySelectorAll("input")) input.checked = input.value === String(i);
  for (const label of ui.modelList.querySelectorAll(".model")) label.classList.toggle("selected", label.dataset.id === model.id && label.querySelector("input").checked);
  showCard(model);
  showNotices(state.env ? checkModel(state.env, model) : []);
  setState(ui.body.dataset.state === "starting" ? "idle" : ui.body.dataset.state);
}

/** The selected model's card (architecture, format, quality, license, source hash). */
function showCard(model) {
  const rows = cardRows(model?.card);
  ui.modelCard.hidden = !rows.length;
  const list = ui.modelCard.querySelector("dl");
  list.replaceChildren();
  for (const [label, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = label.toLowerCase().replace(/\s+/g, "-");
    list.append(dt, dd);
  }
}

// ----------------------------------------------------------------------- notices

function showNotices(list) {
  ui.notices.replaceChildren(...list.map(noticeEl));
}

function noticeEl({ level, title, text, detail }) {
  const box = document.createElement("div");
  box.className = `notice ${level}`;
  box.setAttribute("role", level === "error" ? "alert" : "status");
  const t = document.createElement("strong");
  t.textContent = title;
  box.append(t);
  if (text) box.append(paragraph(text));
  if (detail) {
    const d = document.createElement("details");
    const s = document.createElement("summary");
    s.textContent = "Details";
    const pre = document.createElement("pre");
    pre.textContent = detail;
    d.append(s, pre);
    box.append(d);
  }
  return box;
}

function paragraph(text, cls = "") {
  const p = document.createElement("p");
  if (cls) p.className = cls;
  p.textContent = text;
  return p;
}

// ----------------------------------------------------------------------- loading

async function runtime() {
  state.runtime ??= import(RUNTIME_URL);
  try {
    return await state.runtime;
  } catch (e) {
    state.runtime = null;
    throw new Error(`the llmpack runtime could not be loaded from ${RUNTIME_URL} (${e.message})`);
  }
}

const PHASES = {
  manifest: "Reading the manifest",
  files: "Loading the tokenizer",
  backend: "Preparing the backend",
  weights: "Downloading weights",
  ready: "Ready",
};

function progressReporter(model) {
  const seen = new Set();
  let weightsDone = false;
  return (p) => {
    let fraction = null;
    let numbers = "";
    let phase = PHASES[p.phase] ?? p.text;
    if (p.phase === "backend") phase = p.text ? p.text[0].toUpperCase() + p.text.slice(1) : phase;
    if (p.phase === "weights") {
      if (p.shard >= 0) seen.add(p.shard);
      const total = p.bytesTotal || model.weights_bytes || 0;
      fraction = total ? p.bytesDone / total : 0;
      weightsDone = p.shard < 0 && p.bytesDone >= total;
      const shardNo = weightsDone ? p.shards : Math.min(Math.max(seen.size, 1), p.shards);
      numbers = `${formatMB(p.bytesDone)} / ${formatMB(total)} MB · shard ${shardNo} of ${p.shards}`;
      if (p.fromCache) phase = "Reading weights from the browser cache";
      if (weightsDone) phase = "Preparing the model";
    }
    if (p.phase === "ready") fraction = 1;
    setProgress(phase, numbers || ui.progressNumbers.textContent, fraction);
  };
}

function setProgress(phase, numbers, fraction) {
  ui.progress.hidden = false;
  ui.progressPhase.textContent = phase;
  ui.progressNumbers.textContent = numbers ?? "";
  const bar = ui.progressFill.parentElement;
  if (fraction == null) {
    bar.classList.add("indeterminate");
    bar.removeAttribute("aria-valuenow");
  } else {
    bar.classList.remove("indeterminate");
    const pct = Math.max(0, Math.min(100, fraction * 100));
    ui.progressFill.style.width = `${pct}%`;
    bar.setAttribute("aria-valuenow", pct.toFixed(0));
  }
}

async function loadSelected() {
  const model = state.selected;
  if (!model || state.loading) return;
  stopGeneration();
  clearDeviceLost(); // a new engine replaces the lost one
  const ctl = new AbortController();
  state.loading = ctl;
  setState("loading");
  showNotices(checkModel(state.env, model).filter((n) => n.level !== "info"));
  setProgress("Starting", "", null);
  ui.progressFill.style.width = "0%";
  if (state.engine) {
    const old = state.engine;
    state.engine = null;
    state.loaded = null;
    setBadge("no model loaded");
    showBackendReason(null);
    await old.unload().catch(() => {});
  }
  const t0 = performance.now();
  try {
    const { createEngine } = await runtime();
    const engine = await createEngine(model.url, {
      signal: ctl.signal,
      backend: ui.backend.value,
      onProgress: progressReporter(model),
      manifestSha256: model.manifest_sha256 ?? undefined,
    });
    if (ctl.signal.aborted) {
      await engine.unload().catch(() => {});
      throw ctl.signal.reason ?? new DOMException("aborted", "AbortError");
    }
    state.engine = engine;
    state.loaded = model;
    adoptDefaults(engine);
    showSpeculativeHint();
    const backend = describeBackend(engine);
    setBadge(backend, "on", engine.backendInfo?.reason);
    showBackendReason(engine);
    setProgress(`Ready on ${backend}`, `loaded in ${formatMs(performance.now() - t0)}`, 1);
    showNotices(checkModel(state.env, model).filter((n) => n.level === "info"));
    state.loading = null;
    setState("ready");
    togglePanel(false); // (only visible on narrow screens, where the panel covers the chat)
    ui.prompt.focus();
  } catch (e) {
    state.loading = null;
    if (ctl.signal.aborted) {
      ui.progress.hidden = true;
      showNotices([{ level: "info", title: "Loading cancelled", text: "Press Load model to start again; shards that finished downloading are kept." }]);
      setState("idle");
    } else {
      console.error(e);
      ui.progress.hidden = true;
      const { title, text } = explainError(e, state.env, model);
      showNotices([...checkModel(state.env, model).filter((n) => n.level === "error"), { level: "error", title, text, detail: detailOf(e) }]);
      setState("error");
    }
  }
}

/** The bundle's generation defaults, for the settings the user has not touched. */
function adoptDefaults(engine) {
  const g = engine.manifest?.generation ?? {};
  if (!touched.has("temperature") && typeof g.temperature === "number") {
    ui.temperature.value = String(g.temperature);
    showTemperature();
  }
  if (!touched.has("max-tokens") && Number.isInteger(g.max_new_tokens)) ui.maxTokens.value = String(g.max_new_tokens);
  if (Number.isInteger(engine.contextWindow)) ui.maxTokens.max = String(engine.contextWindow);
}

function detailOf(e) {
  const lines = [`${e?.name ?? "Error"}: ${e?.message ?? e}`];
  for (let c = e?.cause, n = 0; c && n < 3; c = c.cause, n++) lines.push(`caused by: ${c.message ?? c}`);
  return lines.join("\n");
}

// -------------------------------------------------------------------------- chat

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollDown(force = false) {
  if (force || nearBottom()) ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** A message row; an assistant's text is Markdown, rendered as it grows. */
function addMessage(role, text) {
  ui.empty.hidden = true;
  const row = document.createElement("div");
  row.className = `msg ${role}`;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const body = document.createElement("div");
  body.className = role === "assistant" ? "text md" : "text";
  bubble.append(body);
  row.append(bubble);
  ui.messages.append(row);
  const view = { row, bubble, body, raw: "", frame: 0 };
  if (role === "assistant") renderMarkdown(body, text);
  else body.textContent = text;
  scrollDown(true);
  return view;
}

/** Appends streamed text; the Markdown is re-rendered at most once per frame. */
function appendText(view, delta) {
  view.raw += delta;
  view.frame ||= requestAnimationFrame(() => {
    view.frame = 0;
    renderMarkdown(view.body, view.raw);
    scrollDown();
  });
}

function flushText(view) {
  if (view.frame) cancelAnimationFrame(view.frame);
  view.frame = 0;
  renderMarkdown(view.body, view.raw);
}

function addMeta(view, text, title = "") {
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = text;
  if (title) meta.title = title;
  view.bubble.append(meta);
}

function settings() {
  const temperature = Number(ui.temperature.value);
  let max = Math.round(Number(ui.maxTokens.value));
  if (!Number.isFinite(max) || max < 1) max = 256;
  ui.maxTokens.value = String(max);
  const out = { temperature, max_tokens: max };
  const seed = new URLSearchParams(location.search).get("seed"); // ?seed=N: reproducible sampling
  if (seed && /^\d{1,9}$/.test(seed)) out.seed = Number(seed);
  return out;
}

async function send(text) {
  const engine = state.engine;
  if (!engine || state.generating || !text.trim()) return;
  state.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const view = addMessage("assistant", "");
  view.row.classList.add("streaming");
  const ctl = new AbortController();
  state.generating = ctl;
  setState("generating");
  let content = "";
  let last = null;
  try {
    const stream = await engine.chat.completions.create({ messages: state.messages, stream: true, ...settings() }, {
      signal: ctl.signal,
      speculative: ui.speculative.checked,
    });
    for await (const chunk of stream) {
      const choice = chunk.choices?.[0];
      const delta = choice?.delta?.content;
      if (delta) {
        content += delta;
        appendText(view, delta);
      }
      if (choice?.finish_reason) last = chunk;
    }
    state.messages.push({ role: "assistant", content });
    flushText(view);
    finishReply(view, last, content);
  } catch (e) {
    flushText(view);
    if (content) state.messages.push({ role: "assistant", content });
    else state.messages.pop(); // the turn failed before any answer: forget the question
    const { title, text: why } = explainError(e, state.env, state.loaded);
    view.row.classList.add("failed");
    if (e?.name === "DeviceLostError") {
      addMeta(view, title);
      showDeviceLost(e, title, why);
    } else {
      addMeta(view, `${title}: ${why}`);
    }
  } finally {
    view.row.classList.remove("streaming");
    state.generating = null;
    if (state.engine) setState("ready");
    scrollDown();
  }
}

function finishReply(view, last, content) {
  if (!content) {
    view.body.classList.add("muted");
    view.body.textContent = "(no text)";
  }
  const stats = replyStats(last);
  const reason = last?.choices?.[0]?.finish_reason;
  const parts = [];
  if (stats) {
    parts.push(`${stats.tokens} token${stats.tokens === 1 ? "" : "s"}`);
    if (stats.decodeRate != null) parts.push(`${stats.decodeRate.toFixed(1)} tokens/s`);
    if (stats.drafted != null) parts.push(stats.drafted ? `${stats.accepted}/${stats.drafted} drafted tokens accepted` : "nothing to draft");
  }
  if (reason === "abort") parts.push("stopped");
  if (reason === "length") parts.push("hit the token limit");
  const title = stats
    ? `prompt ${stats.promptTokens} tokens (${stats.prefillTokens} computed in ${formatMs(stats.prefillMs ?? 0)}` +
      `${stats.prefillRate != null ? `, ${stats.prefillRate.toFixed(0)} tokens/s` : ""}); ` +
      `generation ${formatMs(stats.decodeMs ?? 0)}` +
      (stats.verifySteps != null ? `; speculative decoding: ${stats.verifySteps} batched checks of drafts` : "")
    : "";
  addMeta(view, parts.join(" · "), title);
  view.row.dataset.finish = reason ?? "";
}

function stopGeneration() {
  if (!state.generating) return;
  // interrupt(): the reply ends with finish_reason "abort" and its usage (aborting the
  // request's signal would reject it with an AbortError instead)
  state.engine?.interrupt();
}

function newChat() {
  stopGeneration();
  state.messages = [];
  for (const el of [...ui.messages.querySelectorAll(".msg")]) el.remove();
  ui.empty.hidden = false;
  ui.prompt.focus();
}

// ------------------------------------------------------------------- device loss

/** After a DeviceLostError: a notice below the chat whose button reloads the model. */
function showDeviceLost(err, title, text) {
  clearDeviceLost();
  state.lost = true;
  const box = noticeEl({ level: "error", title, text, detail: detailOf(err) });
  box.classList.add("device-lost");
  const button = document.createElement("button");
  button.id = "reload-model";
  button.className = "primary";
  button.type = "button";
  button.textContent = "Reload model";
  button.addEventListener("click", () => reloadEngine(box, button));
  box.append(button);
  ui.messages.append(box);
  scrollDown(true);
}

function clearDeviceLost() {
  state.lost = false;
  ui.messages.querySelector(".device-lost")?.remove();
}

/** engine.reload(): the same bundle on a fresh backend (shards from the cache); the conversation stays. */
async function reloadEngine(box, button) {
  const engine = state.engine;
  if (!engine || state.loading) return;
  const ctl = new AbortController();
  state.loading = ctl;
  button.disabled = true;
  button.textContent = "Reloading…";
  box.querySelector(".error-text")?.remove();
  setState("loading");
  setProgress("Reloading the model", "", null);
  const t0 = performance.now();
  try {
    await engine.reload({ signal: ctl.signal, onProgress: progressReporter(state.loaded) });
    clearDeviceLost();
    const backend = describeBackend(engine);
    setBadge(backend, "on");
    setProgress(`Ready on ${backend}`, `reloaded in ${formatMs(performance.now() - t0)}`, 1);
    state.loading = null;
    setState("ready");
    ui.prompt.focus();
  } catch (e) {
    state.loading = null;
    ui.progress.hidden = true;
    if (!ctl.signal.aborted) console.error(e);
    const why = ctl.signal.aborted ? "Reloading was cancelled." : `Reloading failed: ${explainError(e, state.env, state.loaded).text}`;
    box.insertBefore(paragraph(why, "error-text"), button);
    button.disabled = false;
    button.textContent = "Reload model";
    setState("ready");
  }
}

// ------------------------------------------------------------------------ wiring

function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 180)}px`;
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.prompt.value;
  if (!text.trim() || !state.engine || state.generating) return;
  ui.prompt.value = "";
  autosize();
  send(text);
});
ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.composer.requestSubmit();
  }
});
ui.prompt.addEventListener("input", autosize);
ui.stop.addEventListener("click", stopGeneration);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && state.generating) stopGeneration();
});
ui.load.addEventListener("click", loadSelected);
ui.backend.addEventListener("change", changeBackend);
ui.speculative.addEventListener("change", changeSpeculative);
ui.cancelLoad.addEventListener("click", () => state.loading?.abort());
ui.refresh.addEventListener("click", fetchModels);
ui.newChat.addEventListener("click", newChat);
ui.panelToggle.addEventListener("click", () => togglePanel());
ui.messages.addEventListener("click", () => togglePanel(false));
ui.composer.addEventListener("focusin", () => togglePanel(false));
const touched = new Set();
function showTemperature() {
  ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2).replace(/0$/, "");
}
ui.temperature.addEventListener("input", () => {
  touched.add("temperature");
  showTemperature();
});
ui.maxTokens.addEventListener("change", () => touched.add("max-tokens"));
// for the browser console and tests: the page's state (engine, messages, ...)
window.llmpackDemo = { state };

async function start() {
  initialBackend();
  initialSpeculative();
  const [env] = await Promise.all([probeBrowser(), fetchModels()]);
  state.env = env;
  if (state.selected) showNotices(checkModel(env, state.selected));
  if (!state.engine) togglePanel(true); // on a phone, open the model panel first
  setState("idle");
}

start();
