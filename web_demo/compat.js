// What this browser can run, and plain explanations when it cannot.
import { formatBytes } from "./format.js";

/** Probes WebGPU once: adapter, features, limits. Never throws. */
export async function probeBrowser() {
  const env = {
    secure: window.isSecureContext,
    webgpu: "gpu" in navigator,
    adapter: null,
    features: new Set(),
    limits: {},
    deviceMemoryGB: navigator.deviceMemory ?? null,
    probeError: null,
  };
  if (env.secure && env.webgpu) {
    try {
      const adapter = await navigator.gpu.requestAdapter();
      if (adapter) {
        const info = adapter.info ?? {};
        env.adapter = { vendor: info.vendor || "", architecture: info.architecture || "", description: info.description || "" };
        env.features = new Set(adapter.features);
        env.limits = adapter.limits;
      }
    } catch (e) {
      env.probeError = e?.message ?? String(e);
    }
  }
  return env;
}

const LIMIT_NAMES = {
  maxStorageBufferBindingSize: "storage buffers bound to one kernel",
  maxBufferSize: "GPU buffers",
};

/**
 * Notices about running `model` here: [{level: "error" | "warn" | "info", title, text}].
 * "error": it will almost certainly fail; "warn": it may fail or be slow.
 */
export function checkModel(env, model) {
  const out = [];
  if (!env.secure) {
    out.push({
      level: "error",
      title: "This page is not a secure context",
      text: "Browsers enable WebGPU and the Cache API only on https:// pages and on localhost. Open the page as " +
        "http://localhost:PORT/ or http://127.0.0.1:PORT/, or serve it over HTTPS.",
    });
    return out;
  }
  if (!env.webgpu) {
    out.push({
      level: "warn",
      title: "This browser has no WebGPU",
      text: "Models run fastest on the GPU through WebGPU (Chrome and Edge 113 or newer, Safari 26, Firefox 141 on " +
        "Windows). Without it llmpack runs on the CPU through WebAssembly, which " +
        "is many times slower.",
    });
  } else if (!env.adapter) {
    out.push({
      level: "warn",
      title: "WebGPU is present but offers no GPU",
      text: "The browser found no usable GPU adapter (the GPU may be blocklisted or switched off in the browser's " +
        `settings${env.probeError ? `: ${env.probeError}` : ""}). Only a CPU backend can run the model here.`,
    });
  }
  const req = model?.requirements;
  if (env.adapter && req) {
    for (const f of req.features ?? []) {
      if (!env.features.has(f)) {
        out.push({ level: "error", title: `Your GPU lacks "${f}"`, text: `This model's kernels need the WebGPU feature "${f}", which this GPU does not offer.` });
      }
    }
    for (const [name, need] of Object.entries(req.limits ?? {})) {
      const have = env.limits[name];
      if (typeof have === "number" && typeof need === "number" && have < need) {
        const what = LIMIT_NAMES[name];
        const text = what
          ? `This model needs ${what} of ${formatBytes(need)}; this GPU allows at most ${formatBytes(have)} (${name}). Try a model packaged with smaller buffers or a smaller quantization.`
          : `This model needs the WebGPU limit ${name} ≥ ${need}; this GPU offers ${have}.`;
        out.push({ level: "error", title: "Your GPU's limits are too small for this model", text });
      }
    }
    if ((req.optional_features ?? []).includes("shader-f16") && !env.features.has("shader-f16")) {
      out.push({
        level: "info",
        title: "No 16-bit float shaders on this GPU",
        text: "The model runs with its 32-bit kernels (the shader-f16 feature is missing): correct, but slower and with a larger KV cache.",
      });
    }
  }
  const need = model?.memory_estimate_bytes;
  if (need && env.deviceMemoryGB && need > env.deviceMemoryGB * 1e9 * 0.5) {
    out.push({
      level: "warn",
      title: "This model may not fit in memory",
      text: `It needs about ${formatBytes(need)}; this device reports ${env.deviceMemoryGB} GB of RAM (browsers round this down).`,
    });
  }
  return out;
}

/** A load or generation error as {title, text}, in words a user can act on. */
export function explainError(err, env, model) {
  const msg = String(err?.message ?? err);
  const name = err?.name ?? "";
  if (name === "AbortError") return { title: "Cancelled", text: "Loading was cancelled." };
  if (/no backend (is available|named)/i.test(msg)) {
    // the runtime lists each backend's reason: "... here (webgpu: ...; wasm: ...)"
    const reasons = /\((.*)\)$/.exec(msg)?.[1];
    return {
      title: "This browser cannot run the model",
      text: reasons
        ? `Neither the GPU (WebGPU) nor the CPU (WebAssembly) backend can run it here: ${reasons}.`
        : "The llmpack runtime served here has no backend it can use in this browser.",
    };
  }
  if (name === "DeviceLostError") {
    return {
      title: "The GPU stopped working for this page",
      text: "The browser lost its GPU device (a driver reset, sleep, or too much GPU memory in use). " +
        "Press Reload model to load the model again and continue; the conversation is kept.",
    };
  }
  if (name === "ContextWindowError" || /context window/i.test(msg)) {
    return { title: "The conversation is too long", text: `${msg}. Start a new chat to continue.` };
  }
  if (name === "ShardError") {
    return { title: "A weight file could not be loaded", text: `${msg}. The download broke or its content does not match its hash; reload to retry.` };
  }
  if (name === "ManifestError" && /needs llmpack runtime/.test(msg)) {
    // the bundle's manifest names a newer runtime than the one this page loads (docs/bundle.md, "runtime")
    return { title: "This page's runtime is too old for this model", text: `${msg}.` };
  }
  if (/Failed to fetch|NetworkError|HTTP \d{3}|load failed/i.test(msg) || name === "BundleFileError" || name === "ManifestError") {
    return {
      title: "The model could not be downloaded",
      text: `${msg}. Is the server (llmpack serve) still running, and does ${model?.url ?? "the bundle"} exist?`,
    };
  }
  if (/maxStorageBufferBindingSize|maxBufferSize|limit/i.test(msg)) {
    return { title: "Your GPU's limits are too small for this model", text: msg };
  }
  if (/out of memory|OOM|allocation|allocate/i.test(msg)) {
    return { title: "Not enough GPU memory", text: `${msg}. Close other GPU-heavy tabs or pick a smaller model.` };
  }
  if (/webgpu|adapter|GPUDevice|device (was )?lost|shader/i.test(msg)) {
    return { title: "The GPU could not run this model", text: msg };
  }
  return { title: "Something went wrong", text: msg };
}
