#!/usr/bin/env node
// The official `openai` npm client against `llmpack serve --api`, for tests/test_api_serve.py:
//   node test/e2e/openai_js_client.mjs BASE_URL MODEL < request.json
// Prints {models, answer, streamed, error} as JSON: the model ids, the answer's content,
// the streamed content, and the APIError a request with temperature -1 gives.
import { readFileSync } from "node:fs";
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const req = JSON.parse(readFileSync(0, "utf8"));
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
const models = [];
for await (const m of client.models.list()) models.push(m.id);
const res = await client.chat.completions.create({ model, ...req });
let streamed = "";
for await (const chunk of await client.chat.completions.create({ model, ...req, stream: true })) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
}
let error = null;
try {
  await client.chat.completions.create({ model, ...req, temperature: -1 });
} catch (e) {
  error = { name: e.constructor.name, status: e.status, message: e.error?.message, param: e.error?.param };
}
process.stdout.write(JSON.stringify({ models, answer: res.choices[0].message.content, streamed, error }) + "\n");
