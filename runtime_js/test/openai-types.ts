/**
 * Compile-time check (tsc --noEmit, the first step of `npm test`) of the runtime's chat
 * types against the official `openai` package's, for the parts the runtime supports:
 *
 * - requests: what an app built on `openai` sends (its messages and the parameters the
 *   engine honours; tools: function tools) is a valid request here, and a request here
 *   (less the non-standard top_k, repetition_penalty and grammar response_format, with a
 *   model) is one for OpenAI;
 * - responses: a completion, a chunk and their usage here are what `openai`'s types
 *   describe, apart from finish_reason "abort" (interrupt() and unload() end a request
 *   with it; OpenAI has no such reason), which the checks exclude;
 * - logprobs entries both ways.
 *
 * Nothing here runs. A `@ts-expect-error` line fails the compile when its line stops
 * being an error, so the checks can fail both ways.
 */
import type OpenAI from "openai";
import type { ChatCompletionCreateParamsBase } from "openai/resources/chat/completions/completions";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionMessageParam,
  ChatCompletionRequest,
  ChatCompletionTokenLogprob,
  ChoiceLogprobs,
  CompletionUsage,
} from "../src/openai.js";

type Params = OpenAI.Chat.ChatCompletionCreateParamsNonStreaming;
type StreamingParams = OpenAI.Chat.ChatCompletionCreateParamsStreaming;

/** The request fields the engine honours. */
type Supported =
  | "response_format"
  | "parallel_tool_calls"
  | "messages"
  | "model"
  | "stream"
  | "stream_options"
  | "max_tokens"
  | "max_completion_tokens"
  | "temperature"
  | "top_p"
  | "stop"
  | "seed"
  | "frequency_penalty"
  | "presence_penalty"
  | "n"
  | "logit_bias"
  | "logprobs"
  | "top_logprobs";

/**
 * Tools: function tools only (OpenAI's custom tools and allowed_tools choices are not
 * supported: refused at run time).
 */
type FunctionToolsOnly<T> = Omit<T, "tools" | "tool_choice"> & {
  tools?: OpenAI.Chat.ChatCompletionFunctionTool[] | undefined;
  tool_choice?: Exclude<OpenAI.Chat.ChatCompletionToolChoiceOption, OpenAI.Chat.ChatCompletionAllowedToolChoice | OpenAI.Chat.ChatCompletionNamedToolChoiceCustom> | undefined;
};
type FunctionCallsOnly<M> = M extends { role: "assistant" } ? Omit<M, "tool_calls"> & { tool_calls?: OpenAI.Chat.ChatCompletionMessageFunctionToolCall[] } : M;
type Message = FunctionCallsOnly<OpenAI.Chat.ChatCompletionMessageParam>;
type Request<P extends Params | StreamingParams> = FunctionToolsOnly<Omit<Pick<P, Supported | "tools" | "tool_choice">, "messages"> & { messages: Message[] }>;

/** Our types with OpenAI's finish reasons only. */
type WithoutAbort<T> = T extends { finish_reason: infer F } ? Omit<T, "finish_reason"> & { finish_reason: Exclude<F, "abort"> } : T;
type Completion = Omit<ChatCompletion, "choices"> & { choices: WithoutAbort<ChatCompletion["choices"][number]>[] };
type Chunk = Omit<ChatCompletionChunk, "choices"> & { choices: WithoutAbort<ChatCompletionChunk["choices"][number]>[] };

export const checks = {
  // requests: openai -> ours
  request: (r: Request<Params>): ChatCompletionRequest => r,
  streamingRequest: (r: Request<StreamingParams>): ChatCompletionRequest & { stream: true } => r,
  message: (m: Message): ChatCompletionMessageParam => m,
  // requests: ours -> openai (the parameters; our messages take any role string)
  // (response_format less its non-standard "grammar" form)
  params: (
    r: Omit<ChatCompletionRequest, "top_k" | "repetition_penalty" | "messages" | "response_format"> & {
      model: string;
      response_format?: Exclude<NonNullable<ChatCompletionRequest["response_format"]>, { type: "grammar" }>;
    },
  ): Omit<ChatCompletionCreateParamsBase, "messages"> => r,
  // responses: ours -> openai
  completion: (c: Completion): OpenAI.Chat.ChatCompletion => c,
  chunk: (c: Chunk): OpenAI.Chat.ChatCompletionChunk => c,
  usage: (u: CompletionUsage): OpenAI.CompletionUsage => u,
  // logprobs: both ways
  logprob: (l: ChatCompletionTokenLogprob): OpenAI.Chat.ChatCompletionTokenLogprob => l,
  theirLogprob: (l: OpenAI.Chat.ChatCompletionTokenLogprob): ChatCompletionTokenLogprob => l,
  logprobs: (l: ChoiceLogprobs): OpenAI.Chat.ChatCompletion.Choice.Logprobs => l,
  theirLogprobs: (l: OpenAI.Chat.ChatCompletion.Choice.Logprobs): ChoiceLogprobs => l,
};

export const mustFail = {
  // @ts-expect-error "abort" is not an OpenAI finish reason: the exclusion above is needed
  abort: (c: ChatCompletion): OpenAI.Chat.ChatCompletion => c,
  // @ts-expect-error logit_bias maps token ids to numbers
  bias: (): ChatCompletionRequest => ({ messages: [], logit_bias: { "1": "up" } }),
  // @ts-expect-error a logprob entry without bytes is not one
  bytes: (l: Omit<OpenAI.Chat.ChatCompletionTokenLogprob, "bytes">): ChatCompletionTokenLogprob => l,
};
