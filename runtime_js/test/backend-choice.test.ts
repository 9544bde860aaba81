/**
 * "auto" backend choice with stand-in backends registered as "webgpu" and "wasm": a
 * software device is passed over while another backend can run, taken when none can;
 * between two that can, the faster decode step wins and is remembered per bundle and
 * device; the weights go to the chosen backend only; the engine says which and why.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type Backend, type BackendLoadOptions, BackendUnsupportedError, SoftwareDeviceError, chooseBackend, registerBackend } from "../src/backend.js";
import { MemoryChoiceStore } from "../src/backend_choice.js";
import { createEngine } from "../src/engine.js";
import { BundleLoader } from "../src/loader.js";
import type { Manifest } from "../src/manifest.js";
import { type TestServer, makeChatBundle, serve } from "./fixtures.js";

interface Spec {
  /** a software device: refused when asked to */
  software?: boolean;
  unsupported?: string;
  decodeMs?: number;
}

class Candidate implements Backend {
  events: string[] = [];
  private loader: BundleLoader | null = null;

  constructor(
    readonly name: string,
    private readonly spec: Spec,
  ) {}

  get label(): string {
    return `${this.name} stand-in`;
  }

  get deviceKey(): string {
    return `${this.name} device`;
  }

  async prepare(_m: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    this.events.push(`prepare${opts.refuseSoftware ? " refusing software" : ""}`);
    if (this.spec.unsupported) throw new BackendUnsupportedError(this.spec.unsupported);
    if (this.spec.software && opts.refuseSoftware) throw new SoftwareDeviceError(`${this.name} is a software renderer`);
    this.loader = loader;
  }

  async loadWeights(opts: BackendLoadOptions = {}): Promise<void> {
    this.events.push("weights");
    await this.loader!.loadShards({ write: () => {}, commit: () => {} }, { signal: opts.signal });
  }

  async load(m: Manifest, loader: BundleLoader, opts: BackendLoadOptions = {}): Promise<void> {
    await this.prepare(m, loader, opts);
    await this.loadWeights(opts);
  }

  async timeDecode(): Promise<number> {
    this.events.push("timed");
    return this.spec.decodeMs ?? 1;
  }

  async prefill(): Promise<Float32Array> {
    return new Float32Array(258);
  }

  async decode(): Promise<Float32Array> {
    return new Float32Array(258);
  }

  reset(): void {}

  unload(): void {
    this.events.push("unload");
  }
}

let server: TestServer;
let loader: BundleLoader;

before(async () => {
  server = await serve(makeChatBundle().dir);
  loader = await BundleLoader.open(server.url, { cache: null });
});
after(() => server.close());

/** Registers stand-ins as "webgpu" and "wasm"; returns them as they get made. */
function register(webgpu: Spec, wasm: Spec): { webgpu: Candidate[]; wasm: Candidate[] } {
  const made = { webgpu: [] as Candidate[], wasm: [] as Candidate[] };
  registerBackend("webgpu", () => {
    const b = new Candidate("webgpu", webgpu);
    made.webgpu.push(b);
    return b;
  });
  registerBackend("wasm", () => {
    const b = new Candidate("wasm", wasm);
    made.wasm.push(b);
    return b;
  });
  return made;
}

