/**
 * The Node process behind `llmpack serve --api` (built to dist/api_host.js, beside the
 * runtime it imports as ./llmpack.js). The Python server answers the HTTP side of the
 * OpenAI API (routes, model ids, server-sent events, client disconnects) and hands each
 * chat request to this process over its stdin; this process runs it on the bundle's
 * engine and answers on stdout. One line per message each way:
 *
 *   in   {"op": "chat", "id": N, "bundle": "/abs/bundle/dir", "model": "<id>", "body": "<request JSON text>"}
 *        {"op": "abort", "id": N}          the client went away: stop request N
 *   out  ready {"node": "20.x"}            once, when listening
 *        N stream                          request N runs (sent with its first chunk past the
 *                                          opening role chunk: until then a refusal is still a 400)
 *        N chunk <ChatCompletionChunk>     one streamed chunk (JSON, forwarded as is)
 *        N done                            the stream ended
 *        N result <ChatCompletion>         the answer of a request without `stream`
 *        N error {"status": S, "error": {message, type, param, code}}   (also mid-stream)
 *
 * The request body reaches `engine.chat.completions.create()` as the client sent it, less
 * llmpack's own extension field `speculative` (true | false | null: prompt-lookup
 * speculative decoding for this request, passed as the request option of that name; absent
 * or null: the server's default, on when started with `--speculative` on its command line).
 * The runtime validates the rest, and its refusals (TypeError, GrammarError and RangeError,
 * a context window or chat template error) become 400 invalid_request_error; anything
 * else is a 500 server_error. An aborted request ends in the runtime's AbortError, unsent. An engine is created per bundle on its first request (backend
 * "auto": WebGPU through npm `webgpu` on a GPU that is not a software renderer, else
 * Wasm) and kept; the engine queues requests, so one runs at a time per model.
 */
import { stat } from "node:fs/promises";
import { createInterface } from "node:readline";
import { ContextWindowError, type ChatCompletion, type ChatCompletionChunk, type ChatCompletionRequest, createEngine, type Engine, TemplateError } from "../index.js";

interface ChatOp {
  op: "chat";
  id: number;
  bundle: string;
  model: string;
  body: string;
}

interface AbortOp {
  op: "abort";
  id: number;
}

export interface OpenAIError {
  status: number;
  error: { message: string; type: string; param: string | null; code: string | null };
}

// stdout carries the protocol: anything a library prints goes to stderr
console.log = console.error;
console.info = console.error;
console.debug = console.error;

function send(line: string): void {
  process.stdout.write(line + "\n");
}

/** Engines by bundle folder; replaced when the bundle's manifest.json changes. */
const engines = new Map<string, { key: string; engine: Promise<Engine> }>();
/** speculative decoding for requests that do not say (`llmpack serve --api --speculative`) */
const SPECULATIVE = process.argv.slice(2).includes("--speculative");
/** Requests running or queued, by id. */
const running = new Map<number, AbortController>();

async function engineFor(dir: string, model: string): Promise<Engine> {
  const st = await stat(`${dir}/manifest.json`);
  const key = `${st.mtimeMs}:${st.size}`;
  const known = engines.get(dir);
  if (known?.key === key) return known.engine;
  if (known) known.engine.then((e) => e.unload()).catch(() => {});
  console.error(`llmpack api: loading ${model} from ${dir}`);
  const engine = createEngine(dir, { cache: null, speculative: SPECULATIVE }).then((e) => {
    console.error(`llmpack api: ${model} runs on ${e.backendInfo.label} (${e.backendInfo.reason})`);
    return e;
  });
  engines.set(dir, { key, engine });
  engine.catch(() => {
    if (engines.get(dir)?.engine === engine) engines.delete(dir); // the next request tries again
  });
  return engine;
}

/** Drops a bundle's engine (its GPU device was lost): the next request creates another. */
function forget(dir: string): void {
  const known = engines.get(dir);
  engines.delete(dir);
  known?.engine.then((e) => e.unload()).catch(() => {});
}

/** What the runtime throws for a request it refuses (GrammarError is a TypeError). */
const REQUEST_ERRORS = [TypeError, RangeError, SyntaxError, ContextWindowError, TemplateError];

/**
 * The OpenAI error object (and HTTP status) for a failed request. `generating`: the
 * error came after the answer began (mid-stream), so it is the server's, whatever its type.
 */
