/** The Wasm CPU backend, registered as "wasm" (used by "auto" where WebGPU cannot run a bundle). */
import { registerBackend } from "../backend.js";
import { WasmBackend } from "./backend.js";

registerBackend("wasm", () => new WasmBackend());

export { DEFAULT_MAX_THREADS, WasmBackend, type WasmBackendOptions } from "./backend.js";
export { ceilingProblem, MAX_PAGES, planLayout, type MemoryLayout } from "./layout.js";
export { WasmProgram } from "./program.js";
export { WASM_TABLE_FILE, parseWasmTable, type WasmTable } from "./table.js";
export { threadsAvailable } from "./threads.js";
