/**
 * Runs a plan's entry points on a WebGPU device: the plan's buffers (made at load), one
 * bind group per dispatch and one uniform buffer per distinct uniform list of an entry
 * (made once: at load for the required entries, prefill and decode; at its first run,
 * after its kernels compiled, for an optional one), then per run of an entry point: write the tokens, rewrite the uniform buffers
 * whose values changed, record every dispatch in one compute pass and submit; when the
 * logits are wanted, copy them into a mappable buffer and read them back. The loop
 * around the runs (chunks, window, one call at a time) is PlanCalls'.
 * No per-model code: everything comes from plan.json.
 */
import { BackendUnsupportedError } from "../backend.js";
import {
  type ArrayPlanBuffer,
  type Dims,
  EntryProgram,
  type Plan,
  type PlanEntry,
  PlanError,
  REQUIRED_ENTRIES,
  align,
  bufferBytes,
  hasVerify,
  logitsBuffer,
  planBytes,
} from "../plan.js";
import type { PlanDevice } from "../plan_calls.js";
import { BufferUsage, MapMode } from "./gpu.js";
import type { CompiledKernel, KernelSet } from "./kernels.js";

interface PreparedEntry {
  program: EntryProgram;
  /** per uniform slot of the program: its buffer and what it holds */
  uniforms: { buffer: GPUBuffer; values: Uint32Array }[];
  /** per dispatch */
  dispatches: { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup }[];
}

const MiB = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/**
 * The WebGPU device was lost (driver reset, GPU removed, out of memory, destroyed):
 * the request that was running ends with this error, and so does every later call.
 * `engine.reload()` (or a new createEngine) loads the bundle on a fresh device.
 */
export class DeviceLostError extends Error {
  override name = "DeviceLostError";
}

/**
 * After an allocation failed: about how many bytes of buffers the device can still
 * give, found by allocating chunks until it refuses (at most `limit`), then freeing them.
 */
async function probeDeviceBytes(device: GPUDevice, limit: number): Promise<number> {
  const chunk = Math.min(device.limits.maxBufferSize, 64 << 20);
  const held: GPUBuffer[] = [];
  let total = 0;
  try {
    while (total < limit) {
      device.pushErrorScope("out-of-memory");
      device.pushErrorScope("validation");
      const b = device.createBuffer({ label: "memory probe", size: chunk, usage: BufferUsage.STORAGE });
      const [validation, oom] = [await device.popErrorScope(), await device.popErrorScope()];
      if (validation || oom) {
        b.destroy();
        break;
      }
      held.push(b);
      total += chunk;
    }
  } finally {
    for (const b of held) b.destroy();
  }
  return total;
}

export class PlanExecutor implements PlanDevice {
  readonly buffers = new Map<string, GPUBuffer>();
  private readonly entries = new Map<string, PreparedEntry>();
  /** per entry asked for: its kernels compiling, then its bind groups made (shared by concurrent runs) */
  private readonly preparing = new Map<string, Promise<PreparedEntry>>();
  private kernels: KernelSet | null = null;
  private readonly logits: Float32Array;
  private readonly logitsBytes: number;
  private readback: GPUBuffer | null = null;
  /** 16 bytes: the id the argmax entry wrote */
  private tokenReadback: GPUBuffer | null = null;
  /** readWords' mappable buffer (the topk entry's candidates), made at the first read */
  private wordsReadback: GPUBuffer | null = null;
  /** the verify entry's logits of every token (outputs.logits_rows), when the plan has it */
  private rowsReadback: GPUBuffer | null = null;
  private rows: Float32Array | null = null;
  /** validation error scopes of the runs since the last read */
  private pendingErrors: { entry: string; error: Promise<GPUError | null> }[] = [];
  private lostReason: string | null = null;
  private destroyed = false;

