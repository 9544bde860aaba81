/**
 * Chat templates under limits. A bundle's template is code from whoever built the
 * bundle, run by @huggingface/jinja's interpreter on the calling thread: left alone,
 * `{% for i in range(1000000000) %}` allocates a billion-element array and V8 kills the
 * process with an uncatchable out-of-memory error. Here every template runs with a
 * bounded `range()`, a cap on the size of every string and list it builds (and so of
 * its output), a step budget and a time budget; passing one is a TemplateError, and
 * the process lives on.
 *
 * How: the interpreter evaluates every node through one public method, `evaluate`;
 * a subclass counts the steps, checks the clock and measures each value there.
 */
import { Environment, Interpreter, Template } from "@huggingface/jinja";

/** A chat template that does not parse, fails, or passes one of the limits. */
export class TemplateError extends Error {
  override name = "TemplateError";
}

export interface TemplateLimits {
  /** wall-clock budget of one render (default 1000 ms) */
  maxMs: number;
  /** longest string (the output included) a render may build (default 1 Mi characters) */
  maxChars: number;
  /** longest list (a `range()` included) and most iterations of one loop (default 100 000) */
  maxItems: number;
  /** most nodes evaluated in one render (default 5 000 000) */
  maxSteps: number;
}

export const DEFAULT_TEMPLATE_LIMITS: TemplateLimits = { maxMs: 1000, maxChars: 1 << 20, maxItems: 100_000, maxSteps: 5_000_000 };

/** Templates longer than this are refused unparsed (real ones are a few KB). */
const MAX_SOURCE_CHARS = 1 << 20;

const FIX = "the bundle's chat template is broken or hostile: fix it in tokenizer_config.json and package the model again";

type Value = { type: string; value: unknown };
type Node = { type: string; [key: string]: any };

/**
 * Filters whose numeric argument is a width that multiplies the output (`indent(n)` puts
 * n spaces before every line): checked before they run, so that `indent(200000000)`
 * is refused before it allocates hundreds of MB.
 */
const WIDTH_FILTERS = new Set(["indent", "tojson", "center", "ljust", "rjust", "wordwrap"]);
const MAX_WIDTH = 1000;

class BoundedInterpreter extends Interpreter {
  private steps = 0;
  private readonly deadline: number;

  constructor(
    env: Environment,
    private readonly limits: TemplateLimits,
  ) {
    super(env);
    this.deadline = performance.now() + limits.maxMs;
  }

  override evaluate(...args: Parameters<Interpreter["evaluate"]>): ReturnType<Interpreter["evaluate"]> {
    const lim = this.limits;
    if (++this.steps > lim.maxSteps) throw new TemplateError(`the chat template took more than ${lim.maxSteps} steps; ${FIX}`);
    if (performance.now() > this.deadline) throw new TemplateError(`the chat template ran for more than ${lim.maxMs} ms; ${FIX}`);
    const [node, env] = args;
    if (node && (node.type === "FilterExpression" || node.type === "FilterStatement")) this.checkWidths(node as unknown as Node, env);
    const out = super.evaluate(...args);
    const v = (out as Value).value;
    if (typeof v === "string" && v.length > lim.maxChars) {
      throw new TemplateError(`the chat template built a string of ${v.length} characters, over the limit of ${lim.maxChars}; ${FIX}`);
    }
    const items = Array.isArray(v) ? v.length : v instanceof Map ? v.size : 0;
    if (items > lim.maxItems) {
      throw new TemplateError(`the chat template built a list of ${items} items, over the limit of ${lim.maxItems}; ${FIX}`);
    }
    return out;
  }

