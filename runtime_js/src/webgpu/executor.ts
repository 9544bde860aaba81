/**
 * Runs a plan's entry points on a WebGPU device: the plan's buffers, one bind group
 * per dispatch and one uniform buffer per distinct uniform list (all made once, at
 * load), then per call: write the tokens, rewrite the uniform buffers whose values
 * changed, record every dispatch in one compute pass, submit, and (for the call whose
 * logits are wanted) copy the logits into a mappable buffer and read them back.
 * No per-model code: everything comes from plan.json.
 */
import { BackendUnsupportedError } from "../backend.js";
import { EntryProgram, type Plan, PlanError, bufferBytes, checkCall, logitsBuffer, planBytes } from "../plan.js";
import { BufferUsage, MapMode } from "./gpu.js";
import type { CompiledKernel } from "./kernels.js";

interface PreparedEntry {
  program: EntryProgram;
  /** per uniform slot: its buffer and what it holds */
  uniformBuffers: GPUBuffer[];
  uniformValues: Uint32Array[];
  pipelines: GPUComputePipeline[];
  bindGroups: GPUBindGroup[];
}

const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

export class PlanExecutor {
  readonly buffers = new Map<string, GPUBuffer>();
  private readonly entries = new Map<string, PreparedEntry>();
  private readonly tokenScratch: Uint32Array;
  private readonly logits: Float32Array;
  private readonly logitsBytes: number;
  private readback: GPUBuffer | null = null;
  private pendingErrors: Promise<GPUError | null>[] = [];
  private lostReason: string | null = null;
  private destroyed = false;

  private constructor(
    readonly device: GPUDevice,
    readonly plan: Plan,
    readonly variant: string,
  ) {
    this.tokenScratch = new Uint32Array(Math.max(...Object.values(plan.entries).map((e) => e.max_seq_len), 1));
    const out = logitsBuffer(plan);
    this.logits = new Float32Array(out.elements);
    this.logitsBytes = out.elements * 4;
    device.lost.then((info) => {
      this.lostReason = info.message || info.reason || "unknown reason";
    });
  }

