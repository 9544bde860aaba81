/**
 * The public engine: load a bundle, then chat in the OpenAI shape.
 *
 *   const engine = await createEngine(url, { onProgress, signal, backend });
 *   const res = await engine.chat.completions.create({ messages, max_tokens: 64 });
 *   for await (const chunk of await engine.chat.completions.create({ messages, stream: true })) ...
 *
 * Requests run one at a time, in call order, on the one backend; `interrupt()` ends
 * the running one (finish_reason "abort").
 */
import { type Backend, type BackendFactory, type BackendInfo, chooseBackend } from "./backend.js";
import type { ShardCache } from "./cache.js";
import type { FetchLike } from "./fetch.js";
import { BundleLoader, type LoadStats, type ProgressCallback } from "./loader.js";
import type { Manifest } from "./manifest.js";
import type { LogitsProcessorFactory } from "./logits_processor.js";
import {
  type ChatCompletion,
  type ChatCompletionChoice,
  type ChatCompletionChunk,
  type ChatCompletionRequest,
  type ChatCompletionTokenLogprob,
  chatMessages,
  completionId,
  generationParams,
  logprobEntries,
  usage,
} from "./openai.js";
import { GrammarCompilerCache } from "./grammar/constraint.js";
import { structuredRequest } from "./grammar/request.js";
import type { GrammarSpec } from "./grammar/response_format.js";
import { grammarVocab } from "./grammar/vocab.js";
import { type SpeculativeOptions, speculativeOptions } from "./prompt_lookup.js";
import { REGISTRY_SCHEME, resolveRegistryModel } from "./registry.js";
import { ContextWindowError, type GenerationEvent, type GenerationParams, type GenerationResult, Session } from "./session.js";
import { DEFAULT_TEMPLATE_LIMITS } from "./template.js";
import { BundleTokenizer, type ChatMessage } from "./tokenizer.js";
import { type FunctionTool, parseToolCalls, ToolCallStream, type ToolPlan } from "./tools.js";

/**
 * Most characters per token a prompt may average. Prompts are measured in characters
 * before they are tokenized: a hostile or mistaken 1 MiB prompt would otherwise spend
 * seconds in the tokenizer only to be refused for its token count. Real text averages
 * 3 to 5 characters per token; 32 leaves room for long whitespace and symbol runs.
 */
export const MAX_CHARS_PER_TOKEN = 32;

export interface EngineOptions {
  onProgress?: ProgressCallback;
  /** aborts the load */
  signal?: AbortSignal;
  /**
   * a Backend, a factory, or a registered name ("webgpu", "wasm"); default "auto":
   * of the backends that can run the bundle here, never a software WebGPU adapter
   * while Wasm can run, and the faster decode step when several can (measured once
   * per bundle and device); `engine.backendInfo` says which and why
   */
  backend?: Backend | BackendFactory | string;
  /** root URL of an llmpack registry, for locations written `registry:ID[@VERSION]` */
  registryUrl?: string | URL;
  /** sha256 (hex) the bundle's manifest.json must have (set from the index for registry ids) */
  manifestSha256?: string;
  /** Node: directory of the shard cache (default ~/.cache/llmpack/shards) */
  cacheDir?: string;
  /** a custom persistent store, or null for none */
  cache?: ShardCache | null;
  fetch?: FetchLike;
  /**
   * prompt-lookup speculative decoding (drafts copied from the prompt, checked in one
   * batched step; the same output) for requests that do not say: options, true (the
   * defaults) or false; default false. Used where the backend can verify drafts.
   */
  speculative?: SpeculativeOptions | boolean;
}

export interface GenerateOptions extends GenerationParams {
  /** called with each piece of text as it is generated */
  onText?: (delta: string) => void;
  /** aborting rejects the call with an AbortError (the engine stays usable) */
  signal?: AbortSignal;
}

export interface RequestOptions {
  /**
   * aborting rejects the request with an AbortError (a stream's iteration throws it),
   * whether it is queued or running; the engine stays usable for the next request
   */
  signal?: AbortSignal;
  /**
   * more LogitsProcessors for this request (run after logit_bias), made afresh for each
   * choice: constrained decoding plugs in here
   */
  logitsProcessors?: LogitsProcessorFactory;
  /** speculative decoding for this request (see EngineOptions.speculative) */
  speculative?: SpeculativeOptions | boolean;
}

