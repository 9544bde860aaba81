/**
 * Backend.verify (speculative decoding's batched check; the plan's "verify" entry) on the
 * Wasm backend and on WebGPU (Dawn; SwiftShader where there is no GPU), with the tiny random
 * Llama packaged by the Python packager: the logits of every verified token equal those of
 * decoding the same tokens one at a time, the KV rows it writes serve later decode steps
 * (rolling back into them included), bad calls are refused, and a plan without the entry
 * has no verify. On WebGPU the kernels only verify uses compile at its first call.
 */
import "./gpu-env.js";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import type { Backend } from "../src/backend.js";
import { BundleLoader } from "../src/loader.js";
import { hasVerifyArgmax, parsePlan, verifyMaxTokens } from "../src/plan.js";
import { WasmBackend } from "../src/wasm/index.js";
import { WASM_TABLE_FILE } from "../src/wasm/table.js";
import { WebGpuBackend } from "../src/webgpu/index.js";
import { gpuSkip } from "./gpu-env.js";
import { requireComponent } from "./helpers.js";
import { tinyBundle } from "./tiny-bundle.js";

const made = tinyBundle();
const skipPython = requireComponent("python", typeof made !== "string" && made.missing);
const BUNDLE = typeof made === "string" ? made : "";
const skipGpu = skipPython || (await gpuSkip());

