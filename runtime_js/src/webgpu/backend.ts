/**
 * The WebGPU backend: interprets the bundle's plan.json (docs/plan.md) with the
 * bundle's WGSL kernels. Load: read and check the plan, open a device that meets the
 * chosen variant's features and limits, allocate the plan's buffers, compile every
 * kernel once while the weights stream in through a staging sink, then build the
 * bind groups. Run: PlanCalls' prefill (in chunks of the plan's prefill_chunk) and
 * decode over the executor; each call reads back the last token's logits (f32).
 */
import { BackendUnsupportedError, type Backend, type BackendLoadOptions } from "../backend.js";
import type { BundleLoader, LoadStats } from "../loader.js";
import type { Manifest } from "../manifest.js";
import { type Plan, parsePlan, weightBlocks } from "../plan.js";
import { PlanCalls } from "../plan_calls.js";
import { type AdapterInfo, type DeviceOptions, describeAdapter, openDevice } from "./device.js";
import { PlanExecutor } from "./executor.js";
import { compileKernels } from "./kernels.js";
import { StagingSink, type UploadLog } from "./weights.js";

export interface WebGpuBackendOptions extends DeviceOptions {
  /** shards streamed at once (each needs a staging buffer); default 2 */
  concurrency?: number;
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
  /** set once loaded */
  private calls: PlanCalls | null = null;

  constructor(private readonly opts: WebGpuBackendOptions = {}) {}

  get label(): string {
    return this.variant ? `WebGPU ${this.variant}` : "WebGPU";
  }

  get contextWindow(): number | undefined {
    return this.plan?.context_window;
  }

  /** e.g. "WebGPU f32 on SwiftShader Device (Subzero)" */
  get description(): string {
    return this.adapter ? `${this.label} on ${describeAdapter(this.adapter)}` : this.label;
  }

  async load(manifest: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    const { signal, onProgress } = opts;
    signal?.throwIfAborted();
    if (!manifest.files.some((f) => f.path === "plan.json")) {
      throw new BackendUnsupportedError("the bundle has no plan.json (it was packaged without WebGPU kernels; package it again)");
    }
    const plan = parsePlan(await loader.fetchJson("plan.json", signal), manifest);
    const opened = await openDevice(plan, this.opts, { maxBufferSize: StagingSink.stagingBytes(manifest) });
    this.device = opened.device;
    this.variant = opened.variant;
    this.adapter = opened.info;
    this.limits = opened.limits;
    this.plan = plan;
    const device = opened.device;
    signal?.throwIfAborted();

    const ex = await PlanExecutor.allocate(device, plan, opened.variant);
    this.executor = ex;
    const report = (text: string) => onProgress?.({ phase: "backend", bytesDone: 0, bytesTotal: 0, shard: -1, shards: manifest.shards.length, text });
    report(`${this.description}: compiling ${Object.keys(plan.kernels).length} kernels`);
    const compiling = compileKernels(device, plan, opened.variant, (path) => loader.fetchText(path, signal));
    compiling.catch(() => {}); // awaited below; not unhandled if the weights fail first
    const sink = new StagingSink(device, manifest, loader.layout, weightBlocks(plan), ex.buffers);
    try {
      this.loadStats = await loader.loadShards(sink, { signal, onProgress, concurrency: this.opts.concurrency });
      ex.prepare(await compiling);
      await device.queue.onSubmittedWorkDone();
      this.calls = new PlanCalls("WebGPU", plan, manifest.model.config.vocab_size, ex);
    } finally {
      this.uploads = sink.log;
      sink.destroy();
    }
    report(`${this.description}: ready`);
  }

  async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    return this.loaded().prefill(tokens, pastLen);
  }

  async decode(token: number, pos: number): Promise<Float32Array> {
    return this.loaded().decode(token, pos);
  }

  reset(): void {
    // Positions past a call's past_len are overwritten by it: nothing to clear.
  }

  unload(): void {
    this.calls = null;
    this.executor?.destroy();
    this.executor = null;
    this.device?.destroy();
    this.device = null;
  }

  private loaded(): PlanCalls {
    if (!this.calls) throw new Error("the WebGPU backend is not loaded");
    return this.calls;
  }
}