export async function createEngine(bundleUrl: string | URL, opts: EngineOptions = {}): Promise<Engine> {
  const { signal, onProgress } = opts;
  if (typeof opts.speculative === "object") speculativeOptions(opts.speculative); // (checks before anything loads)
  let location = bundleUrl;
  let fetchFn = opts.fetch;
  let manifestSha256 = opts.manifestSha256;
  if (typeof bundleUrl === "string" && bundleUrl.startsWith(REGISTRY_SCHEME)) {
    if (!opts.registryUrl) throw new Error(`${bundleUrl}: pass {registryUrl} to createEngine to load a model by registry id`);
    const model = await resolveRegistryModel(bundleUrl, { registryUrl: opts.registryUrl, fetch: opts.fetch, signal });
    location = model.baseUrl;
    fetchFn = model.fetch ?? opts.fetch;
    manifestSha256 = model.entry.manifest_sha256;
  }
  const loader = await BundleLoader.open(location, { fetch: fetchFn, cache: opts.cache, cacheDir: opts.cacheDir, signal, onProgress, manifestSha256 });
  const m = loader.manifest;
  onProgress?.({ phase: "files", bytesDone: 0, bytesTotal: 0, shard: -1, shards: m.shards.length, text: "loading the tokenizer" });
  const tokenizer = await BundleTokenizer.load(m, loader, signal);
  const { backend, info } = await chooseBackend(opts.backend, m, loader, {
    signal,
    onProgress,
    onTry: (name) =>
      onProgress?.({ phase: "backend", bytesDone: 0, bytesTotal: 0, shard: -1, shards: m.shards.length, text: `preparing the ${name} backend` }),
  });
  onProgress?.({ phase: "ready", bytesDone: 0, bytesTotal: 0, shard: -1, shards: m.shards.length, text: "ready" });
  return new Engine(m, tokenizer, backend, loader, opts.backend, info, opts.speculative);
}

export class Engine {
  readonly chat: {
    completions: {
      create(req: ChatCompletionRequest & { stream: true }, opts?: RequestOptions): Promise<AsyncIterable<ChatCompletionChunk>>;
      create(req: ChatCompletionRequest & { stream?: false | null }, opts?: RequestOptions): Promise<ChatCompletion>;
      create(req: ChatCompletionRequest, opts?: RequestOptions): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>>;
    };
  };
  private session: Session;
  /** compiled grammars (constrained decoding), made on the first request that needs one */
  private grammars: GrammarCompilerCache | null = null;
  private current: Backend;
  private currentInfo: BackendInfo;
  /** tail of the request queue */
  private queue: Promise<void> = Promise.resolve();
  /** bumped by interrupt(): a running request stops when it changes */
  private interrupts = 0;
  private unloaded = false;

  constructor(
    readonly manifest: Manifest,
    readonly tokenizer: BundleTokenizer,
    backend: Backend,
    readonly loader: BundleLoader,
    /** what createEngine was asked for, for reload() */
    private readonly backendChoice?: Backend | BackendFactory | string,
    info?: BackendInfo,
    /** speculative decoding for requests that do not say (EngineOptions.speculative) */
    private readonly speculative: SpeculativeOptions | boolean = false,
  ) {
    this.current = backend;
    this.currentInfo = info ?? { name: backend.name, label: backend.label ?? backend.name, reason: "a backend was passed to the Engine" };
    this.session = this.newSession(backend);
    const create = (req: ChatCompletionRequest, opts?: RequestOptions) => this.createChatCompletion(req, opts);
    this.chat = { completions: { create: create as Engine["chat"]["completions"]["create"] } };
  }

  /** What runs the model (a new one after reload()). */
  get backend(): Backend {
    return this.current;
  }

  /** Which backend runs the model and why it was chosen, e.g. {name: "wasm", label, reason}. */
  get backendInfo(): BackendInfo {
    return this.currentInfo;
  }

  private newSession(backend: Backend): Session {
    const window = Math.min(this.manifest.memory.context_window, backend.contextWindow ?? Infinity);
    return new Session(backend, this.tokenizer, window, this.manifest.generation, this.manifest.model.config.vocab_size, this.speculative);
  }

  /**
   * Loads the model again on a fresh backend (a new WebGPU device, a new Wasm memory)
   * once the running request ended, e.g. after a DeviceLostError; verified shards come
   * from the persistent cache. The conversation's KV cache starts empty.
   */
  async reload(opts: { signal?: AbortSignal; onProgress?: ProgressCallback } = {}): Promise<void> {
    const release = await this.acquire(opts.signal);
    try {
      this.interrupt();
      await this.session.idle();
      await Promise.resolve(this.current.unload()).catch(() => {});
      const { backend, info } = await chooseBackend(this.backendChoice, this.manifest, this.loader, opts);
      this.current = backend;
      this.currentInfo = info;
      this.session = this.newSession(backend);
    } finally {
      release();
    }
  }

  get modelName(): string {
    return this.manifest.model.name;
  }

  get contextWindow(): number {
    return this.session.contextWindow;
  }

  /** The longest prompt, in characters, that is tokenized at all (context window x MAX_CHARS_PER_TOKEN). */
  get maxPromptChars(): number {
    return this.contextWindow * MAX_CHARS_PER_TOKEN;
  }

