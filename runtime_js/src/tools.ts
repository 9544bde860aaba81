/**
 * Tool calls in OpenAI's shape over a local model's chat template.
 *
 * In: `tools` go to the chat template as the `tools` variable (as transformers'
 * apply_chat_template(tools=...) passes them), assistant messages with `tool_calls`
 * (arguments as objects, as templates expect) and `role: "tool"` results likewise.
 * A template that never mentions `tools` gets them in a system message instead, with
 * the Hermes instructions (<tool_call>{"name": ..., "arguments": ...}</tool_call>), and
 * earlier calls and results as text in that same format (FALLBACK below).
 *
 * Out: the format the template declares: Hermes/Qwen `<tool_call>` blocks when the
 * template writes `<tool_call>` (and in the fallback), Llama 3.x JSON
 * (`{"name": ..., "parameters": ...}`) when it speaks of `<|python_tag|>`/ipython.
 * The generated text is parsed into `tool_calls`; finish_reason "tool_calls".
 *
 * tool_choice: "none" (tools neither rendered nor parsed), "auto" (the model chooses;
 * in the Hermes format a started <tool_call> is held to valid JSON of a known tool by
 * the grammar), "required" (one or more calls, enforced by the grammar), or a named
 * function (exactly one call of it, enforced by the grammar).
 */
import type { GrammarSpec } from "./grammar/response_format.js";
import type { ChatMessage } from "./tokenizer.js";

export interface FunctionTool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

export type ToolChoice = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export type ToolCallFormat = "hermes" | "llama3_json";

export interface ToolPlan {
  /** the tools offered to the model (a named choice: that one only) */
  tools: FunctionTool[];
  choice: "auto" | "required" | "named";
  format: ToolCallFormat;
  /** the template renders `tools` itself; false: the system-message fallback */
  native: boolean;
  parallel: boolean;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;
const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);

/** How a chat template writes tool calls, and whether it renders `tools` at all. */
export function templateToolSupport(source: string | null): { native: boolean; format: ToolCallFormat } {
  const src = source ?? "";
  const native = /\btools\b/.test(src);
  if (src.includes("<tool_call>")) return { native, format: "hermes" };
  if (native && (src.includes("<|python_tag|>") || src.includes("ipython"))) return { native, format: "llama3_json" };
  return { native, format: "hermes" };
}

/**
 * Checks `tools`, `tool_choice` and `parallel_tool_calls`; the plan, or null when no
 * tool may be called (no tools, or tool_choice "none").
 */
export function toolPlan(
  req: { tools?: unknown; tool_choice?: unknown; parallel_tool_calls?: unknown },
  templateSource: string | null,
): ToolPlan | null {
  const { tools, tool_choice: choice, parallel_tool_calls: parallel } = req;
  if (tools == null) {
    if (choice != null && choice !== "none") throw new TypeError("tool_choice needs tools: pass the functions the model may call in tools");
    return null;
  }
  if (!Array.isArray(tools)) throw new TypeError("tools must be an array of {type: \"function\", function: {name, description?, parameters?}}");
  const seen = new Set<string>();
  tools.forEach((t, i) => {
    if (!isObject(t) || t.type !== "function" || !isObject(t.function)) {
      throw new TypeError(`tools[${i}] must be {type: "function", function: {name, description?, parameters?}}`);
    }
    const f = t.function;
    if (typeof f.name !== "string" || !NAME.test(f.name)) throw new TypeError(`tools[${i}].function.name must be 1 to 64 letters, digits, _ or -`);
    if (seen.has(f.name)) throw new TypeError(`tools[${i}]: two tools are named "${f.name}"`);
    seen.add(f.name);
    if (f.parameters !== undefined && !isObject(f.parameters)) throw new TypeError(`tools[${i}].function.parameters must be a JSON schema object`);
    if (f.description !== undefined && typeof f.description !== "string") throw new TypeError(`tools[${i}].function.description must be a string`);
  });
  if (parallel != null && typeof parallel !== "boolean") throw new TypeError("parallel_tool_calls must be a boolean");
  const offered = tools as FunctionTool[];
  const { native, format } = templateToolSupport(templateSource);
  const base = { format, native, parallel: parallel !== false };
  if (choice == null || choice === "auto") return offered.length ? { ...base, tools: offered, choice: "auto" } : null;
  if (choice === "none") return null;
  if (choice === "required") {
    if (!offered.length) throw new TypeError('tool_choice "required" needs at least one tool in tools');
    return { ...base, tools: offered, choice: "required" };
  }
  if (isObject(choice) && choice.type === "function" && isObject(choice.function) && typeof choice.function.name === "string") {
    const name = choice.function.name;
    const tool = offered.find((t) => t.function.name === name);
    if (!tool) throw new TypeError(`tool_choice names the function "${name}", which is not in tools`);
    return { ...base, tools: [tool], choice: "named", parallel: false };
  }
  throw new TypeError('tool_choice must be "auto", "none", "required" or {type: "function", function: {name}}');
}

