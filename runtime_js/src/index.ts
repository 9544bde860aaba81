/**
 * llmpack runtime: streams an llmpack bundle into a backend and generates text.
 * One ES module for pages, Web Workers and Node.
 */
export { createEngine, Engine, MAX_CHARS_PER_TOKEN, type EngineOptions, type GenerateOptions, type RequestOptions } from "./engine.js";
export {
  type Backend,
  type BackendChoice,
  type BackendFactory,
  type BackendInfo,
  type BackendLoadOptions,
  BackendUnsupportedError,
  SoftwareDeviceError,
  TIMED_DECODE_STEPS,
  backendCandidates,
  chooseBackend,
  loadBackend,
  registerBackend,
  type ChooseOptions,
} from "./backend.js";
export { LocalStorageChoiceStore, MemoryChoiceStore, defaultChoiceStore, type BackendChoiceStore, type RememberedChoice } from "./backend_choice.js";
export { WEBCRYPTO_MAX_BYTES, hashMethod, sha256Hex, type HashMethod } from "./sha256.js";
export {
  BundleLoader,
  BundleFileError,
  BundlePathError,
  DEFAULT_STALL_MS,
  ShardError,
  bundleBaseUrl,
  type LoadPhase,
  type LoadShardsOptions,
  type LoadStats,
  type LoaderOptions,
  type ProgressCallback,
  type ProgressReport,
  type ShardSink,
} from "./loader.js";
export { ShardLayout, type PartSpan } from "./layout.js";
export { CacheApiCache, DirectoryCache, openDefaultCache, type CacheWriter, type ShardCache } from "./cache.js";
export { defaultFetch, type FetchLike } from "./fetch.js";
export {
  BUNDLE_FORMAT,
  BUNDLE_VERSION,
  ManifestError,
  isSafeBundlePath,
  parseManifest,
  type FileRecord,
  type Manifest,
  type PartRecord,
  type ShardRecord,
  type TensorRecord,
} from "./manifest.js";
export { BundleTokenizer, type ChatMessage } from "./tokenizer.js";
export { ChatTemplate, DEFAULT_TEMPLATE_LIMITS, TemplateError, type TemplateLimits } from "./template.js";
export { IncrementalDecoder } from "./detokenizer.js";
export { StopMatcher } from "./stop.js";
export { DEFAULT_SPECULATIVE, PromptLookup, speculativeOptions, type SpeculativeOptions } from "./prompt_lookup.js";
export { Prng, Sampler, TOP_SUM_MARGIN, type Choice, type SamplingParams, type TokenProb, type TopCandidates } from "./sampler.js";
export type { LogitsProcessor, LogitsProcessorFactory } from "./logits_processor.js";
export { LOGIT_BIAS_LIMIT, LogitBias, parseLogitBias } from "./logit_bias.js";
export { GrammarCompilerCache, GrammarError, GrammarProcessor, loadXGrammar } from "./grammar/constraint.js";
export { responseFormatSpec, type GrammarSpec, type ResponseFormat } from "./grammar/response_format.js";
export { grammarVocab, type GrammarVocab } from "./grammar/vocab.js";
export { parseToolCalls, templateToolSupport, toolPlan, type FunctionTool, type ToolCall, type ToolCallFormat, type ToolChoice, type ToolPlan } from "./tools.js";
export {
  ContextWindowError,
  MAX_CHOICES,
  MAX_TOP_LOGPROBS,
  Session,
  type ChoiceResult,
  type FinishReason,
  type GenerationEvent,
  type GenerationParams,
  type GenerationResult,
  type Timings,
  type TokenLogprobs,
} from "./session.js";
export type {
  ChatCompletion,
  ChatCompletionChoice,
  ChatCompletionChunk,
  ChatCompletionChunkChoice,
  ChatCompletionMessageParam,
  ChatCompletionRequest,
  ChatCompletionTokenLogprob,
  ChoiceLogprobs,
  CompletionUsage,
  TopLogprob,
} from "./openai.js";
export { checkExpr, evalExpr, ExprError, type Env } from "./expr.js";
export {
  EntryProgram,
  PLAN_FORMAT,
  PLAN_VERSION,
  PlanError,
  align,
  bufferBytes,
  checkCall,
  chooseVariant,
  forEachBlockPiece,
  itemBytes,
  parsePlan,
  planBytes,
  weightBlocks,
  type Dims,
  type Plan,
  type PlanBuffer,
  type PlanDispatch,
  type PlanEntry,
  type PlanKernel,
  type PlanVariant,
  type WeightBlock,
} from "./plan.js";
export { RUNTIME_VERSION, compareVersions, parseVersion } from "./version.js";
export { REGISTRY_SCHEME, RegistryError, parseRegistryRef, resolveRegistryModel, type RegistryVersion, type ResolvedModel } from "./registry.js";
// Registers the "webgpu" backend.
export * from "./webgpu/index.js";
// Registers the "wasm" backend.
export * from "./wasm/index.js";
