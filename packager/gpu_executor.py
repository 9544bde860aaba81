"""Run a bundle's execution plan on wgpu-py (WebGPU over Vulkan; lavapipe on CI).

For tests and benchmarks: it does what the JavaScript runtime does, from the same
plan.json and kernel files, with no model-specific code.

    ex = GpuExecutor(bundle_dir)            # variant "auto": f16 when the device has it
    logits = ex.prefill(tokens)             # last token's logits, numpy f32 [vocab]
    logits = ex.decode(token)
    ex.reset()
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .plan_expr import evaluate

_DEVICES: dict[bool, object] = {}


def request_device(f16: bool = False):
    """One shared wgpu device per process (with shader-f16 when f16=True)."""
    if f16 in _DEVICES:
        return _DEVICES[f16]
    if "XDG_RUNTIME_DIR" not in os.environ:  # quiets Mesa's warnings
        import tempfile

        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-")
    import wgpu

    adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    if adapter is None:
        raise RuntimeError("no WebGPU adapter")
    features = []
    if f16:
        if "shader-f16" not in adapter.features:
            raise RuntimeError("the adapter lacks shader-f16")
        features.append("shader-f16")
    limits = adapter.limits
    want = {k: limits[k] for k in ("max-storage-buffer-binding-size", "max-buffer-size",
                                   "max-storage-buffers-per-shader-stage",
                                   "max-compute-workgroup-storage-size") if k in limits}
    device = adapter.request_device_sync(required_features=features, required_limits=want)
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
