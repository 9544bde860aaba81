/**
 * The WebGPU backend: interprets the bundle's plan.json (docs/plan.md) with the
 * bundle's WGSL kernels. Load: read and check the plan, open a device that meets the
 * chosen variant's features and limits, allocate the plan's buffers, read every
 * kernel's source and compile those of prefill and decode while the weights stream in
 * through a staging sink, then build their bind groups; an optional entry's own kernels
 * (verify, argmax, topk) compile at its first run (PlanExecutor.prepareEntry; not in the
 * background after load: on a CPU-emulated GPU that slows the first request, see
 * runtime_js/README.md). Run: PlanCalls' prefill (in chunks of the plan's prefill_chunk)
 * and decode over the executor; each call reads back the last token's logits (f32); verify
 * (plans with the "verify" entry) reads back the logits of every token of its run.
 */
import { BackendUnsupportedError, type Backend, type BackendLoadOptions } from "../backend.js";
import type { BundleLoader, LoadStats } from "../loader.js";
import type { Manifest } from "../manifest.js";
import { type Plan, REQUIRED_ENTRIES, hasArgmax, hasVerifyArgmax, parsePlan, topKOf, verifyMaxTokens, weightBlocks } from "../plan.js";
import { PlanCalls } from "../plan_calls.js";
import type { TopCandidates } from "../sampler.js";
import { type AdapterInfo, type DeviceOptions, describeAdapter, openDevice } from "./device.js";
import { PlanExecutor } from "./executor.js";
import { KernelSet } from "./kernels.js";
import { StagingSink, type UploadLog } from "./weights.js";

export interface WebGpuBackendOptions extends DeviceOptions {
  /** shards streamed at once (each needs a staging buffer); default 2 */
  concurrency?: number;
  /**
   * Greedy decode steps pick the token on the GPU and read back its id (the plan's
   * "argmax" entry) instead of the vocabulary's logits, and greedy verify steps every
   * row's id (the "verify_argmax" entry) instead of the rows; default true. false: always
   * read the logits (to compare both paths).
   */
  deviceArgmax?: boolean;
  /**
   * Top-k / top-p decode steps read back the plan's "topk" entry's candidates (K largest
   * logits and the softmax sum) instead of the logits where they decide the token; default
   * true. false: always read the logits (to compare both paths).
   */
  deviceTopK?: boolean;
}

export class WebGpuBackend implements Backend {
  readonly name = "webgpu";
  /** the kernel variant in use ("f16" or "f32"), once loaded */
  variant: string | null = null;
  adapter: AdapterInfo | null = null;
  /** the limits requested from the device */
  limits: Record<string, number> | null = null;
  plan: Plan | null = null;
  /** what the loader did (network vs cache) and what reached the weight buffers */
  loadStats: LoadStats | null = null;
  uploads: UploadLog | null = null;
  private device: GPUDevice | null = null;
  private executor: PlanExecutor | null = null;
  private bundle: { manifest: Manifest; loader: BundleLoader } | null = null;
  /** set once prepared: the required entries' kernels compiling, then their bind groups made */
  private preparing: Promise<void> | null = null;
  /** set once the kernels compiled and the bind groups were made */
  private calls: PlanCalls | null = null;
  private weightsLoaded = false;

  constructor(private readonly opts: WebGpuBackendOptions = {}) {}

  get label(): string {
    return this.variant ? `WebGPU ${this.variant}` : "WebGPU";
  }

  get contextWindow(): number | undefined {
    return this.plan?.context_window;
  }

  get kvRewindLimit(): number | undefined {
    return this.plan?.kv_rewind_limit;
  }

  /** e.g. "WebGPU f32 on SwiftShader Device (Subzero)" */
  get description(): string {
    return this.adapter ? `${this.label} on ${describeAdapter(this.adapter)}` : this.label;
  }

  get deviceKey(): string {
    return this.adapter ? `${describeAdapter(this.adapter)} ${this.variant}` : "";
  }

  async load(manifest: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    await this.prepare(manifest, loader, opts);
    await this.loadWeights(opts);
  }

  /** Plan, device, buffers; starts compiling the kernels (Backend.prepare). */
  async prepare(manifest: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    const { signal, onProgress } = opts;
    signal?.throwIfAborted();
    if (!manifest.files.some((f) => f.path === "plan.json")) {
      throw new BackendUnsupportedError("the bundle has no plan.json (it was packaged without WebGPU kernels; package it again)");
    }
    const plan = parsePlan(await loader.fetchJson("plan.json", signal), manifest);
    const deviceOpts = { ...this.opts, refuseSoftware: this.opts.refuseSoftware || opts.refuseSoftware };
    const opened = await openDevice(plan, deviceOpts, { maxBufferSize: StagingSink.stagingBytes(manifest) });
    this.device = opened.device;
    this.variant = opened.variant;
    this.adapter = opened.info;
    this.limits = opened.limits;
    this.plan = plan;
    this.bundle = { manifest, loader };
    signal?.throwIfAborted();

    this.executor = await PlanExecutor.allocate(opened.device, plan, opened.variant);
    const kernels = new KernelSet(opened.device, plan, opened.variant, (path) => loader.fetchText(path, signal));
    const now = new Set(REQUIRED_ENTRIES.flatMap((e) => plan.entries[e].dispatches.map((d) => d.kernel))).size;
    this.report(opts, `${this.description}: compiling ${now} of ${Object.keys(plan.kernels).length} kernels (the others at first use)`);
    // (awaited by ready(); not unhandled if the weights fail first)
    this.preparing = Promise.all([kernels.sourcesRead(), this.executor.prepare(kernels)]).then(() => {});
    this.preparing.catch(() => {});
  }