describe("backend 'auto'", () => {
  test("passes over a software WebGPU adapter when Wasm can run, and says why", async () => {
    const made = register({ software: true }, {});
    const { backend, info } = await chooseBackend("auto", loader.manifest, loader, { choices: new MemoryChoiceStore() });
    assert.equal(backend.name, "wasm");
    assert.equal(info.name, "wasm");
    assert.match(info.reason, /webgpu: webgpu is a software renderer/);
    assert.deepEqual(made.webgpu[0]!.events, ["prepare refusing software", "unload"]);
    assert.deepEqual(made.wasm[0]!.events, ["prepare refusing software", "weights"]); // not timed: nothing to compare
  });

  test("takes the software adapter when nothing else can run", async () => {
    const made = register({ software: true }, { unsupported: "needs 5 GiB" });
    const { backend, info } = await chooseBackend(undefined, loader.manifest, loader, { choices: new MemoryChoiceStore() });
    assert.equal(backend.name, "webgpu");
    assert.match(info.reason, /software renderer.*wasm: needs 5 GiB/);
    assert.deepEqual(made.webgpu.at(-1)!.events, ["prepare refusing software", "unload", "prepare", "weights"]);
  });

  test("between two that can run, times a decode step of each, keeps the faster, and remembers", async () => {
    const choices = new MemoryChoiceStore();
    const made = register({ decodeMs: 9 }, { decodeMs: 3 });
    const first = await chooseBackend("auto", loader.manifest, loader, { choices });
    assert.equal(first.backend.name, "wasm");
    assert.deepEqual(first.info.decodeMs, { webgpu: 9, wasm: 3 });
    assert.match(first.info.reason, /measured at this first load \(webgpu 9\.0 ms, wasm 3\.0 ms\)/);
    assert.deepEqual(made.webgpu[0]!.events, ["prepare refusing software", "timed", "unload"]);
    assert.deepEqual(made.wasm[0]!.events, ["prepare refusing software", "timed", "weights"]);

    const again = await chooseBackend("auto", loader.manifest, loader, { choices });
    assert.equal(again.backend.name, "wasm");
    assert.match(again.info.reason, /measured at an earlier load \(webgpu 9\.0 ms, wasm 3\.0 ms\)/);
    assert.deepEqual(made.webgpu[1]!.events, ["prepare refusing software", "unload"]); // looked up, let go
    assert.deepEqual(made.wasm[1]!.events, ["prepare refusing software", "weights"]); // not timed again
  });

  test("a remembered first choice prepares nothing else; a remembered one that cannot run any more is measured afresh", async () => {
    const choices = new MemoryChoiceStore();
    let made = register({ decodeMs: 2 }, { decodeMs: 7 });
    assert.equal((await chooseBackend("auto", loader.manifest, loader, { choices })).backend.name, "webgpu");
    const again = await chooseBackend("auto", loader.manifest, loader, { choices });
    assert.equal(again.backend.name, "webgpu");
    assert.equal(made.wasm.length, 1, "Wasm was not even created");
    assert.deepEqual(made.webgpu[1]!.events, ["prepare refusing software", "weights"]);

    made = register({ decodeMs: 9 }, { decodeMs: 3 });
    assert.equal((await chooseBackend("auto", loader.manifest, loader, { choices: new MemoryChoiceStore() })).backend.name, "wasm");
    const stale = new MemoryChoiceStore();
    stale.set(`${loader.manifestSha256}|webgpu:webgpu device`, { name: "gone", decodeMs: {} });
    const fresh = await chooseBackend("auto", loader.manifest, loader, { choices: stale });
    assert.equal(fresh.backend.name, "wasm");
    assert.match(fresh.info.reason, /measured at this first load/);
    assert.equal(stale.get(`${loader.manifestSha256}|webgpu:webgpu device`)?.name, "wasm", "the stale entry was replaced");
  });

  test("a named backend is loaded as asked", async () => {
    register({ software: true }, {});
    const { backend, info } = await chooseBackend("webgpu", loader.manifest, loader);
    assert.equal(backend.name, "webgpu");
    assert.equal(info.reason, '"webgpu" was asked for');
  });

  test("createEngine reports the choice as engine.backendInfo", async () => {
    register({ software: true }, {});
    const engine = await createEngine(server.url, { cache: null });
    assert.equal(engine.backendInfo.name, "wasm");
    assert.equal(engine.backendInfo.label, "wasm stand-in");
    assert.match(engine.backendInfo.reason, /software renderer/);
    await engine.unload();
  });
});
