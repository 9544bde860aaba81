#!/usr/bin/env node
// End-to-end driver for tests/test_grammar.py: structured output on a real bundle.
//   node test/e2e/structured_job.mjs --bundle DIR --spec spec.json [--backend wasm]
// spec: {requests: [{request, then?: {tool_result}}]}: each request runs through
// engine.chat.completions.create; with `then`, the answer's tool calls go back in as an
// assistant message, each followed by a role "tool" message with `tool_result`, and the
// follow-up request runs (the same tools, tool_choice "none"). Prints one JSON object:
// {backend, responses: [{response, followup?}]}. The caller holds the oracles.
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values: o } = parseArgs({ options: { bundle: { type: "string" }, spec: { type: "string" }, backend: { type: "string", default: "wasm" } } });
const spec = JSON.parse(readFileSync(o.spec, "utf8"));
const m = await import(new URL("../../dist/llmpack.js", import.meta.url).href);
const engine = await m.createEngine(pathToFileURL(path.resolve(o.bundle) + "/").href, { backend: o.backend, cache: null });
const responses = [];
try {
  for (const { request, then } of spec.requests) {
    const response = await engine.chat.completions.create(request);
    const out = { response };
    const calls = response.choices[0].message.tool_calls;
    if (then && calls?.length) {
      const messages = [
        ...request.messages,
        { role: "assistant", content: response.choices[0].message.content, tool_calls: calls },
        ...calls.map((c) => ({ role: "tool", tool_call_id: c.id, content: then.tool_result })),
      ];
      out.followup = await engine.chat.completions.create({ ...request, messages, tool_choice: "none" });
    }
    responses.push(out);
  }
} finally {
  await engine.unload();
}
console.log(JSON.stringify({ backend: engine.backendInfo.name, responses }));
