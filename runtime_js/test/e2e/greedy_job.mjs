// End-to-end job (runs in Node or in a page through bench/harness.mjs): loads a bundle
// with the WebGPU backend and greedy-decodes each case through the Backend interface;
// optionally compares the engine's streamed and non-streamed answers. Returns data
// only: the caller (tests/test_runtime_e2e.py) holds the oracles and asserts.
//
// args: runtimeUrl, bundleUrl, registryUrl?, cacheDir?, dawnFlags?, cases: [{messages?
// | prompt_ids?, new_tokens}], chat?: {messages, max_tokens} (streamed vs not),
// tokens?: false (load only)
const now = () => performance.now();

function argmax(l) {
  let m = 0;
  for (let i = 1; i < l.length; i++) if (l[i] > l[m]) m = i;
  return m;
}

export async function run(args) {
  const m = await import(args.runtimeUrl);
  const backend = args.dawnFlags?.length ? () => new m.WebGpuBackend({ dawnFlags: args.dawnFlags }) : "webgpu";
  const t0 = now();
  const engine = await m.createEngine(args.bundleUrl, { backend, cacheDir: args.cacheDir, registryUrl: args.registryUrl });
  const b = engine.backend;
  const out = {
    label: b.label,
    variant: b.variant,
    adapter: b.adapter,
    load_ms: Math.round(now() - t0),
    load_stats: b.loadStats,
    uploads: b.uploads && { committed: b.uploads.committed.length, discarded: b.uploads.discarded.length, bytes: b.uploads.bytesToWeights },
    context_window: engine.contextWindow,
    cases: [],
  };
  try {
    for (const c of args.cases ?? []) {
      const prompt = c.prompt_ids ?? engine.tokenizer.encodeChat(c.messages);
      const t = now();
      b.reset();
      let logits = await b.prefill(Int32Array.from(prompt), 0);
      const prefillMs = now() - t;
      const tokens = [];
      for (let i = 0; i < c.new_tokens; i++) {
        tokens.push(argmax(logits));
        if (i + 1 < c.new_tokens) logits = await b.decode(tokens[i], prompt.length + i);
      }
      out.cases.push({ prompt_ids: prompt, tokens, prefill_ms: Math.round(prefillMs), ms: Math.round(now() - t) });
    }
    if (args.chat) {
      const req = { messages: args.chat.messages, max_tokens: args.chat.max_tokens, temperature: 0, repetition_penalty: 1 };
      const t = now();
      const res = await engine.chat.completions.create(req);
      let streamed = "";
      let finish = null;
      let chunks = 0;
      for await (const chunk of await engine.chat.completions.create({ ...req, stream: true })) {
        streamed += chunk.choices[0].delta.content ?? "";
        finish = chunk.choices[0].finish_reason ?? finish;
        chunks++;
      }
      out.chat = {
        text: res.choices[0].message.content,
        finish_reason: res.choices[0].finish_reason,
        usage: res.usage,
        streamed,
        stream_finish_reason: finish,
        chunks,
        ms: Math.round(now() - t),
      };
    }
  } finally {
    await engine.unload();
  }
  return out;
}
