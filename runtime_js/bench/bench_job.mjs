// The benchmark itself; runs in Node or in a page (see harness.mjs). Loads the bundle
// twice (cold: empty shard cache; cached: the second load), then per run resets the
// KV cache, prefills `promptTokens` tokens and decodes `newTokens` greedily, timing
// each call through the Backend interface. Returns a JSON-able object.
const now = () => performance.now();
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : null;
};
const round = (x, d = 2) => (x == null ? null : Math.round(x * 10 ** d) / 10 ** d);

function memorySampler() {
  const isNode = typeof process !== "undefined" && !!process.versions?.node;
  const peak = {};
  const sample = () => {
    if (isNode) {
      const m = process.memoryUsage();
      peak.rss_bytes = Math.max(peak.rss_bytes ?? 0, m.rss);
      peak.heap_used_bytes = Math.max(peak.heap_used_bytes ?? 0, m.heapUsed);
      peak.external_bytes = Math.max(peak.external_bytes ?? 0, m.external + (m.arrayBuffers ?? 0));
    } else if (globalThis.performance?.memory) {
      const m = performance.memory;
      peak.js_heap_used_bytes = Math.max(peak.js_heap_used_bytes ?? 0, m.usedJSHeapSize);
      peak.js_heap_total_bytes = Math.max(peak.js_heap_total_bytes ?? 0, m.totalJSHeapSize);
    }
  };
  const timer = setInterval(sample, 50);
  return {
    stop() {
      clearInterval(timer);
      sample();
      if (isNode) peak.max_rss_bytes = process.resourceUsage().maxRSS * 1024; // the OS's peak, between samples too
      return peak;
    },
  };
}

function argmax(l) {
  let m = 0;
  for (let i = 1; i < l.length; i++) if (l[i] > l[m]) m = i;
  return m;
}

export async function run(args) {
  const { runtimeUrl, bundleUrl, backend = "webgpu", runs = 3, promptTokens = 64, newTokens = 32, cacheDir, dawnFlags, threads } = args;
  const m = await import(runtimeUrl);
  const mem = memorySampler();
  const choice = backend === "webgpu" && dawnFlags?.length ? () => new m.WebGpuBackend({ dawnFlags })
    : backend === "wasm" && threads ? () => new m.WasmBackend({ threads }) : backend;
  // CPU time of the process (all its threads: on a CPU-emulated GPU, the kernel compiles too), in Node
  const cpuMs = typeof process !== "undefined" && process.cpuUsage ? () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; } : () => null;
  const open = async () => {
    const t0 = now();
    const c0 = cpuMs();
    const engine = await m.createEngine(bundleUrl, { backend: choice, cacheDir });
    return { engine, ms: now() - t0, cpu: c0 === null ? null : cpuMs() - c0 };
  };
  const cold = await open();
  const coldStats = cold.engine.backend.loadStats ?? null;
  await cold.engine.unload();
  const cached = await open();
  const engine = cached.engine;
  const b = engine.backend;

  // A prompt of real tokens: a text repeated up to the length, no special tokens.
  const text = "The quick brown fox jumps over the lazy dog while the bench measures the runtime. ";
  let ids = engine.tokenizer.encode(text.repeat(Math.ceil(promptTokens / 8) + 1), { addSpecialTokens: false });
  ids = ids.slice(0, promptTokens);
  const window = engine.contextWindow;
  if (ids.length + newTokens > window) throw new Error(`prompt ${ids.length} + new ${newTokens} tokens exceed the context window (${window})`);

  const prefill = [];
  const decode = [];
  for (let r = 0; r < runs; r++) {
    b.reset();
    let t = now();
    let logits = await b.prefill(Int32Array.from(ids), 0);
    prefill.push(now() - t);
    const perToken = [];
    for (let i = 0; i < newTokens; i++) {
      const tok = argmax(logits);
      t = now();
      logits = await b.decode(tok, ids.length + i);
      perToken.push(now() - t);
    }
    decode.push(perToken.reduce((a, x) => a + x, 0) / Math.max(1, perToken.length));
  }
  const memory = mem.stop();
  const out = {
    backend: b.name,
    label: b.label ?? b.name,
    variant: b.variant ?? null,
    threads: b.threads ?? null,
    adapter: b.adapter ?? null,
    model: engine.manifest.model.name,
    quantization: engine.manifest.quantization.scheme,
    weights_bytes: engine.manifest.memory.weights_bytes,
    context_window: window,
    load_cold_ms: round(cold.ms, 1),
    load_cached_ms: round(cached.ms, 1),
    // Node: CPU time of each load (less sensitive than wall time to other processes on the machine)
    load_cold_cpu_ms: round(cold.cpu, 1),
    load_cached_cpu_ms: round(cached.cpu, 1),
    load_cold_network_shards: coldStats?.networkShards ?? null,
    load_cached_network_shards: b.loadStats?.networkShards ?? null,
    runs,
    prompt_tokens: ids.length,
    new_tokens: newTokens,
    prefill_ms: round(median(prefill), 1),
    prefill_tok_s: round((ids.length * 1000) / median(prefill)),
    decode_ms_per_token: round(median(decode), 1),
    decode_tok_s: newTokens ? round(1000 / median(decode)) : null,
    prefill_ms_runs: prefill.map((x) => round(x, 1)),
    decode_ms_per_token_runs: decode.map((x) => round(x, 1)),
    peak_memory: memory,
    gpu_buffers_bytes: b.plan && b.variant ? Object.values(b.plan.variants[b.variant].memory).reduce((a, x) => a + x, 0) : null,
  };
  await engine.unload();
  return out;
}