  /**
   * Creates every buffer of the plan (zero-filled, as WebGPU guarantees). Rejects
   * with a BackendUnsupportedError when the device cannot allocate them.
   */
  static async allocate(device: GPUDevice, plan: Plan, variant: string): Promise<PlanExecutor> {
    const ex = new PlanExecutor(device, plan, variant);
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    for (const [name, buf] of Object.entries(plan.buffers)) {
      ex.buffers.set(name, device.createBuffer({ label: name, size: bufferBytes(buf, variant), usage: BufferUsage.STORAGE | BufferUsage.COPY_DST | BufferUsage.COPY_SRC }));
    }
    ex.readback = device.createBuffer({ label: "logits readback", size: Math.max(16, ex.logitsBytes), usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    const [validation, oom] = [await device.popErrorScope(), await device.popErrorScope()];
    const err = oom ?? validation;
    if (err) {
      ex.destroy();
      const what = `${MiB(planBytes(plan, variant))} of buffers (weights ${MiB(planBytes(plan, variant, "weight"))}, KV cache ${MiB(planBytes(plan, variant, "kv_cache"))})`;
      throw new BackendUnsupportedError(`the GPU could not allocate ${what}: ${err.message}`);
    }
    return ex;
  }

  /** Builds bind groups and uniform buffers for every entry point (after the kernels compiled). */
  prepare(kernels: Map<string, CompiledKernel>): void {
    const device = this.device;
    for (const [name, entry] of Object.entries(this.plan.entries)) {
      const program = new EntryProgram(name, entry);
      const uniformBuffers = program.slots.map((u, s) =>
        device.createBuffer({ label: `${name} uniforms ${s}`, size: Math.max(16, Math.ceil((4 * u.length) / 16) * 16), usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST }),
      );
      const uniformValues = program.slots.map((u) => new Uint32Array(u.length));
      const pipelines: GPUComputePipeline[] = [];
      const bindGroups: GPUBindGroup[] = [];
      entry.dispatches.forEach((d, i) => {
        const k = kernels.get(d.kernel)!;
        const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: uniformBuffers[program.slotOf[i]] } }];
        for (const [binding, buf] of d.bindings) entries.push({ binding, resource: { buffer: this.buffers.get(buf)! } });
        pipelines.push(k.pipeline);
        bindGroups.push(device.createBindGroup({ label: d.label ?? d.kernel, layout: k.layout, entries }));
      });
      this.entries.set(name, { program, uniformBuffers, uniformValues, pipelines, bindGroups });
    }
  }

  /**
   * Runs `entry` on `tokens` at positions pastLen.. (the plan's limits apply). With
   * `read`, resolves to the logits of the last token (a Float32Array reused by the
   * next read); otherwise resolves once the work is queued.
   */
  async run(entry: string, tokens: ArrayLike<number>, pastLen: number, read: boolean): Promise<Float32Array | null> {
    if (this.destroyed) throw new Error("the WebGPU backend was unloaded");
    if (this.lostReason) throw new Error(`the WebGPU device was lost: ${this.lostReason}`);
    const n = tokens.length;
    checkCall(this.plan, entry, n, pastLen);
    const p = this.entries.get(entry);
    if (!p) throw new PlanError(`entry ${entry} was not prepared`);
    const device = this.device;
    const queue = device.queue;

    for (let i = 0; i < n; i++) this.tokenScratch[i] = tokens[i];
    queue.writeBuffer(this.buffers.get(this.plan.inputs.tokens)!, 0, this.tokenScratch, 0, n);
    const prog = p.program;
    prog.evaluate(n, pastLen);
    for (let s = 0; s < prog.slots.length; s++) {
      if (prog.fillSlot(s, p.uniformValues[s])) queue.writeBuffer(p.uniformBuffers[s], 0, p.uniformValues[s]);
    }

    const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
    device.pushErrorScope("validation");
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    const c = prog.counts;
    let current: GPUComputePipeline | null = null;
    for (let i = 0; i < p.bindGroups.length; i++) {
      const x = c[3 * i];
      const y = c[3 * i + 1];
      const z = c[3 * i + 2];
      if (x === 0 || y === 0 || z === 0) continue;
      if (x > maxGroups || y > maxGroups || z > maxGroups) {
        pass.end();
        await device.popErrorScope();
        throw new PlanError(`${entry} dispatch ${i} needs ${x}x${y}x${z} workgroups; this device allows ${maxGroups} per dimension`);
      }
      if (p.pipelines[i] !== current) pass.setPipeline((current = p.pipelines[i]));
      pass.setBindGroup(0, p.bindGroups[i]);
      pass.dispatchWorkgroups(x, y, z);
    }
    pass.end();
    if (read) enc.copyBufferToBuffer(this.buffers.get(this.plan.outputs.logits)!, 0, this.readback!, 0, this.logitsBytes);
    queue.submit([enc.finish()]);
    this.pendingErrors.push(device.popErrorScope());
    if (!read) return null;

    await this.readback!.mapAsync(MapMode.READ, 0, this.logitsBytes);
    this.logits.set(new Float32Array(this.readback!.getMappedRange(0, this.logitsBytes)));
    this.readback!.unmap();
    const errors = await Promise.all(this.pendingErrors);
    this.pendingErrors = [];
    const err = errors.find((e) => e);
    if (err) throw new Error(`WebGPU rejected the ${entry} commands: ${err.message}`);
    return this.logits;
  }

  /** A copy of a plan buffer's bytes (for tests and debugging). */
  async readBuffer(name: string): Promise<Uint8Array> {
    const src = this.buffers.get(name);
    if (!src) throw new Error(`no plan buffer ${name}`);
    const tmp = this.device.createBuffer({ size: src.size, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(src, 0, tmp, 0, src.size);
    this.device.queue.submit([enc.finish()]);
    await tmp.mapAsync(MapMode.READ);
    const out = new Uint8Array(tmp.getMappedRange().slice(0));
    tmp.destroy();
    return out;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const b of this.buffers.values()) b.destroy();
    for (const p of this.entries.values()) for (const b of p.uniformBuffers) b.destroy();
    this.readback?.destroy();
    this.buffers.clear();
    this.entries.clear();
  }
}
