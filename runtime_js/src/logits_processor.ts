/**
 * A stage of next-token selection that edits the logits before the sampler picks a
 * token, and is told which token was picked: logit_bias, grammar-constrained decoding
 * (response_format, tool calls). The sampler runs the processors of a request in order.
 */
export interface LogitsProcessor {
  /** Edit `logits` (one value per vocabulary entry) in place; -Infinity forbids a token. */
  process(logits: Float32Array): void;
  /** The token that was picked (after every processor ran and the sampler chose). */
  accept(token: number): void;
  /**
   * True when nothing but the end of generation is allowed any more (a grammar that
   * completed): the session then ends the choice with finish_reason "stop" after the
   * token just accepted, without sampling an end-of-sequence token.
   */
  isDone?(): boolean;
}

/**
 * Makes the processors of one choice of a request (they hold per-sequence state, so
 * every choice of `n > 1` gets its own). Called once per choice, in choice order,
 * before that choice's first token; `choice` is the choice's index.
 */
export type LogitsProcessorFactory = (choice: number) => LogitsProcessor[];