/** The JSON of one call of any of `tools`, in `format`. */
function callSchema(tools: FunctionTool[], format: ToolCallFormat): Record<string, unknown> {
  const argsKey = format === "llama3_json" ? "parameters" : "arguments";
  const one = (t: FunctionTool) => ({
    type: "object",
    properties: { name: { const: t.function.name }, [argsKey]: t.function.parameters ?? { type: "object" } },
    required: ["name", argsKey],
    additionalProperties: false,
  });
  return tools.length === 1 ? one(tools[0]!) : { anyOf: tools.map(one) };
}

const HERMES_BEGIN = "<tool_call>\n";
const HERMES_END = "\n</tool_call>";

/** What the grammar holds the output to; null: unconstrained (Llama 3 JSON with "auto"). */
export function toolGrammar(plan: ToolPlan): GrammarSpec | null {
  const schema = callSchema(plan.tools, plan.format);
  if (plan.format === "llama3_json") {
    // one call; Llama 3.x writes a single JSON object (no parallel calls in this format)
    return plan.choice === "auto" ? null : { kind: "json_schema", schema };
  }
  const tag = { type: "tag", begin: HERMES_BEGIN, content: { type: "json_schema", json_schema: schema }, end: HERMES_END };
  const stopAfterFirst = !plan.parallel;
  if (plan.choice === "auto") {
    return { kind: "structural_tag", format: { type: "triggered_tags", triggers: ["<tool_call>"], tags: [tag], stop_after_first: stopAfterFirst } };
  }
  return { kind: "structural_tag", format: { type: "tags_with_separator", tags: [tag], separator: "\n", at_least_one: true, stop_after_first: stopAfterFirst } };
}

/** The system message of the fallback (a template that does not render tools). */
export function toolsSystemPrompt(tools: FunctionTool[]): string {
  const list = tools.map((t) => JSON.stringify(t)).join("\n");
  return (
    "You may call one or more functions to assist with the user query.\n\n" +
    "You are provided with function signatures within <tools></tools> XML tags:\n" +
    `<tools>\n${list}\n</tools>\n\n` +
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
  );
}

export interface IncomingMessage {
  role: string;
  content: string;
  name?: string;
  tool_calls?: unknown;
  tool_call_id?: unknown;
}

/** An assistant message's tool_calls, checked, with arguments parsed to objects. */
function incomingCalls(calls: unknown, i: number): { id: string; type: "function"; function: { name: string; arguments: unknown } }[] {
  if (!Array.isArray(calls)) throw new TypeError(`messages[${i}].tool_calls must be an array`);
  return calls.map((c, j) => {
    const where = `messages[${i}].tool_calls[${j}]`;
    if (!isObject(c) || !isObject(c.function) || typeof c.function.name !== "string") throw new TypeError(`${where} must be {id, type: "function", function: {name, arguments}}`);
    let args: unknown = c.function.arguments ?? {};
    if (typeof args === "string") {
      try {
        args = JSON.parse(args || "{}");
      } catch {
        throw new TypeError(`${where}.function.arguments is not JSON`);
      }
    }
    return { id: typeof c.id === "string" ? c.id : "", type: "function", function: { name: c.function.name, arguments: args } };
  });
}

/**
 * The conversation as the template takes it. Native: tool_calls and tool results pass
 * through (arguments as objects) and `tools` is a template variable. Fallback: the
 * tools become (part of) the first system message, earlier calls <tool_call> text in
 * the assistant's message, and tool results user messages in <tool_response> tags.
 */
