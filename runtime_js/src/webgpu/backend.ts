/**
 * The WebGPU backend: interprets the bundle's plan.json (docs/plan.md) with the
 * bundle's WGSL kernels. Load: read and check the plan, open a device that meets the
 * chosen variant's features and limits, allocate the plan's buffers, compile every
 * kernel once while the weights stream in through a staging sink, then build the
 * bind groups. Run: prefill in chunks of the plan's prefill_chunk, decode one token
 * at a time; each call reads back the last token's logits (f32).
 */
import { BackendUnsupportedError, CallGuard, type Backend, type BackendLoadOptions } from "../backend.js";
import type { BundleLoader, LoadStats } from "../loader.js";
import type { Manifest } from "../manifest.js";
import { type Plan, parsePlan, weightBlocks } from "../plan.js";
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
  private vocab = 0;
  private readonly guard = new CallGuard("WebGPU");

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
    this.vocab = Number(manifest.model.config.vocab_size);
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
    } finally {
      this.uploads = sink.log;
      sink.destroy();
    }
    report(`${this.description}: ready`);
  }

  async prefill(tokens: Int32Array, pastLen: number): Promise<Float32Array> {
    const plan = this.plan!;
    if (tokens.length === 0) throw new RangeError("prefill needs at least one token");
    return this.exclusive(async () => {
      const chunk = Math.min(plan.prefill_chunk, plan.entries.prefill.max_seq_len);
      let logits: Float32Array | null = null;
      for (let i = 0; i < tokens.length; i += chunk) {
        const last = i + chunk >= tokens.length;
        logits = await this.executor!.run("prefill", tokens.subarray(i, Math.min(tokens.length, i + chunk)), pastLen + i, last);
      }
      return logits!;
    }, tokens);
  }

  async decode(token: number, pos: number): Promise<Float32Array> {
    const one = Int32Array.of(token);
    return this.exclusive(async () => (await this.executor!.run("decode", one, pos, true))!, one);
  }

  reset(): void {
    // Positions past a call's past_len are overwritten by it: nothing to clear.
  }

  unload(): void {
    this.executor?.destroy();
    this.executor = null;
    this.device?.destroy();
    this.device = null;
  }

  private async exclusive<T>(fn: () => Promise<T>, tokens: Int32Array): Promise<T> {
    if (!this.executor) throw new Error("the WebGPU backend is not loaded");
    return this.guard.run(tokens, this.vocab, fn);
  }
}
