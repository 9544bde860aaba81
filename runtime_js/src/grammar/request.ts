/**
 * A chat request's structured-output fields (response_format, tools, tool_choice,
 * parallel_tool_calls) -> what the engine needs: the conversation and `tools` for the
 * chat template, the grammar of the output, and how to read tool calls back out.
 * Everything is checked here, before anything runs.
 */
import { type FunctionTool, templateConversation, templateToolSupport, type ToolPlan, toolGrammar, toolPlan } from "../tools.js";
import type { ChatMessage } from "../tokenizer.js";
import { type GrammarSpec, responseFormatSpec } from "./response_format.js";

export interface StructuredRequest {
  /** the conversation as the template takes it */
  messages: ChatMessage[];
  /** the template's `tools` variable (templates that render tools) */
  tools?: FunctionTool[];
  /** tool calls to read out of the output; null: none may be made */
  plan: ToolPlan | null;
  /** what the output is held to; null: free text */
  grammar: GrammarSpec | null;
}

export function structuredRequest(
  req: { response_format?: unknown; tools?: unknown; tool_choice?: unknown; parallel_tool_calls?: unknown },
  messages: ChatMessage[],
  templateSource: string | null,
): StructuredRequest {
  const format = responseFormatSpec(req.response_format);
  const plan = toolPlan(req, templateSource);
  if (format && plan) {
    throw new TypeError('response_format and tools cannot be combined in one request: drop one, or send tool_choice: "none"');
  }
  const native = templateToolSupport(templateSource).native;
  const conv = templateConversation(messages as Parameters<typeof templateConversation>[0], plan, native);
  return { ...conv, plan, grammar: format ?? (plan ? toolGrammar(plan) : null) };
}