export function templateConversation(
  messages: IncomingMessage[],
  plan: ToolPlan | null,
  /** the template renders tools, calls and results itself (without a plan too: a follow-up with tool_choice "none") */
  native = plan?.native ?? false,
): { messages: ChatMessage[]; tools?: FunctionTool[] } {
  const out: ChatMessage[] = messages.map((m, i) => {
    if (m.role === "tool") {
      if (m.tool_call_id != null && typeof m.tool_call_id !== "string") throw new TypeError(`messages[${i}].tool_call_id must be a string`);
      if (native) return { role: "tool", content: m.content, ...(m.tool_call_id != null ? { tool_call_id: m.tool_call_id } : {}), ...(m.name ? { name: m.name } : {}) };
      return { role: "user", content: `<tool_response>\n${m.content}\n</tool_response>` };
    }
    if (m.role === "assistant" && m.tool_calls != null) {
      const calls = incomingCalls(m.tool_calls, i);
      if (native) return { role: "assistant", content: m.content, tool_calls: calls };
      const text = calls.map((c) => `<tool_call>\n${JSON.stringify({ name: c.function.name, arguments: c.function.arguments })}\n</tool_call>`).join("\n");
      return { role: "assistant", content: m.content ? `${m.content}\n${text}` : text };
    }
    return { role: m.role, content: m.content };
  });
  if (!plan) return { messages: out };
  if (native) return { messages: out, tools: plan.tools };
  const prompt = toolsSystemPrompt(plan.tools);
  if (out[0]?.role === "system") out[0] = { ...out[0], content: `${out[0].content}\n\n${prompt}` };
  else out.unshift({ role: "system", content: prompt });
  return { messages: out };
}

export function toolCallId(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return `call_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** One call from its JSON text; null when it is not a call of one of `tools`. */
function readCall(json: string, argsKeys: string[], tools: FunctionTool[]): ToolCall | null {
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch {
    return null;
  }
  if (!isObject(v) || typeof v.name !== "string" || !tools.some((t) => t.function.name === v.name)) return null;
  const key = argsKeys.find((k) => k in v);
  const args = key === undefined ? {} : v[key];
  return { id: toolCallId(), type: "function", function: { name: v.name, arguments: typeof args === "string" ? args : JSON.stringify(args) } };
}

/**
 * Splits generated text into content and tool calls. Text that looks like a call but
 * is not one (bad JSON, an unknown tool) stays content.
 */
export function parseToolCalls(text: string, plan: ToolPlan): { content: string | null; toolCalls: ToolCall[] } {
  const calls: ToolCall[] = [];
  let content = text;
  if (plan.format === "hermes") {
    content = text.replace(/<tool_call>\s*([\s\S]*?)\s*(?:<\/tool_call>|$)/g, (block, json: string) => {
      const call = readCall(json, ["arguments", "parameters"], plan.tools);
      if (!call) return block;
      calls.push(call);
      return "";
    });
  } else {
    const body = text.trim().replace(/^<\|python_tag\|>/, "");
    const call = body.startsWith("{") ? readCall(body, ["parameters", "arguments"], plan.tools) : null;
    if (call) {
      calls.push(call);
      content = "";
    }
  }
  content = content.trim();
  return { content: calls.length && !content ? null : calls.length ? content : text, toolCalls: calls };
}

/**
 * Streaming: content deltas pass through until the text could be the start of a tool
 * call; from there on it is held, and parsed when generation ends.
 */
export class ToolCallStream {
  private text = "";
  private emitted = 0;

  constructor(private readonly plan: ToolPlan) {}

  /** Adds a delta; returns the content that is safe to stream now. */
  push(delta: string): string {
    this.text += delta;
    if (this.plan.choice !== "auto") return ""; // the whole output is calls
    const hold = this.holdFrom();
    const out = this.text.slice(this.emitted, Math.max(this.emitted, hold));
    this.emitted = Math.max(this.emitted, hold);
    return out;
  }

  /** Where held text begins: the start of a (possible) call, else the end. */
  private holdFrom(): number {
    const t = this.text;
    if (this.plan.format === "llama3_json") return /^\s*$/.test(t) || /^\s*[{<]/.test(t) ? 0 : t.length;
    const at = t.indexOf("<tool_call>");
    if (at >= 0) return at;
    // a suffix that is a prefix of "<tool_call>"
    for (let n = Math.min(t.length, "<tool_call>".length - 1); n > 0; n--) if ("<tool_call>".startsWith(t.slice(t.length - n))) return t.length - n;
    return t.length;
  }

  /** At the end: the rest of the content and the calls (none unless `parse`: an answer cut off stays text). */
  finish(parse = true): { content: string; toolCalls: ToolCall[] } {
    const held = this.text.slice(this.emitted);
    if (!parse) return { content: held, toolCalls: [] };
    const { content, toolCalls } = parseToolCalls(held, this.plan);
    return { content: toolCalls.length ? (content ?? "") : held, toolCalls };
  }
}
