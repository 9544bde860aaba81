/**
 * Where the WebGPU entry point comes from: `navigator.gpu` in pages and workers; in
 * Node, npm `webgpu` (Dawn), loaded on first use. Also the numeric WebGPU flags, so
 * that nothing depends on the GPUBufferUsage / GPUMapMode globals (Node lacks them).
 */
import { BackendUnsupportedError } from "../backend.js";
import { isNode } from "../fetch.js";

export const BufferUsage = {
  MAP_READ: 0x1,
  MAP_WRITE: 0x2,
  COPY_SRC: 0x4,
  COPY_DST: 0x8,
  UNIFORM: 0x40,
  STORAGE: 0x80,
} as const;
export const ShaderStage = { COMPUTE: 0x4 } as const;
export const MapMode = { READ: 0x1 } as const;


let nodeGpu: Promise<GPU> | null = null;

/** Dawn's GPU object for Node, created once per process. `flags` are Dawn's create() options. */
async function dawnGpu(flags: string[]): Promise<GPU> {
  nodeGpu ??= (async () => {
    const spec = "webgpu"; // a variable, so that bundlers leave this Node-only import alone
    let mod: { create(flags: string[]): GPU };
    try {
      mod = await import(/* @vite-ignore */ spec);
    } catch (e) {
      throw new BackendUnsupportedError(`WebGPU in Node needs the npm package "webgpu" (Dawn): ${(e as Error).message}`);
    }
    return mod.create(flags);
  })();
  try {
    return await nodeGpu;
  } catch (e) {
    nodeGpu = null;
    throw e;
  }
}

/** The environment's GPU, or a BackendUnsupportedError saying why there is none. */
export async function getGpu(opts: { gpu?: GPU; dawnFlags?: string[] } = {}): Promise<GPU> {
  if (opts.gpu) return opts.gpu;
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (isNode) return dawnGpu(opts.dawnFlags ?? []);
  const secure = (globalThis as { isSecureContext?: boolean }).isSecureContext;
  throw new BackendUnsupportedError(
    secure === false
      ? "WebGPU is only available in secure contexts (https or localhost)"
      : "this browser has no WebGPU (navigator.gpu is missing)",
  );
}
