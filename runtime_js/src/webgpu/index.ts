/** The WebGPU backend, registered as "webgpu" (the preferred backend of createEngine). */
import { registerBackend } from "../backend.js";
import { WebGpuBackend } from "./backend.js";

registerBackend("webgpu", () => new WebGpuBackend());

export { WebGpuBackend, type WebGpuBackendOptions } from "./backend.js";
export { adapterInfo, describeAdapter, deviceProblems, openDevice, type AdapterInfo, type DeviceOptions, type OpenedDevice } from "./device.js";
export { getGpu } from "./gpu.js";
export { DeviceLostError, PlanExecutor } from "./executor.js";
export { compileKernels, KernelCompileError, type CompiledKernel } from "./kernels.js";
export { StagingSink, type UploadLog } from "./weights.js";
