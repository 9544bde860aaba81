"""Run a bundle's execution plan on wgpu-py (WebGPU over Vulkan; lavapipe on CI).

A test helper: it does what the JavaScript runtime does, from the same plan.json and
kernel files, with no model-specific code; and runs single kernels (run_kernel).

    ex = GpuExecutor(bundle_dir)            # variant "auto": f16 when the device has it
    logits = ex.prefill(tokens)             # last token's logits, numpy f32 [vocab]
    logits = ex.decode(token)
    rows = ex.verify(tokens)                # plans with a "verify" entry: every token's logits [n, vocab]
    ex.reset()
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bundle_contract.manifest import load
from conftest import record_device, require
from packager.compile import compile_artifacts
from packager.plan import buffer_size
from packager.plan_expr import evaluate
from packager.shards import read_tensor_bytes
from plan_session import PlanSession

_DEVICES: dict[bool, object] = {}
_ADAPTER: list = []


def adapter():
    """wgpu-py's adapter, found once per process; a missing one fails the test (conftest.require)."""
    if not _ADAPTER:
        if "XDG_RUNTIME_DIR" not in os.environ:  # quiets Mesa's warnings
            import tempfile

            os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")
        import wgpu

        found = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
        require("wgpu", found is not None, "wgpu-py finds no WebGPU adapter (lavapipe: mesa-vulkan-drivers)")
        _ADAPTER.append(found)
        f16 = "shader-f16" in found.features
        record_device("wgpu-py", f"{found.info['device']} ({'f16' if f16 else 'f32 only'})")
    return _ADAPTER[0]


def has_f16() -> bool:
    return "shader-f16" in adapter().features


def request_device(f16: bool = False):
    """One shared wgpu device per process (with shader-f16 when f16=True; an adapter
    without it fails the test unless LLMPACK_ALLOW_MISSING names f16)."""
    if f16 in _DEVICES:
        return _DEVICES[f16]
    a = adapter()
    features = []
    if f16:
        require("f16", has_f16(), f"wgpu-py's adapter ({a.info['device']}) lacks shader-f16")
        features.append("shader-f16")
    limits = a.limits
    want = {k: limits[k] for k in ("max-storage-buffer-binding-size", "max-buffer-size",
                                   "max-storage-buffers-per-shader-stage",
                                   "max-compute-workgroup-storage-size") if k in limits}
    device = a.request_device_sync(required_features=features, required_limits=want)
    _DEVICES[f16] = device
    return device


def _usage():
    import wgpu

    return wgpu.BufferUsage


def align(n: int, a: int = 16) -> int:
    return (n + a - 1) // a * a