  /** Streams the weights through a staging sink while the kernels compile (Backend.loadWeights). */
  async loadWeights(opts: BackendLoadOptions = {}): Promise<void> {
    const { device, executor, bundle } = this;
    if (!device || !executor || !bundle) throw new Error("the WebGPU backend was not prepared");
    const { manifest, loader } = bundle;
    const sink = new StagingSink(device, manifest, loader.layout, weightBlocks(this.plan!), executor.buffers);
    try {
      this.loadStats = await loader.loadShards(sink, { signal: opts.signal, onProgress: opts.onProgress, concurrency: this.opts.concurrency });
      await this.ready();
      await device.queue.onSubmittedWorkDone();
      this.weightsLoaded = true;
    } finally {
      this.uploads = sink.log;
      sink.destroy();
    }
    this.report(opts, `${this.description}: ready`);
  }

  /** Median ms of a decode step, on whatever the weight buffers hold (Backend.timeDecode). */
  async timeDecode(steps: number): Promise<number> {
    return (await this.ready()).timeDecode(steps);
  }

  /** The kernels compiled and the bind groups made. */
  private async ready(): Promise<PlanCalls> {
    if (!this.calls) {
      if (!this.executor || !this.preparing || !this.bundle) throw new Error("the WebGPU backend was not prepared");
      const ex = this.executor;
      await this.preparing;
      this.calls = new PlanCalls("WebGPU", this.plan!, this.bundle.manifest.model.config.vocab_size, ex);
    }
    return this.calls;
  }

  private report(opts: BackendLoadOptions, text: string): void {
    const shards = this.bundle?.manifest.shards.length ?? 0;
    opts.onProgress?.({ phase: "backend", bytesDone: 0, bytesTotal: 0, shard: -1, shards, text });
  }

  async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    return this.loaded().prefill(tokens, pastLen);
  }

  async decode(token: number, pos: number): Promise<Float32Array> {
    return this.loaded().decode(token, pos);
  }

  /** Backend.argmaxOnDevice: the plan has the argmax entry (and deviceArgmax is not false). */
  get argmaxOnDevice(): boolean {
    return this.opts.deviceArgmax !== false && this.plan !== null && hasArgmax(this.plan);
  }

  async decodeArgmax(token: number, pos: number): Promise<number> {
    return this.loaded().decodeArgmax(token, pos);
  }

  /** Backend.topKOnDevice: K of the plan's topk entry (0 without one, or with deviceTopK false). */
  get topKOnDevice(): number {
    return this.opts.deviceTopK !== false && this.plan !== null ? topKOf(this.plan) : 0;
  }

  async decodeTopK(token: number, pos: number, invTemperature: number): Promise<TopCandidates> {
    return this.loaded().decodeTopK(token, pos, invTemperature);
  }

  async readLastLogits(): Promise<Float32Array> {
    return this.loaded().readLastLogits();
  }

  /** Backend.verifyMaxTokens: the plan's verify entry's max_seq_len; undefined without the entry. */
  get verifyMaxTokens(): number | undefined {
    return this.plan ? verifyMaxTokens(this.plan) : undefined;
  }

  /** Backend.verify: one run of the plan's verify entry, one readback of tokens.length × vocab logits. */
  async verify(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    return this.loaded().verify(tokens, pastLen);
  }

  /** Backend.verifyArgmaxOnDevice: the plan has the verify_argmax entry (and deviceArgmax is not false). */
  get verifyArgmaxOnDevice(): boolean {
    return this.opts.deviceArgmax !== false && this.plan !== null && hasVerifyArgmax(this.plan);
  }

  /** Backend.verifyArgmax: verify, then the verify_argmax entry; 8 bytes a row read back. */
  async verifyArgmax(tokens: Int32Array, pastLen: number): Promise<Int32Array> {
    return this.loaded().verifyArgmax(tokens, pastLen);
  }

  /**
   * Names of the kernels compiled so far (sorted): after load those of prefill and decode;
   * an optional entry's (verify, argmax, topk) join at its first call.
   */
  compiledKernels(): string[] {
    return this.executor?.compiledKernels() ?? [];
  }

  reset(): void {
    // Positions past a call's past_len are overwritten by it: nothing to clear.
  }

  unload(): void {
    this.calls = null;
    this.weightsLoaded = false;
    this.preparing = null;
    this.executor?.destroy();
    this.executor = null;
    this.device?.destroy();
    this.device = null;
  }

  private loaded(): PlanCalls {
    if (!this.calls || !this.weightsLoaded) throw new Error("the WebGPU backend is not loaded");
    return this.calls;
  }
}