  private constructor(
    readonly device: GPUDevice,
    readonly plan: Plan,
    readonly variant: string,
  ) {
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
    ex.tokenReadback = device.createBuffer({ label: "next token readback", size: 16, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    if (hasVerify(plan)) {
      const rows = plan.buffers[plan.outputs.logits_rows!] as ArrayPlanBuffer; // hasVerify: parsePlan checked it
      ex.rows = new Float32Array(rows.elements);
      ex.rowsReadback = device.createBuffer({ label: "logits rows readback", size: Math.max(16, rows.elements * 4), usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    }
    const [validation, oom] = [await device.popErrorScope(), await device.popErrorScope()];
    const err = oom ?? validation;
    if (err) {
      ex.destroy();
      const need = planBytes(plan, variant);
      const kv = planBytes(plan, variant, "kv_cache");
      const what = `${MiB(need)} of buffers (weights ${MiB(planBytes(plan, variant, "weight"))}, KV cache ${MiB(kv)} for ${plan.context_window} tokens)`;
      let text = `the GPU could not allocate ${what}: ${err.message}`;
      const can = await probeDeviceBytes(device, need).catch(() => null);
      if (can !== null) {
        const fits = Math.min(plan.context_window, Math.floor((can - (need - kv)) / (kv / plan.context_window || Infinity)));
        text += `; it gave about ${MiB(can)}`;
        text += fits >= 1
          ? `, which holds a context window of about ${fits} tokens: package the model with --context-window ${fits} (or less)`
          : ", less than the weights alone: use a smaller quantization or a smaller model";
      }
      throw new BackendUnsupportedError(text);
    }
    return ex;
  }

  /**
   * Compiles the kernels of the required entries (prefill, decode) and builds their bind
   * groups and uniform buffers; every other entry is prepared by its first run
   * (prepareEntry), from `kernels`.
   */
  async prepare(kernels: KernelSet): Promise<void> {
    this.kernels = kernels;
    await Promise.all(REQUIRED_ENTRIES.map((name) => this.prepareEntry(name)));
  }

  /**
   * Entry `name` ready to run: its kernels compiled (those not compiled yet, concurrently)
   * and its bind groups and uniform buffers made, once; concurrent callers share the work.
   * Rejects with the KernelCompileError of a kernel that failed (and so does every later
   * run of that entry; the other entries run on).
   */
  prepareEntry(name: string): Promise<void> {
    return this.preparedEntry(name).then(() => {});
  }

  /** Names of the kernels compiled so far (sorted): the required entries' after load, then those of each optional entry run. */
  compiledKernels(): string[] {
    return this.kernels?.compiled() ?? [];
  }

  private preparedEntry(name: string): Promise<PreparedEntry> {
    let p = this.preparing.get(name);
    if (!p) {
      const kernels = this.kernels;
      const entry = Object.prototype.hasOwnProperty.call(this.plan.entries, name) ? this.plan.entries[name] : undefined;
      if (!kernels) return Promise.reject(new Error("the WebGPU executor has no kernels (prepare was not called)"));
      if (!entry) return Promise.reject(new PlanError(`the plan has no entry ${name}`));
      p = kernels.compile(entry.dispatches.map((d) => d.kernel)).then((compiled) => {
        this.checkUsable(); // (unloaded or lost while compiling: no bind groups on a dead device)
        const prepared = this.build(name, entry, compiled);
        this.entries.set(name, prepared);
        return prepared;
      });
      p.catch(() => {}); // rejects the runs that await it
      this.preparing.set(name, p);
    }
    return p;
  }

  /** The bind groups and uniform buffers of one entry point. */
  private build(name: string, entry: PlanEntry, kernels: Map<string, CompiledKernel>): PreparedEntry {
    const device = this.device;
    const program = new EntryProgram(name, entry);
    const uniforms = program.slots.map((u, s) => ({
      buffer: device.createBuffer({ label: `${name} uniforms ${s}`, size: Math.max(16, Math.ceil((4 * u.length) / 16) * 16), usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST }),
      values: new Uint32Array(u.length),
    }));
    const dispatches = entry.dispatches.map((d, i) => {
      const k = kernels.get(d.kernel);
      if (!k) throw new PlanError(`kernel ${d.kernel} was not compiled`);
      // slotOf has one entry per dispatch, an index into program.slots, which uniforms maps one to one
      const slot = uniforms[program.slotOf[i]!]!;
      const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: slot.buffer } }];
      for (const [binding, buf] of d.bindings) entries.push({ binding, resource: { buffer: this.planBuffer(buf) } });
      return { pipeline: k.pipeline, bindGroup: device.createBindGroup({ label: d.label ?? d.kernel, layout: k.layout, entries }) };
    });
    return { program, uniforms, dispatches };
  }

  /** PlanDevice: queues the write of the token ids. */
  writeTokens(tokens: Int32Array): void {
    this.checkUsable();
    // ids are checked non-negative, so their int32 bytes are the u32 the kernels read
    this.device.queue.writeBuffer(this.planBuffer(this.plan.inputs.tokens), 0, tokens);
  }

  /**
   * PlanDevice: records every dispatch of `entry` for `dims` in one compute pass and
   * submits it; resolves once queued (readLogits waits for the work and reports errors).
   * The first run of an optional entry waits for its kernels to compile (prepareEntry).
   */
  async runEntry(entry: string, dims: Dims): Promise<void> {
    this.checkUsable();
    let p = this.entries.get(entry);
    if (!p) {
      p = await this.preparedEntry(entry);
      this.checkUsable();
    }
    const device = this.device;
    const queue = device.queue;
    const prog = p.program;
    prog.evaluate(dims.seq_len, dims.past_len);
    p.uniforms.forEach((u, s) => {
      if (prog.fillSlot(s, u.values)) queue.writeBuffer(u.buffer, 0, u.values);
    });

    const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
    device.pushErrorScope("validation");
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    const c = prog.counts;
    let current: GPUComputePipeline | null = null;
    for (const [i, { pipeline, bindGroup }] of p.dispatches.entries()) {
      // counts holds 3 values per dispatch
      const x = c[3 * i]!;
      const y = c[3 * i + 1]!;
      const z = c[3 * i + 2]!;
      if (x === 0 || y === 0 || z === 0) continue;
      if (x > maxGroups || y > maxGroups || z > maxGroups) {
        pass.end();
        await device.popErrorScope();
        throw new PlanError(`${entry} dispatch ${i} needs ${x}x${y}x${z} workgroups; this device allows ${maxGroups} per dimension`);
      }
      if (pipeline !== current) pass.setPipeline((current = pipeline));
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(x, y, z);
    }
    pass.end();
    queue.submit([enc.finish()]);
    this.pendingErrors.push({ entry, error: device.popErrorScope() });
  }

  /**
   * PlanDevice: copies the logits into the mappable buffer, waits for them and resolves
   * to them (a Float32Array reused by the next read); rejects when WebGPU refused any
   * run since the last read.
   */
  async readLogits(): Promise<Float32Array> {
    const readback = this.readback;
    if (!readback) throw new Error("the WebGPU executor has no readback buffer");
    await this.copyOut(this.plan.outputs.logits, readback, this.logitsBytes);
    this.logits.set(new Float32Array(readback.getMappedRange(0, this.logitsBytes)));
    readback.unmap();
    await this.checkRuns();
    return this.logits;
  }

  /**
   * PlanDevice: the id the plan's argmax entry wrote (4 bytes read back); rejects as
   * readLogits does.
   */
  async readNextToken(): Promise<number> {
    const readback = this.tokenReadback;
    const out = this.plan.outputs.next_token;
    if (!readback || out === undefined) throw new PlanError("the plan has no next_token output");
    await this.copyOut(out, readback, 4);
    const id = new Uint32Array(readback.getMappedRange(0, 4))[0]!; // 4 bytes mapped
    readback.unmap();
    await this.checkRuns();
    return id;
  }

  /** PlanDevice: queues the write of f32 values at the start of plan buffer `name`. */
  writeF32(name: string, values: Float32Array): void {
    this.checkUsable();
    this.device.queue.writeBuffer(this.planBuffer(name), 0, values);
  }

  /** PlanDevice: the first `count` words of plan buffer `name` (a copy); rejects as readLogits does. */
  async readWords(name: string, count: number): Promise<Uint32Array> {
    const bytes = 4 * count;
    if (!this.wordsReadback || this.wordsReadback.size < bytes) {
      this.wordsReadback?.destroy();
      this.wordsReadback = this.device.createBuffer({ label: "words readback", size: Math.max(16, align(bytes)), usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    }
    const readback = this.wordsReadback;
    await this.copyOut(name, readback, bytes);
    const out = new Uint32Array(readback.getMappedRange(0, bytes).slice(0));
    readback.unmap();
    await this.checkRuns();
    return out;
  }

  /**
   * PlanDevice: the first `rows` rows (× vocab floats) of the verify entry's output, read
   * back at once (a view of an array reused by the next read); rejects as readLogits does.
   */
  async readLogitsRows(rows: number): Promise<Float32Array> {
    const readback = this.rowsReadback;
    const out = this.plan.outputs.logits_rows;
    if (!readback || !this.rows || out === undefined) throw new PlanError("the plan has no logits_rows output");
    const n = rows * this.logits.length;
    if (!(rows >= 1 && n <= this.rows.length)) throw new RangeError(`logits_rows holds ${this.rows.length / this.logits.length} rows, not ${rows}`);
    await this.copyOut(out, readback, n * 4);
    this.rows.set(new Float32Array(readback.getMappedRange(0, n * 4)));
    readback.unmap();
    await this.checkRuns();
    return this.rows.subarray(0, n);
  }

  /** Copies the first `bytes` of plan buffer `name` into `readback` and maps it. */
  private async copyOut(name: string, readback: GPUBuffer, bytes: number): Promise<void> {
    this.checkUsable();
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(this.planBuffer(name), 0, readback, 0, bytes);
    this.device.queue.submit([enc.finish()]);
    try {
      await readback.mapAsync(MapMode.READ, 0, bytes);
    } catch (e) {
      // A device lost mid-call fails the map: say so (the loss may be reported just after).
      await Promise.race([this.device.lost, new Promise((r) => setTimeout(r, 200))]);
      this.checkUsable();
      throw e;
    }
  }

  /** Rejects when WebGPU refused any run since the last read. */
  private async checkRuns(): Promise<void> {
    const pending = this.pendingErrors;
    this.pendingErrors = [];
    for (const { entry, error } of pending) {
      const err = await error;
      if (err) throw new Error(`WebGPU rejected the ${entry} commands: ${err.message}`);
    }
  }

  private checkUsable(): void {
    if (this.destroyed) throw new Error("the WebGPU backend was unloaded");
    if (this.lostReason) {
      throw new DeviceLostError(
        `the WebGPU device was lost (${this.lostReason}); this request ended: reload the engine (engine.reload()) to continue`,
      );
    }
  }

  /** The GPU buffer of a plan buffer (every plan buffer has one once allocated). */
  private planBuffer(name: string): GPUBuffer {
    const b = this.buffers.get(name);
    if (!b) throw new PlanError(`plan buffer ${name} has no GPU buffer`);
    return b;
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
    for (const p of this.entries.values()) for (const u of p.uniforms) u.buffer.destroy();
    this.readback?.destroy();
    this.tokenReadback?.destroy();
    this.wordsReadback?.destroy();
    this.rowsReadback?.destroy();
    this.buffers.clear();
    this.entries.clear();
    this.preparing.clear();
  }
}
