/**
 * WebGPU for the Node tests: Dawn (npm "webgpu"). Without a GPU, Debian's Vulkan
 * drivers are lavapipe (which Dawn rejects) and SwiftShader (shipped with chromium):
 * unless VK_ICD_FILENAMES is set already, point it at SwiftShader when it exists.
 * `gpuSkip()` is false when an adapter is available, else the reason to skip; a missing
 * adapter also fails the run unless LLMPACK_ALLOW_MISSING names "dawn" (requireComponent).
 * Call it once per test file, at the top level.
 */
import { existsSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { requireComponent } from "./helpers.js";

export const SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json";

if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD)) process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
process.env.XDG_RUNTIME_DIR ||= mkdtempSync(path.join(os.tmpdir(), "xdg-"));

let probe: Promise<string | false> | null = null;

export async function gpuSkip(): Promise<string | false> {
  return requireComponent("dawn", await probeAdapter());
}

function probeAdapter(): Promise<string | false> {
  probe ??= (async () => {
    try {
      const { getGpu } = await import("../src/webgpu/gpu.js");
      const adapter = await (await getGpu()).requestAdapter();
      return adapter ? false : "no WebGPU adapter (Dawn found no usable Vulkan driver)";
    } catch (e) {
      return `WebGPU unavailable: ${(e as Error).message}`;
    }
  })();
  return probe;
}
