// Small formatting helpers for the chat page.

/** 123456789 -> "123.5 MB" (decimal units, as download sizes are usually shown). */
export function formatBytes(n) {
  if (n == null || !Number.isFinite(n)) return "?";
  if (n < 1e3) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n / 1e3;
  let i = 0;
  while (v >= 1e3 && i < units.length - 1) {
    v /= 1e3;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

/** Bytes as MB with one decimal, for progress numbers that tick up. */
export function formatMB(n) {
  return (n / 1e6).toFixed(1);
}

/** 134515008 -> "135M params", 1.2e9 -> "1.2B params", 98000 -> "98K params". */
export function formatParams(n) {
  if (!n) return null;
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B params`;
  if (n >= 1e6) return `${Math.round(n / 1e6)}M params`;
  return `${Math.max(1, Math.round(n / 1e3))}K params`;
}

export function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** Display name: the manifest's model name, with the registry version when there is one. */
export function modelTitle(m) {
  return m.version ? `${m.name} @${m.version}` : m.name;
}

/** One line of facts about a served model. */
export function modelFacts(m) {
  const q = m.quantization?.scheme;
  return [
    q,
    formatParams(m.parameters),
    m.bytes != null ? `${formatBytes(m.bytes)} download` : null,
    m.memory_estimate_bytes != null ? `~${formatBytes(m.memory_estimate_bytes)} memory` : null,
  ].filter(Boolean);
}

/** "WebGPU f16", "WebGPU f32", "Wasm": what the engine says about its backend. */
export function describeBackend(engine) {
  const b = engine?.backend ?? {};
  return b.label || String(b.name ?? "unknown");
}

/** Tokens/s and details from the last chunk of a stream (usage + timings). */
export function replyStats(chunk) {
  const usage = chunk?.usage;
  const t = chunk?.timings;
  if (!usage) return null;
  const decodeRate = t && t.decode_ms > 0 ? (t.decode_tokens * 1000) / t.decode_ms : null;
  const prefillRate = t && t.prefill_ms > 0 ? (t.prefill_tokens * 1000) / t.prefill_ms : null;
  return {
    tokens: usage.completion_tokens,
    promptTokens: usage.prompt_tokens,
    decodeRate,
    prefillRate,
    prefillTokens: t?.prefill_tokens ?? null,
    prefillMs: t?.prefill_ms ?? null,
    decodeMs: t?.decode_ms ?? null,
    // with speculative decoding (the counters are there only when it ran)
    drafted: t?.draft_tokens ?? null,
    accepted: t?.accepted_tokens ?? null,
    verifySteps: t?.verify_steps ?? null,
  };
}

/** The rows of a model card (docs/registry.md, "Model cards"): [label, value] pairs, missing facts left out. */
export function cardRows(card) {
  if (!card) return [];
  const q = card.quality;
  const quality = q
    ? [
        q.perplexity != null ? `perplexity ${q.perplexity.toFixed(2)}` : null,
        q.kl != null ? `KL ${q.kl.toFixed(4)}` : null,
        q.perplexity_increase != null ? `${(100 * q.perplexity_increase).toFixed(1)}% vs reference` : null,
        q.tokens != null ? `${q.tokens} tokens` : null,
      ].filter(Boolean).join(", ")
    : "not measured (llmpack eval)";
  const src = card.source;
  return [
    ["Architecture", card.hf_architecture ? `${card.architecture} (${card.hf_architecture})` : card.architecture],
    ["Parameters", card.parameters != null ? card.parameters.toLocaleString("en-US") : null],
    ["Format", card.format ? `${card.format}${card.bits_per_weight != null ? `, ${card.bits_per_weight} bits/weight` : ""}` : null],
    ["Quality", quality],
    ["License", card.license ?? "not stated"],
    ["Source", src ? `${src.name} (${src.kind})` : null],
    ["Source sha256", src?.sha256 ?? null],
  ].filter(([, v]) => v != null && v !== "");
}