  private checkPromptChars(chars: number, what: string): void {
    if (chars <= this.maxPromptChars) return;
    throw new ContextWindowError(
      `${what} has ${chars} characters; this bundle's context window of ${this.contextWindow} tokens holds at most ` +
        `${this.maxPromptChars} (${MAX_CHARS_PER_TOKEN} per token): shorten it`,
    );
  }

  /** The prompt ids of a conversation, its size checked before the template and the tokenizer run. */
  private chatPrompt(messages: ChatMessage[], tools?: FunctionTool[]): number[] {
    this.checkPromptChars(messages.reduce((n, m) => n + m.content.length, 0) + (tools ? JSON.stringify(tools).length : 0), "the conversation");
    const limits = { maxChars: Math.max(DEFAULT_TEMPLATE_LIMITS.maxChars, 2 * this.maxPromptChars) };
    const text = this.tokenizer.applyChatTemplate(messages, { limits, extra: tools ? { tools } : {} });
    this.checkPromptChars(text.length, "the conversation rendered by the chat template");
    return this.tokenizer.encode(text, { addSpecialTokens: false });
  }

  /**
   * Generates from a raw prompt (no chat template; the tokenizer adds its special
   * tokens). One text: n > 1 and logprobs need chat.completions.create.
   */
  async generate(prompt: string, opts: GenerateOptions = {}): Promise<string> {
    const { onText, signal, ...params } = opts;
    this.assertLoaded();
    if ((params.n ?? 1) !== 1 || params.logprobs || params.top_logprobs != null) {
      throw new TypeError("generate() returns one text: use chat.completions.create for n > 1 or logprobs");
    }
    this.session.resolve(params); // (checks before anything runs)
    this.checkPromptChars(prompt.length, "the prompt");
    const ids = this.tokenizer.encode(prompt);
    let text = "";
    await this.exclusive(async () => {
      const run = this.session.run(ids, params, this.stopCheck(signal));
      for (let r = await run.next(); !r.done; r = await run.next()) {
        text += r.value;
        onText?.(r.value);
      }
      signal?.throwIfAborted();
    }, signal);
    return text;
  }

  /** Ends the running request, if any, at its next token. */
  interrupt(): void {
    this.interrupts++;
  }

  /**
   * Ends the running request, waits for its backend call to return, and frees the
   * backend. Later calls reject. (A stream that was neither finished nor closed keeps
   * its place in the queue: `for await ... break` closes it.)
   */
  async unload(): Promise<void> {
    if (this.unloaded) return;
    this.unloaded = true;
    this.interrupt();
    await this.session.idle();
    await this.current.unload();
  }

  private async createChatCompletion(req: ChatCompletionRequest, opts: RequestOptions = {}): Promise<ChatCompletion | AsyncIterable<ChatCompletionChunk>> {
    this.assertLoaded();
    const structured = structuredRequest(req, chatMessages(req), this.tokenizer.chatTemplateSource());
    const params: GenerationParams = { ...generationParams(req), logitsProcessors: opts.logitsProcessors, speculative: opts.speculative };
    const n = this.session.resolve(params).n ?? 1; // (checks before anything runs)
    const prompt = this.chatPrompt(structured.messages, structured.tools);
    if (structured.grammar) params.logitsProcessors = await this.constrained(structured.grammar, n, opts.logitsProcessors);
    const meta = { id: completionId(), created: Math.floor(Date.now() / 1000), model: req.model ?? this.modelName };
    if (req.stream) return this.streamChat(prompt, params, meta, opts.signal, structured.plan);

    const choices: ChatCompletionChoice[] = Array.from({ length: n }, (_, index) => ({
      index,
      message: { role: "assistant", content: "", refusal: null },
      finish_reason: "length",
      logprobs: params.logprobs ? { content: [], refusal: null } : null,
    }));
    let result!: GenerationResult;
    await this.exclusive(async () => {
      const run = this.session.generate(prompt, params, this.stopCheck(opts.signal));
      let r = await run.next();
      for (; !r.done; r = await run.next()) {
        const e = r.value;
        const choice = choices[e.choice]!; // (e.choice < n)
        choice.message.content += e.text;
        if (e.logprobs) choice.logprobs?.content?.push(...this.logprobs(e));
        if (e.finishReason) choice.finish_reason = e.finishReason;
      }
      result = r.value;
      opts.signal?.throwIfAborted();
    }, opts.signal);
    if (structured.plan) for (const c of choices) readToolCalls(c, structured.plan);
    return {
      ...meta,
      object: "chat.completion",
      choices: choices as ChatCompletion["choices"], // (n >= 1)
      usage: usage(result),
      timings: result.timings,
    };
  }

