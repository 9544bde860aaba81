/**
 * OpenAI chat-completions shapes (the subset a local engine can honour) and the
 * translation of a request into generation parameters.
 */
import type { FinishReason, GenerationParams, GenerationResult, Timings, TokenLogprobs } from "./session.js";
import type { ResponseFormat } from "./grammar/response_format.js";
import type { BundleTokenizer, ChatMessage } from "./tokenizer.js";
import type { FunctionTool, ToolCall, ToolChoice } from "./tools.js";

/** a part of a message's content: only text parts are read (others are refused at run time) */
export type ContentPart = { type: string; text?: string } | { type: string; [key: string]: unknown };

export interface ChatCompletionMessageParam {
  role: "system" | "user" | "assistant" | "developer" | "tool" | string;
  /** absent or null: empty (an assistant turn that only called tools) */
  content?: string | ContentPart[] | null;
  name?: string;
  /** assistant messages: the calls it made (arguments as a JSON string) */
  tool_calls?: ToolCall[] | null;
  /** tool messages: the call this is the result of */
  tool_call_id?: string;
}

export interface ChatCompletionRequest {
  messages: ChatCompletionMessageParam[];
  model?: string;
  stream?: boolean | null;
  max_tokens?: number | null;
  /** OpenAI's newer name for max_tokens */
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  /** not in OpenAI's API; as in vLLM and WebLLM */
  top_k?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  /** not in OpenAI's API; Hugging Face semantics */
  repetition_penalty?: number | null;
  /** choices generated from one prefill of the prompt (1..16); choice i samples with seed + i */
  n?: number | null;
  /** token id (as a decimal string) -> -100..100, added to that token's logit */
  logit_bias?: Record<string, number> | null;
  /** report each generated token's logprob (choices[].logprobs.content) */
  logprobs?: boolean | null;
  /** with logprobs: the 0..20 most likely tokens at each position */
  top_logprobs?: number | null;
  stream_options?: { include_usage?: boolean } | null;
  /** output held by a grammar to JSON, a JSON schema, or an EBNF/GBNF grammar (src/grammar/) */
  response_format?: ResponseFormat | null;
  /** functions the model may call (src/tools.ts) */
  tools?: FunctionTool[];
  tool_choice?: ToolChoice;
  /** false: at most one call per answer */
  parallel_tool_calls?: boolean;
}

export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** cached_tokens: prompt tokens whose KV cache an earlier request left (not prefilled again) */
  prompt_tokens_details?: { cached_tokens: number };
}

/** A token's logprob, as OpenAI reports it (`bytes`: the token's UTF-8 bytes). */
export interface TopLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
}

export interface ChatCompletionTokenLogprob extends TopLogprob {
  /** the most likely tokens at this position, best first (top_logprobs of them) */
  top_logprobs: TopLogprob[];
}

/** choices[].logprobs when the request asked for logprobs */
export interface ChoiceLogprobs {
  content: ChatCompletionTokenLogprob[] | null;
  refusal: ChatCompletionTokenLogprob[] | null;
}

export interface ChatCompletionChoice {
  index: number;
  /** content null when the answer is tool calls only */
  message: { role: "assistant"; content: string | null; refusal: null; tool_calls?: ToolCall[] };
  finish_reason: FinishReason | "tool_calls";
  logprobs: ChoiceLogprobs | null;
}

export interface ChatCompletionChunkChoice {
  index: number;
  delta: { role?: "assistant"; content?: string; tool_calls?: (ToolCall & { index: number })[] };
  finish_reason: FinishReason | "tool_calls" | null;
  logprobs?: ChoiceLogprobs | null;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  /** n of them (index 0..n-1) */
  choices: [ChatCompletionChoice, ...ChatCompletionChoice[]];
  usage: CompletionUsage;
  /** not in OpenAI's API: where the time went */
  timings: Timings;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  /** one choice per chunk: `index` says which (choices are generated one after the other) */
  choices: [ChatCompletionChunkChoice];
  /** on the last chunk only (the last choice's finish_reason) */
  usage?: CompletionUsage;
  timings?: Timings;
}

const UNSUPPORTED = ["functions", "function_call"] as const;

/** Checks a request and turns its messages into template input. */
export function chatMessages(req: ChatCompletionRequest): ChatMessage[] {
  if (!req || !Array.isArray(req.messages) || req.messages.length === 0) {
    throw new TypeError("messages must be a non-empty array of {role, content}");
  }
  for (const key of UNSUPPORTED) {
    const v = (req as unknown as Record<string, unknown>)[key];
    if (v != null && v !== false) throw new TypeError(`${key} is not supported by this engine`);
  }
  return req.messages.map((m, i) => {
    if (!m || typeof m.role !== "string") throw new TypeError(`messages[${i}] has no role`);
    const msg: ChatMessage = { role: m.role, content: messageText(m.content, i) };
    // (checked and shaped for the template by src/tools.ts)
    if (m.tool_calls != null) msg.tool_calls = m.tool_calls;
    if (m.tool_call_id != null) msg.tool_call_id = m.tool_call_id;
    return msg;
  });
}

function messageText(content: ChatCompletionMessageParam["content"], i: number): string {
  if (content == null) return "";
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw new TypeError(`messages[${i}].content must be a string or an array of parts`);
  return content
    .map((part) => {
      if (part.type !== "text" || typeof part.text !== "string") {
        throw new TypeError(`messages[${i}] has a "${part.type}" part; only text parts are supported`);
      }
      return part.text;
    })
    .join("");
}

/** Request fields -> generation parameters (null and undefined both mean "default"). */
export function generationParams(req: ChatCompletionRequest): GenerationParams {
  const v = <T>(x: T | null | undefined): T | undefined => (x === null ? undefined : x);
  return {
    max_tokens: v(req.max_completion_tokens) ?? v(req.max_tokens),
    temperature: v(req.temperature),
    top_p: v(req.top_p),
    top_k: v(req.top_k),
    stop: v(req.stop),
    seed: v(req.seed),
    frequency_penalty: v(req.frequency_penalty),
    presence_penalty: v(req.presence_penalty),
    repetition_penalty: v(req.repetition_penalty),
    n: v(req.n),
    logit_bias: v(req.logit_bias),
    logprobs: v(req.logprobs),
    top_logprobs: v(req.top_logprobs),
  };
}

export function usage(r: GenerationResult): CompletionUsage {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
    prompt_tokens_details: { cached_tokens: r.cachedTokens },
  };
}

/** Token ids -> OpenAI's logprobs entries (token text and bytes from the tokenizer). */
export function logprobEntries(entries: TokenLogprobs[], tokenizer: BundleTokenizer): ChatCompletionTokenLogprob[] {
  const top = (token: number, logprob: number): TopLogprob => {
    const piece = tokenizer.tokenPiece(token);
    return { token: piece.text, logprob, bytes: piece.bytes };
  };
  return entries.map((e) => ({ ...top(e.token, e.logprob), top_logprobs: e.top.map((t) => top(t.token, t.logprob)) }));
}

export function completionId(): string {
  const bytes = new Uint8Array(12);
  globalThis.crypto.getRandomValues(bytes);
  return `chatcmpl-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