/** max |a - b| / max |b| */
function rel(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    assert.ok(Number.isFinite(a[i]!), `logit ${i} is ${a[i]}`);
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** f32 kernels on both backends: a batched matmul against mat-vecs differs by rounding only */
const TOL = 1e-4;

/** The tiny bundle; `edit` changes one of its JSON files (by path) as the backends read it. */
async function open(edit?: Record<string, (json: Record<string, any>) => void>): Promise<BundleLoader> {
  const loader = await BundleLoader.open(BUNDLE, { cache: null });
  const edited = new Map<string, unknown>();
  for (const [file, fn] of Object.entries(edit ?? {})) {
    const json = (await loader.fetchJson(file)) as Record<string, any>;
    fn(json);
    edited.set(file, json);
  }
  const fetchJson = loader.fetchJson.bind(loader);
  loader.fetchJson = (<T>(file: string, signal?: AbortSignal) =>
    edited.has(file) ? Promise.resolve(edited.get(file) as T) : fetchJson<T>(file, signal)) as typeof loader.fetchJson;
  return loader;
}

function suite(name: string, make: () => Backend, skip: string | false) {
  describe(`verify on ${name}`, { skip }, () => {
    let backend: Backend;
    let vocab = 0;
    before(async () => {
      const loader = await open();
      vocab = loader.manifest.model.config.vocab_size;
      backend = make();
      await backend.load(loader.manifest, loader);
    });
    after(() => backend?.unload());

    const prompt = Int32Array.from({ length: 13 }, (_, i) => 3 + ((i * 37) % 300));
    const drafts = Int32Array.from([17, 250, 4, 99, 123, 7, 42, 301, 5, 66, 77, 88, 12, 200, 150, 9]);

    /** decode `tokens` one at a time from `pos` (after `prompt` at 0); each step's logits */
    async function stepwise(tokens: Int32Array, pos: number): Promise<Float32Array[]> {
      await backend.prefill(prompt, 0);
      const out: Float32Array[] = [];
      for (let i = 0; i < tokens.length; i++) out.push((await backend.decode(tokens[i]!, pos + i)).slice());
      return out;
    }

    /** WebGPU: the kernels only the verify entry uses (not compiled at load) and those compiled so far; else null */
    function lazyKernels(): { verifyOnly: string[]; compiled: string[] } | null {
      if (!(backend instanceof WebGpuBackend)) return null;
      const plan = backend.plan!;
      const kernels = (entry: string) => plan.entries[entry]!.dispatches.map((d) => d.kernel);
      const required = new Set([...kernels("prefill"), ...kernels("decode")]);
      return { verifyOnly: [...new Set(kernels("verify").filter((k) => !required.has(k)))], compiled: backend.compiledKernels() };
    }

    test("every row equals the logits of decoding the tokens one at a time", async () => {
      assert.equal(backend.verifyMaxTokens, 16);
      const lazy = lazyKernels();
      if (lazy) {
        assert.ok(lazy.verifyOnly.length >= 1, "the verify head's matmul is its own kernel");
        assert.deepEqual(lazy.verifyOnly.filter((k) => lazy.compiled.includes(k)), [], "compiled at load");
      }
      for (const k of [1, 4, 16]) {
        const tokens = drafts.subarray(0, k);
        const want = await stepwise(tokens, prompt.length);
        await backend.prefill(prompt, 0);
        const rows = await backend.verify!(tokens, prompt.length);
        // (WebGPU: the first call compiled them)
        if (lazy) assert.deepEqual(lazy.verifyOnly.filter((k) => !lazyKernels()!.compiled.includes(k)), []);
        assert.equal(rows.length, k * vocab);
        for (let i = 0; i < k; i++) {
          const row = rows.subarray(i * vocab, (i + 1) * vocab);
          assert.ok(rel(row, want[i]!) <= TOL, `k=${k} row ${i}: ${rel(row, want[i]!)}`);
          assert.equal(argmax(row), argmax(want[i]!), `k=${k} row ${i}`);
        }
      }
    });

    test("decoding after a verify, from any accepted row, is plain decoding", async () => {
      const k = 8;
      const tokens = drafts.subarray(0, k);
      const p = prompt.length;
      for (const accepted of [0, 3, k]) {
        // plain: the accepted drafts, then token 211 at p + accepted and one more step
        const plain = await stepwise(Int32Array.of(...tokens.subarray(0, accepted), 211, 60), p);
        await backend.prefill(prompt, 0);
        await backend.verify!(tokens, p);
        const next = (await backend.decode(211, p + accepted)).slice();
        const after2 = (await backend.decode(60, p + accepted + 1)).slice();
        assert.ok(rel(next, plain[accepted]!) <= TOL, `accepted ${accepted}: ${rel(next, plain[accepted]!)}`);
        assert.ok(rel(after2, plain[accepted + 1]!) <= TOL, `accepted ${accepted}, second step`);
        assert.equal(argmax(next), argmax(plain[accepted]!));
      }
      // and a verify right after another verify's accepted rows (the next speculative step)
      await backend.prefill(prompt, 0);
      await backend.verify!(tokens, p);
      const second = (await backend.verify!(drafts.subarray(8, 12), p + 5)).slice();
      const plain = await stepwise(Int32Array.of(...tokens.subarray(0, 5), ...drafts.subarray(8, 12)), p);
      for (let i = 0; i < 4; i++) assert.ok(rel(second.subarray(i * vocab, (i + 1) * vocab), plain[5 + i]!) <= TOL, `row ${i}`);
    });

    test("bad calls are refused before anything runs", async () => {
      const window = backend.contextWindow!;
      await assert.rejects(backend.verify!(new Int32Array(0), 0), RangeError);
      await assert.rejects(backend.verify!(new Int32Array(17), 0), /verify takes 1\.\.16 tokens/);
      await assert.rejects(backend.verify!(Int32Array.of(1, 2), window - 1), /context window/);
      await assert.rejects(backend.verify!(Int32Array.of(1, -2), 0), /outside the vocabulary/);
      // the last positions of the window still verify
      const rows = await backend.verify!(Int32Array.of(1, 2), window - 2);
      assert.equal(rows.length, 2 * vocab);
    });

    test("a plan without the verify entry: no verifyMaxTokens, verify rejects", async () => {
      const loader = await open({
        "plan.json": (plan) => {
          delete plan.entries.verify;
          delete plan.outputs.logits_rows;
        },
      });
      const old = make();
      try {
        if (name.startsWith("WebGPU")) {
          // (prepared only: compiling the kernels again on SwiftShader takes long; the plan decides)
          await old.prepare!(loader.manifest, loader);
          assert.equal(old.verifyMaxTokens, undefined);
          assert.equal(old.verifyArgmaxOnDevice, false); // (the plan keeps its verify_argmax entry)
          return;
        }
        await old.load(loader.manifest, loader);
        assert.equal(old.verifyMaxTokens, undefined);
        await assert.rejects(old.verify!(Int32Array.of(1), 0), /no verify entry/);
        assert.equal((await old.decode(5, 0)).length, vocab);
      } finally {
        await old.unload();
      }
    });
  });
}

describe("the plan's verify entry", { skip: skipPython }, () => {
  test("needs outputs.logits_rows, f32 rows for max_seq_len tokens", async () => {
    const loader = await open();
    const plan = (await loader.fetchJson("plan.json")) as Record<string, any>;
    assert.equal(verifyMaxTokens(parsePlan(plan, loader.manifest)), 16);
    const broken = (edit: (p: Record<string, any>) => void) => {
      const p = structuredClone(plan);
      edit(p);
      return () => parsePlan(p, loader.manifest);
    };
    assert.throws(broken((p) => delete p.outputs.logits_rows), /"verify" entry needs outputs\.logits_rows/);
    assert.throws(broken((p) => (p.buffers.logits_rows.elements -= 1)), /max_seq_len × vocab/);
    assert.throws(broken((p) => (p.buffers.logits_rows.dtype = "act")), /logits_rows/);
    const none = structuredClone(plan);
    delete none.entries.verify;
    assert.equal(verifyMaxTokens(parsePlan(none, loader.manifest)), undefined);
    // "verify_argmax": u32 [id, f32 bits] per row in outputs.verify_tokens; without verify it is unused
    assert.equal(hasVerifyArgmax(parsePlan(plan, loader.manifest)), true);
    assert.equal(hasVerifyArgmax(parsePlan(none, loader.manifest)), false);
    assert.throws(broken((p) => delete p.outputs.verify_tokens), /"verify_argmax" entry needs outputs\.verify_tokens/);
    assert.throws(broken((p) => (p.buffers.verify_tokens.elements = 31)), /verify_tokens, a u32 array of 2 × its max_seq_len/);
    assert.throws(broken((p) => (p.buffers.verify_tokens.dtype = "f32")), /verify_tokens/);
    const old = structuredClone(plan); // a bundle from before the entry
    delete old.entries.verify_argmax;
    delete old.outputs.verify_tokens;
    assert.equal(hasVerifyArgmax(parsePlan(old, loader.manifest)), false);
  });
});

describe("verify on Wasm with a kernel table made for a plan without the entry", { skip: skipPython }, () => {
  test("the bundle loads and runs; it has no verify", async () => {
    const plan = (await (await open()).fetchJson("plan.json")) as Record<string, any>;
    const used = new Set(["prefill", "decode"].flatMap((e) => plan.entries[e].dispatches.map((d: any) => d.kernel)));
    const only = plan.entries.verify.dispatches.map((d: any) => d.kernel).filter((k: string) => !used.has(k));
    assert.ok(only.length >= 1, "the verify head's matmul is its own kernel");
    // (the kernels only the verify entry uses are not in the table)
    const old = await open({ [WASM_TABLE_FILE]: (table) => only.forEach((k: string) => delete table.kernels[k]) });
    const backend = new WasmBackend({ threads: 1 });
    await backend.load(old.manifest, old);
    try {
      assert.equal(backend.verifyMaxTokens, undefined);
      await assert.rejects(backend.verify(Int32Array.of(1), 0), /no verify entry/);
      assert.equal((await backend.prefill(Int32Array.of(5, 6, 7), 0)).length, old.manifest.model.config.vocab_size);
    } finally {
      backend.unload();
    }
  });
});

suite("Wasm", () => new WasmBackend({ threads: 1 }), skipPython);
suite("Wasm, 2 threads", () => new WasmBackend({ threads: 2 }), skipPython);
suite("WebGPU (Dawn)", () => new WebGpuBackend(), skipGpu);