  /**
   * Processors that hold each of the `n` choices to `spec` (after the request's own),
   * compiled before the request takes its turn. A grammar that does not compile rejects
   * the request (a GrammarError, a TypeError).
   */
  private async constrained(spec: GrammarSpec, n: number, more?: LogitsProcessorFactory): Promise<LogitsProcessorFactory> {
    this.grammars ??= new GrammarCompilerCache(
      () => grammarVocab(this.tokenizer.tokenizerJson, this.tokenizer.tokens(), this.tokenizer.specialTokenIds(), this.tokenizer.eosTokenIds),
      this.manifest.model.config.vocab_size,
    );
    const grammars = this.grammars;
    const processors = await Promise.all(Array.from({ length: n }, () => grammars.processor(spec)));
    return (choice) => [...(more?.(choice) ?? []), processors[choice]!];
  }

  private logprobs(e: GenerationEvent): ChatCompletionTokenLogprob[] {
    return e.logprobs ? logprobEntries(e.logprobs, this.tokenizer) : [];
  }

  private async *streamChat(
    prompt: number[],
    params: GenerationParams,
    meta: { id: string; created: number; model: string },
    signal?: AbortSignal,
    plan: ToolPlan | null = null,
  ): AsyncGenerator<ChatCompletionChunk> {
    type Choice = ChatCompletionChunk["choices"][0];
    const chunk = (index: number, delta: Choice["delta"], finish: Choice["finish_reason"] = null, logprobs: Choice["logprobs"] = null): ChatCompletionChunk => ({
      ...meta,
      object: "chat.completion.chunk",
      choices: [{ index, delta, finish_reason: finish, logprobs }],
    });
    const release = await this.acquire(signal);
    try {
      const run = this.session.generate(prompt, params, this.stopCheck(signal));
      const n = params.n ?? 1;
      for (let c = 0; c < n; c++) yield chunk(c, { role: "assistant", content: "" });
      // with tools: content that may begin a call is held, and parsed when the choice ends
      const calls = plan ? Array.from({ length: n }, () => new ToolCallStream(plan)) : null;
      let r = await run.next();
      let last: { choice: number; finishReason: Choice["finish_reason"] } | null = null;
      for (; !r.done; r = await run.next()) {
        signal?.throwIfAborted();
        const e = r.value;
        // (a choice's finish chunk waits for the next event: the last one carries usage)
        if (last) yield chunk(last.choice, {}, last.finishReason);
        last = null;
        const text = calls ? calls[e.choice]!.push(e.text) : e.text;
        const logprobs = e.logprobs ? { content: this.logprobs(e), refusal: null } : null;
        if (text || logprobs) yield chunk(e.choice, { content: text }, null, logprobs);
        if (e.finishReason) {
          last = { choice: e.choice, finishReason: e.finishReason };
          const end = calls?.[e.choice]!.finish(e.finishReason === "stop"); // (a call cut off by max_tokens stays text)
          if (end?.content) yield chunk(e.choice, { content: end.content });
          if (end?.toolCalls.length) {
            yield chunk(e.choice, { tool_calls: end.toolCalls.map((c, index) => ({ index, ...c })) });
            last.finishReason = "tool_calls";
          }
        }
      }
      signal?.throwIfAborted();
      const end = chunk(last?.choice ?? n - 1, {}, last?.finishReason ?? r.value.finishReason);
      yield { ...end, usage: usage(r.value), timings: r.value.timings };
    } finally {
      release();
    }
  }

  /** Runs `fn` when every earlier request finished. */
  private async exclusive(fn: () => Promise<void>, signal?: AbortSignal): Promise<void> {
    const release = await this.acquire(signal);
    try {
      await fn();
    } finally {
      release();
    }
  }

  private async acquire(signal?: AbortSignal): Promise<() => void> {
    this.assertLoaded();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const before = this.queue;
    this.queue = before.then(() => mine);
    await before;
    if (signal?.aborted || this.unloaded) {
      release();
      signal?.throwIfAborted();
      this.assertLoaded();
    }
    return release;
  }

  /** Interrupts that happened before the request began do not count. */
  private stopCheck(signal?: AbortSignal): () => boolean {
    const at = this.interrupts;
    return () => this.interrupts !== at || this.unloaded || !!signal?.aborted;
  }

  private assertLoaded(): void {
    if (this.unloaded) throw new Error("this engine was unloaded");
  }
}

/** A finished choice's text -> tool_calls (finish_reason "tool_calls") where it made calls. */
function readToolCalls(choice: ChatCompletionChoice, plan: ToolPlan): void {
  if (choice.finish_reason !== "stop") return; // (a call cut off by max_tokens is left as text)
  const { content, toolCalls } = parseToolCalls(choice.message.content ?? "", plan);
  if (!toolCalls.length) return;
  choice.message.content = content;
  choice.message.tool_calls = toolCalls;
  choice.finish_reason = "tool_calls";
}