class PipelineCache:
    """Compiles each distinct WGSL source once; counts modules and pipelines."""

    def __init__(self, device):
        self.device = device
        self._cache: dict[tuple, tuple] = {}
        self.modules = 0
        self.pipelines = 0

    def get(self, code: str, bindings: list[tuple[int, str]], label: str = ""):
        key = (code, tuple(bindings))
        if key not in self._cache:
            import wgpu

            dev = self.device
            module = dev.create_shader_module(label=label, code=code)
            self.modules += 1
            types = {"uniform": wgpu.BufferBindingType.uniform,
                     "storage": wgpu.BufferBindingType.storage,
                     "read-only-storage": wgpu.BufferBindingType.read_only_storage}
            bgl = dev.create_bind_group_layout(entries=[
                {"binding": n, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": types[t]}}
                for n, t in bindings])
            layout = dev.create_pipeline_layout(bind_group_layouts=[bgl])
            pipe = dev.create_compute_pipeline(label=label, layout=layout,
                                               compute={"module": module, "entry_point": "main"})
            self.pipelines += 1
            self._cache[key] = (pipe, bgl)
        return self._cache[key]


def run_kernel(device, pipelines: PipelineCache, code: str, bindings: list[tuple[int, str]],
               buffers: dict[int, np.ndarray], uniforms: list[int], workgroups, read: list[int],
               poison: list[int] = ()) -> dict[int, np.ndarray]:
    """Test helper: run one kernel once. buffers: binding -> initial contents (numpy);
    outputs listed in `poison` are filled with NaN first; returns binding -> bytes
    (as uint8 arrays) of the `read` bindings."""
    usage = _usage()
    pipe, bgl = pipelines.get(code, bindings)
    gbufs = {}
    for n, t in bindings:
        if t == "uniform":
            data = np.zeros(align(max(len(uniforms), 1), 4), np.uint32)
            data[: len(uniforms)] = uniforms
            b = device.create_buffer(size=data.nbytes, usage=usage.UNIFORM | usage.COPY_DST)
            device.queue.write_buffer(b, 0, data.tobytes())
        else:
            arr = buffers[n]
            raw = arr.tobytes()
            if n in poison:
                raw = np.full(arr.size, np.nan, arr.dtype).tobytes()
            size = align(max(len(raw), 16))
            b = device.create_buffer(size=size, usage=usage.STORAGE | usage.COPY_DST | usage.COPY_SRC)
            if raw:
                device.queue.write_buffer(b, 0, raw + b"\0" * (align(len(raw), 4) - len(raw)))
        gbufs[n] = b
    bg = device.create_bind_group(layout=bgl, entries=[
        {"binding": n, "resource": {"buffer": gbufs[n], "offset": 0, "size": gbufs[n].size}}
        for n, _ in bindings])
    enc = device.create_command_encoder()
    cp = enc.begin_compute_pass()
    cp.set_pipeline(pipe)
    cp.set_bind_group(0, bg)
    cp.dispatch_workgroups(*[int(w) for w in workgroups])
    cp.end()
    device.queue.submit([enc.finish()])
    out = {}
    for n in read:
        out[n] = np.frombuffer(device.queue.read_buffer(gbufs[n]), np.uint8)[: buffers[n].nbytes].copy()
    return out


# ---------------------------------------------------------------------------------------
# plan executor


def _read_bundle_files(bundle: Path, plan_bytes: bytes) -> dict[str, bytes]:
    plan = json.loads(plan_bytes)
    files = {"plan.json": plan_bytes}
    for k in plan["kernels"].values():
        for path in k["files"].values():
            files[path] = (bundle / path).read_bytes()
    return files


class GpuExecutor(PlanSession):
    """Interprets a bundle's plan on wgpu-py.

    bundle: a bundle folder (manifest.json, shards; plan.json and kernels/ when the
    bundle has them). files: {path: bytes} as compile_artifacts returns them, to run
    a plan that is not (or differently) stored in the bundle; when neither exists the
    plan is compiled from the manifest. variant: "auto" (the first of the plan's
    variant_order the device supports), "f16" or "f32"."""

    def __init__(self, bundle, *, files: dict[str, bytes] | None = None, variant: str = "auto"):
        self.bundle = Path(bundle)
        self.manifest = load(self.bundle).data
        if files is None:
            if (self.bundle / "plan.json").exists():
                files = _read_bundle_files(self.bundle, (self.bundle / "plan.json").read_bytes())
            else:
                files, _ = compile_artifacts(self.manifest, validate=False)
        self.files = files
        self.plan = plan = json.loads(files["plan.json"])
        if variant == "auto":
            variant = plan["variant_order"][0]
            if variant == "f16" and not has_f16():
                variant = "f32"
        if variant not in plan["variants"]:
            raise ValueError(f"plan has no {variant} variant (has {', '.join(plan['variants'])})")
        self.variant = variant
        self.device = dev = request_device(f16=variant == "f16")
        self.pipelines = PipelineCache(dev)
        usage = _usage()

        # buffers; weights are copied in from the shards, block by block
        self.buffers = {}
        records = {t["name"]: t for t in self.manifest["tensors"]}
        blobs: dict[str, bytes] = {}
        for name, buf in plan["buffers"].items():
            size = buffer_size(buf, variant)
            self.buffers[name] = dev.create_buffer(label=name, size=size,
                                                   usage=usage.STORAGE | usage.COPY_DST | usage.COPY_SRC)
            if buf["kind"] == "weight":
                rec = records[buf["tensor"]]
                if buf["tensor"] not in blobs:
                    blobs.clear()  # keep one tensor in memory at a time (buffers are grouped)
                    blobs[buf["tensor"]] = read_tensor_bytes(self.bundle, self.manifest["shards"], rec)
                part = next(p for p in rec["parts"] if p["name"] == buf["part"])
                start = part["offset"] + buf["offset"]
                data = blobs[buf["tensor"]][start: start + buf["bytes"]]
                pad = -len(data) % 4
                dev.queue.write_buffer(self.buffers[name], 0, data + b"\0" * pad if pad else data)
        blobs.clear()

        # pipelines, one per kernel, compiled once
        self.kernels = {}
        for kname, k in plan["kernels"].items():
            code = files[k["files"][variant]].decode()
            binds = [(b["binding"], b["type"]) for b in k["bindings"]]
            self.kernels[kname] = self.pipelines.get(code, binds, label=kname)

        # bind groups; one uniform buffer per distinct list of uniform expressions
        self.uniforms: dict[tuple, list] = {}  # exprs -> [buffer, last values]
        self.entries = {}
        for ename, entry in plan["entries"].items():
            prepared = []
            for disp in entry["dispatches"]:
                pipe, bgl = self.kernels[disp["kernel"]]
                key = tuple(disp["uniforms"])
                if key not in self.uniforms:
                    ubuf = dev.create_buffer(size=align(4 * max(len(key), 1), 16),
                                             usage=usage.UNIFORM | usage.COPY_DST)
                    self.uniforms[key] = [ubuf, None]
                res = [{"binding": 0, "resource": {"buffer": self.uniforms[key][0]}}]
                res += [{"binding": n, "resource": {"buffer": self.buffers[b]}} for n, b in disp["bindings"]]
                bg = dev.create_bind_group(layout=bgl, entries=res)
                prepared.append((pipe, bg, disp["workgroups"]))
            self.entries[ename] = prepared
        self.past_len = 0

    # -- running ------------------------------------------------------------------------

    def run(self, entry: str, seq_len: int, past_len: int, stop_after: int | None = None) -> None:
        """Encode and submit one entry point for the given dimensions."""
        env = {"seq_len": seq_len, "past_len": past_len}
        for key, slot in self.uniforms.items():
            values = [evaluate(e, env) for e in key]
            if values != slot[1]:
                data = np.zeros(align(max(len(values), 1), 4), np.uint32)
                data[: len(values)] = values
                self.device.queue.write_buffer(slot[0], 0, data.tobytes())
                slot[1] = values
        enc = self.device.create_command_encoder()
        cp = enc.begin_compute_pass()
        for i, (pipe, bg, wg) in enumerate(self.entries[entry]):
            if stop_after is not None and i >= stop_after:
                break
            counts = [evaluate(e, env) for e in wg]
            if 0 in counts:
                continue
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(*counts)
        cp.end()
        self.device.queue.submit([enc.finish()])

    def read(self, name: str) -> np.ndarray:
        """Contents of a plan buffer (activations as float32)."""
        buf = self.plan["buffers"][name]
        raw = self.device.queue.read_buffer(self.buffers[name])
        dt = {"u32": np.uint32, "f32": np.float32}.get(buf.get("dtype"), np.float16 if self.variant == "f16"
                                                     else np.float32)
        n = buf.get("elements", len(raw) // np.dtype(dt).itemsize)
        return np.frombuffer(raw, dt)[:n].astype(np.float32 if dt != np.uint32 else np.uint32)

    def verify(self, tokens) -> np.ndarray:
        """Run the plan's "verify" entry on `tokens` after the cached ones (one run, at most its
        max_seq_len tokens); return the logits of every token [len(tokens), vocab] (float32)."""
        entry = self.plan["entries"].get("verify")
        if entry is None:
            raise ValueError("the plan has no verify entry")
        tokens = np.ascontiguousarray(tokens, np.uint32)
        if not 1 <= len(tokens) <= entry["max_seq_len"]:
            raise ValueError(f"verify takes 1..{entry['max_seq_len']} tokens, got {len(tokens)}")
        self._step("verify", tokens)
        vocab = self.plan["buffers"][self.plan["outputs"]["logits"]]["elements"]
        return self.read(self.plan["outputs"]["logits_rows"])[: len(tokens) * vocab].reshape(len(tokens), vocab)

    def _forward(self, entry: str, tokens: np.ndarray) -> np.ndarray:
        self.device.queue.write_buffer(self.buffers["tokens"], 0, tokens.tobytes())
        self.run(entry, len(tokens), self.past_len)
        return self.read(self.plan["outputs"]["logits"])