  /** Refuses a width filter whose numeric arguments exceed MAX_WIDTH (arguments are pure: evaluating them twice is safe). */
  private checkWidths(node: Node, env: Environment): void {
    const filter = node.filter as Node | undefined;
    if (filter?.type !== "CallExpression" || filter.callee?.type !== "Identifier" || !WIDTH_FILTERS.has(filter.callee.value)) return;
    for (const arg of filter.args as Node[]) {
      const expr = arg.type === "KeywordArgumentExpression" ? arg.value : arg;
      const v = (this.evaluate(expr, env) as Value).value;
      if (typeof v === "number" && v > MAX_WIDTH) {
        throw new TemplateError(`the chat template calls ${filter.callee.value}() with a width of ${v}, over the limit of ${MAX_WIDTH}; ${FIX}`);
      }
    }
  }
}

/** `range()` as Python's, refusing more than `maxItems` items before making any. */
function boundedRange(maxItems: number) {
  return (start: unknown, stop?: unknown, step: unknown = 1): number[] => {
    if (stop === undefined || stop === null) [start, stop] = [0, start];
    for (const a of [start, stop, step]) {
      if (typeof a !== "number" || !Number.isSafeInteger(a)) throw new TemplateError(`range() takes integers, got ${String(a)}`);
    }
    const [a, b, s] = [start as number, stop as number, step as number];
    if (s === 0) throw new TemplateError("range() step must not be zero");
    const count = Math.max(0, Math.ceil((b - a) / s));
    if (count > maxItems) throw new TemplateError(`range() of ${count} items in the chat template is over the limit of ${maxItems}; ${FIX}`);
    return Array.from({ length: count }, (_, i) => a + i * s);
  };
}

/** strftime_now(format): the common directives, in local time. */
function strftimeNow(format: unknown): string {
  const d = new Date();
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  const month = d.toLocaleString("en-US", { month: "long" });
  const day = d.toLocaleString("en-US", { weekday: "long" });
  const codes: Record<string, string> = {
    d: pad(d.getDate()), m: pad(d.getMonth() + 1), Y: String(d.getFullYear()), y: pad(d.getFullYear() % 100),
    H: pad(d.getHours()), M: pad(d.getMinutes()), S: pad(d.getSeconds()),
    B: month, b: month.slice(0, 3), A: day, a: day.slice(0, 3), "%": "%",
  };
  return String(format).replace(/%(.)/g, (all, c: string) => codes[c] ?? all);
}

export class ChatTemplate {
  private readonly program: Template["parsed"];

  constructor(source: string) {
    if (source.length > MAX_SOURCE_CHARS) throw new TemplateError(`the chat template has ${source.length} characters, over ${MAX_SOURCE_CHARS}; ${FIX}`);
    try {
      this.program = new Template(source).parsed;
    } catch (e) {
      // (a parse error quotes the template, which is the bundle's own text)
      throw new TemplateError(`the chat template does not parse: ${(e as Error).message}`.slice(0, 300));
    }
  }

  /** Renders with `vars` (messages, add_generation_prompt, special tokens ...) under `limits`. */
  render(vars: Record<string, unknown>, limits: Partial<TemplateLimits> = {}): string {
    const lim = { ...DEFAULT_TEMPLATE_LIMITS, ...limits };
    const env = new Environment();
    const globals: Record<string, unknown> = {
      true: true, false: false, none: null, True: true, False: false, None: null,
      raise_exception: (msg: unknown) => {
        throw new TemplateError(`the chat template refused the conversation: ${String(msg).slice(0, 300)}`);
      },
      range: boundedRange(lim.maxItems),
      strftime_now: strftimeNow,
      ...vars,
    };
    for (const [k, v] of Object.entries(globals)) env.set(k, v);
    let out: unknown;
    try {
      out = new BoundedInterpreter(env, lim).run(this.program);
    } catch (e) {
      if (e instanceof TemplateError) throw e;
      // jinja's own errors, and RangeErrors of V8 (a string past its maximum, a macro
      // recursing past the stack)
      throw new TemplateError(`the chat template failed: ${(e as Error)?.message ?? String(e)}`.slice(0, 300), { cause: e });
    }
    const text = (out as Value).value;
    return typeof text === "string" ? text : "";
  }
}