export function openAIError(e: unknown, body: Record<string, unknown> = {}, generating = false): OpenAIError {
  const err = e instanceof Error ? e : new Error(String(e));
  const message = err.message || err.name;
  const named = err as { status?: unknown; param?: unknown; code?: unknown };
  const refused = REQUEST_ERRORS.some((type) => err instanceof type);
  const status = generating ? 500 : typeof named.status === "number" ? named.status : refused ? 400 : 500;
  if (status >= 500) return { status, error: { message, type: "server_error", param: null, code: null } };
  // the parameter the message starts with ("max_tokens must be ...", "messages[0] has no role")
  const lead = /^([a-z_]+)(\[\d+\])?/.exec(message);
  const param = typeof named.param === "string" ? named.param : lead && lead[1]! in body ? lead[0] : null;
  const code = typeof named.code === "string" ? named.code : err instanceof ContextWindowError ? "context_length_exceeded" : null;
  return { status, error: { message, type: "invalid_request_error", param, code } };
}

async function chat(op: ChatOp): Promise<void> {
  const ctl = new AbortController();
  running.set(op.id, ctl);
  let body: Record<string, unknown> = {};
  let streaming = false;
  /** chunks the engine yielded (an abort makes it throw an AbortError at its next one) */
  let chunks = 0;
  try {
    body = JSON.parse(op.body) as Record<string, unknown>;
    const { speculative: asked, ...req } = body;
    const speculative = speculativeField(asked);
    const engine = await engineFor(op.bundle, op.model);
    ctl.signal.throwIfAborted();
    const res = await engine.chat.completions.create(req as unknown as ChatCompletionRequest, { signal: ctl.signal, speculative });
    ctl.signal.throwIfAborted();
    if (!isStream(res)) {
      send(`${op.id} result ${JSON.stringify(res)}`);
      return;
    }
    // The stream is announced (the HTTP status sent) with its first chunk that says more
    // than "the assistant speaks": what the runtime checks only when generation starts
    // can still be a 400 until then.
    const held: ChatCompletionChunk[] = [];
    const announce = () => {
      streaming = true;
      send(`${op.id} stream`);
      for (const c of held.splice(0)) send(`${op.id} chunk ${JSON.stringify(c)}`);
    };
    for await (const chunk of res) {
      chunks++;
      ctl.signal.throwIfAborted();
      if (streaming) send(`${op.id} chunk ${JSON.stringify(chunk)}`);
      else if ((held.push(chunk), says(chunk))) announce();
    }
    if (!streaming) announce();
    send(`${op.id} done`);
  } catch (e) {
    if (ctl.signal.aborted) return logAbort(op, chunks); // nobody is listening
    const error = openAIError(e, body, streaming);
    if (error.status >= 500) console.error(`llmpack api: request ${op.id} (${op.model}) failed:`, e);
    if ((e as Error)?.name === "DeviceLostError") forget(op.bundle); // (the next request loads the model afresh)
    send(`${op.id} error ${JSON.stringify(error)}`);
  } finally {
    running.delete(op.id);
  }
}

/**
 * The request's `speculative` field (an llmpack extension) as the runtime's request
 * option: true or false, or undefined (absent or null) for the server's default.
 */
export function speculativeField(value: unknown): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "boolean") return value;
  throw new TypeError(
    `speculative must be true or false (llmpack's prompt-lookup speculative decoding; omit it for the server's default), got ${String(JSON.stringify(value)).slice(0, 60)}`,
  );
}

function logAbort(op: ChatOp, chunks: number): void {
  const after = chunks ? ` after ${chunks} chunks` : "";
  console.error(`llmpack api: request ${op.id} (${op.model}) aborted${after}: the client went away`);
}

/** A chunk with more than the opening `{role: "assistant", content: ""}` delta. */
function says(chunk: ChatCompletionChunk): boolean {
  if (chunk.usage) return true;
  return chunk.choices.some((c) => {
    if (c.finish_reason != null || c.logprobs != null) return true;
    const { role: _role, content, ...rest } = c.delta as Record<string, unknown>;
    return (typeof content === "string" && content !== "") || Object.keys(rest).length > 0;
  });
}

function isStream(res: ChatCompletion | AsyncIterable<ChatCompletionChunk>): res is AsyncIterable<ChatCompletionChunk> {
  return typeof (res as AsyncIterable<ChatCompletionChunk>)[Symbol.asyncIterator] === "function";
}

function handle(line: string): void {
  if (!line.trim()) return;
  let op: ChatOp | AbortOp;
  try {
    op = JSON.parse(line) as ChatOp | AbortOp;
  } catch {
    console.error(`llmpack api: ignored a line that is not JSON: ${line.slice(0, 200)}`);
    return;
  }
  if (op.op === "chat") void chat(op);
  else if (op.op === "abort") running.get(op.id)?.abort();
  else console.error(`llmpack api: ignored an unknown op: ${line.slice(0, 200)}`);
}

async function shutdown(): Promise<void> {
  for (const ctl of running.values()) ctl.abort();
  const all = [...engines.values()].map((e) => e.engine.then((x) => x.unload()).catch(() => {}));
  await Promise.all(all);
  process.exit(0);
}

const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on("line", handle);
input.on("close", () => void shutdown()); // the server went away
send(`ready ${JSON.stringify({ node: process.versions.node })}`);
