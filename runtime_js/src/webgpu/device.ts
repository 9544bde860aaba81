/**
 * Device setup for a plan: pick the first plan variant the adapter can run (f16 when
 * it has `shader-f16`, else f32), check every limit the variant needs against the
 * adapter, and request a device with exactly those features and limits. When no
 * variant fits, reject with a BackendUnsupportedError that names each missing feature
 * and each limit with the device's value and the bundle's need. Nothing runs on a
 * device that cannot run the bundle correctly.
 */
import { BackendUnsupportedError, SoftwareDeviceError } from "../backend.js";
import { isNode } from "../fetch.js";
import type { Plan } from "../plan.js";
import { getGpu } from "./gpu.js";

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /**
   * A software renderer on the CPU: the adapter says so (`isFallbackAdapter`), or it
   * is one we know (SwiftShader, llvmpipe / lavapipe, Microsoft Basic Render Driver)
   */
  isFallbackAdapter: boolean;
}

export interface DeviceOptions {
  /** a GPU object to use instead of navigator.gpu / Dawn */
  gpu?: GPU;
  /** reject a software (fallback) adapter with a SoftwareDeviceError */
  refuseSoftware?: boolean;
  /** Node: options for Dawn's create() */
  dawnFlags?: string[];
  /** "auto" (default): the plan's variant_order; or force "f16" / "f32" */
  variant?: string;
  powerPreference?: GPUPowerPreference;
}

export interface OpenedDevice {
  device: GPUDevice;
  variant: string;
  info: AdapterInfo;
  /** the limits requested from the device */
  limits: Record<string, number>;
}

/** Software renderers that do not always say they are one. */
const SOFTWARE_ADAPTERS = /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render/i;

export function adapterInfo(adapter: GPUAdapter): AdapterInfo {
  const i = (adapter as { info?: Partial<AdapterInfo> }).info ?? {};
  const info = { vendor: i.vendor ?? "", architecture: i.architecture ?? "", device: i.device ?? "", description: i.description ?? "" };
  const says = i.isFallbackAdapter === true || (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
  const known = SOFTWARE_ADAPTERS.test(Object.values(info).join(" "));
  return { ...info, isFallbackAdapter: says || known };
}

export function describeAdapter(info: AdapterInfo): string {
  return info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(" ") || "unknown adapter";
}

/** What keeps `adapter` from running `variant` with `limits`: one line per problem. */
export function deviceProblems(adapter: GPUAdapter, features: readonly string[], limits: Record<string, number>): string[] {
  const problems: string[] = [];
  for (const f of features) if (!adapter.features.has(f)) problems.push(`feature "${f}" is missing`);
  const have = adapter.limits as unknown as Record<string, number | undefined>;
  for (const [key, need] of Object.entries(limits)) {
    const value = have[key];
    if (typeof value !== "number") problems.push(`the adapter does not report the limit ${key} (the bundle needs ${need})`);
    else if (value < need) problems.push(`${key} is ${value} on this device, the bundle needs ${need}`);
  }
  return problems;
}

/**
 * Opens a device for `plan`. `extraLimits` raises limits beyond the plan's (e.g.
 * maxBufferSize for a loader's staging buffer); they are checked the same way.
 */
export async function openDevice(plan: Plan, opts: DeviceOptions = {}, extraLimits: Record<string, number> = {}): Promise<OpenedDevice> {
  const gpu = await getGpu(opts);
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: opts.powerPreference ?? "high-performance" });
  } catch (e) {
    throw new BackendUnsupportedError(`requesting a WebGPU adapter failed: ${(e as Error).message}`);
  }
  if (!adapter) {
    throw new BackendUnsupportedError(
      "no WebGPU adapter is available" +
        (isNode ? " (Dawn found no usable Vulkan/Metal/D3D driver; on Linux without a GPU set VK_ICD_FILENAMES to SwiftShader's ICD)" : ""),
    );
  }
  const info = adapterInfo(adapter);
  if (info.isFallbackAdapter && opts.refuseSoftware) {
    throw new SoftwareDeviceError(`the WebGPU adapter (${describeAdapter(info)}) is a software renderer on the CPU; the Wasm backend runs the model faster`);
  }
  const want = opts.variant ?? "auto";
  const order = want === "auto" ? plan.variant_order : [want];
  if (want !== "auto" && !plan.variants[want]) {
    throw new BackendUnsupportedError(`the bundle has no ${want} kernels (it has ${Object.keys(plan.variants).join(", ")})`);
  }
  const rejected: string[] = [];
  for (const variant of order) {
    const spec = plan.variants[variant];
    if (!spec) {
      rejected.push(`${variant} kernels: the plan has no such variant`);
      continue;
    }
    const limits = { ...spec.limits };
    for (const [k, v] of Object.entries(extraLimits)) limits[k] = Math.max(limits[k] ?? 0, v);
    const problems = deviceProblems(adapter, spec.features, limits);
    if (problems.length) {
      rejected.push(`${variant} kernels: ${problems.join(", ")}`);
      continue;
    }
    let device: GPUDevice;
    try {
      device = await adapter.requestDevice({
        label: `llmpack ${variant}`,
        requiredFeatures: spec.features as GPUFeatureName[],
        requiredLimits: limits,
      });
    } catch (e) {
      rejected.push(`${variant} kernels: requestDevice failed: ${(e as Error).message}`);
      continue;
    }
    const got = device.limits as unknown as Record<string, number | undefined>;
    const short = Object.entries(limits).filter(([k, v]) => !((got[k] ?? -Infinity) >= v));
    if (short.length) {
      device.destroy();
      rejected.push(`${variant} kernels: the device granted ${short.map(([k, v]) => `${k} ${got[k]} < ${v}`).join(", ")}`);
      continue;
    }
    return { device, variant, info, limits };
  }
  throw new BackendUnsupportedError(`this GPU (${describeAdapter(info)}) cannot run the bundle: ${rejected.join("; ")}`);
}
