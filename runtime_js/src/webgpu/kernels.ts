/**
 * Compiles a plan's kernels for one variant: one shader module, bind group layout and
 * compute pipeline per kernel. Every kernel reads its dynamic sizes from a uniform, so
 * nothing is ever recompiled for another prompt length. A KernelSet compiles each kernel
 * at most once, when first asked for: the backend asks for those of the required entries
 * (prefill, decode) at load and for those only an optional entry uses (verify, topk, ...)
 * at that entry's first run, which on a CPU-emulated GPU saves seconds of load.
 */
import type { Plan, PlanKernel } from "../plan.js";
import { ShaderStage } from "./gpu.js";

export interface CompiledKernel {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

export class KernelCompileError extends Error {
  override name = "KernelCompileError";
}

async function compileOne(device: GPUDevice, name: string, kernel: PlanKernel, variant: string, code: string): Promise<CompiledKernel> {
  const label = `${name}.${variant}`;
  // (no await between push and pop: compilations run concurrently)
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ label, code });
  const layout = device.createBindGroupLayout({
    label,
    entries: kernel.bindings.map((b) => ({ binding: b.binding, visibility: ShaderStage.COMPUTE, buffer: { type: b.type } })),
  });
  const scope = device.popErrorScope();
  const [info, scoped] = await Promise.all([module.getCompilationInfo(), scope]);
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length || scoped) {
    const msg = errors.length ? errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ") : scoped!.message;
    throw new KernelCompileError(`kernel ${label} failed to compile: ${msg}`);
  }
  try {
    const pipeline = await device.createComputePipelineAsync({
      label,
      layout: device.createPipelineLayout({ label, bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
    });
    return { pipeline, layout };
  } catch (e) {
    throw new KernelCompileError(`kernel ${label} failed to build a pipeline: ${(e as Error).message}`);
  }
}

/**
 * The kernels of `plan` in `variant`, each compiled on first demand. Every kernel's source
 * is read at construction (`source(path)` returns a kernel file's text, verified against the
 * manifest by the loader), so a later compile needs no network and a missing or corrupted
 * file fails the load (`sourcesRead`), not the first call that needs it.
 */
export class KernelSet {
  private readonly sources = new Map<string, Promise<string>>();
  /** one promise per kernel asked for: concurrent callers share a compile; a failure stays */
  private readonly compiling = new Map<string, Promise<CompiledKernel>>();
  private readonly done = new Set<string>();

  constructor(
    private readonly device: GPUDevice,
    private readonly plan: Plan,
    private readonly variant: string,
    source: (path: string) => Promise<string>,
  ) {
    for (const [name, k] of Object.entries(plan.kernels)) {
      const file = k.files[variant];
      const text = file ? source(file) : Promise.reject(new KernelCompileError(`kernel ${name} has no ${variant} file in the plan`));
      text.catch(() => {}); // awaited by sourcesRead and compile
      this.sources.set(name, text);
    }
  }

  /** Resolves once every kernel's source was read; rejects as the first that could not be. */
  async sourcesRead(): Promise<void> {
    await Promise.all(this.sources.values());
  }

  /**
   * The kernels `names` (plan kernel names), compiling those not compiled or compiling yet,
   * all at once; rejects with a KernelCompileError when one fails (and so does every later
   * call that needs it: a compile fails the same way again).
   */
  async compile(names: Iterable<string>): Promise<Map<string, CompiledKernel>> {
    const wanted = [...new Set(names)];
    const compiled = await Promise.all(wanted.map((name) => this.compileKernel(name)));
    return new Map(wanted.map((name, i) => [name, compiled[i]!]));
  }

  /** Names of the kernels compiled so far, sorted (for tests and diagnostics). */
  compiled(): string[] {
    return [...this.done].sort();
  }

  private compileKernel(name: string): Promise<CompiledKernel> {
    let p = this.compiling.get(name);
    if (!p) {
      const kernel = this.plan.kernels[name];
      const source = this.sources.get(name);
      if (!kernel || !source) return Promise.reject(new KernelCompileError(`the plan has no kernel ${name}`));
      p = source.then((code) => compileOne(this.device, name, kernel, this.variant, code));
      p.then(() => this.done.add(name), () => {});
      this.compiling.set(name, p);
    }
    return p;
  }
}

/**
 * Compiles every kernel of `plan` in `variant` at once; `source(path)` returns a kernel
 * file's text (verified against the manifest by the loader).
 */
export async function compileKernels(
  device: GPUDevice,
  plan: Plan,
  variant: string,
  source: (path: string) => Promise<string>,
): Promise<Map<string, CompiledKernel>> {
  return new KernelSet(device, plan, variant, source).compile(Object.keys(plan.kernels));
}
