/**
 * Compiles a plan's kernels for one variant: one shader module, bind group layout and
 * compute pipeline per kernel, built once at load time. Every kernel reads its dynamic
 * sizes from a uniform, so nothing is ever recompiled for another prompt length.
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
 * Compiles every kernel of `plan` in `variant`; `source(path)` returns a kernel file's
 * text (verified against the manifest by the loader).
 */
export async function compileKernels(
  device: GPUDevice,
  plan: Plan,
  variant: string,
  source: (path: string) => Promise<string>,
): Promise<Map<string, CompiledKernel>> {
  const compiled = await Promise.all(
    Object.entries(plan.kernels).map(async ([name, k]): Promise<[string, CompiledKernel]> => {
      const file = k.files[variant];
      if (!file) throw new KernelCompileError(`kernel ${name} has no ${variant} file in the plan`);
      return [name, await compileOne(device, name, k, variant, await source(file))];
    }),
  );
  return new Map(compiled);
}
