"""Package-time back end: WGSL kernel generation, naga validation, plan + kernel files.

Kernels are templates in packager/kernels/ (one op per file). A template is specialized
by plain text substitution of `{{NAME}}` placeholders:

- `{{PRELUDE}}`: the variant header. f32: `alias act = f32;`; f16: `enable f16;` and
  `alias act = f16;`. `act` is the storage type of activations and of the KV cache;
  all arithmetic is f32 in both variants (see docs/plan.md).
- `{{WEIGHTS}}`: the weight-format fragment `_w_<format>.wgsl`, which declares the
  weight parts at bindings 8, 9, ... and provides `fn wload8(row, k8) -> W8` (8
  dequantized values of one row) and `fn wdot(row, g, x4) -> f32` (the dot product of
  one quantization group, `GK` columns, with x staged in the kernel's workgroup array
  `xs: array<vec4<f32>, ...>`, which every kernel including a fragment declares).
- `{{OUT}}`: output element type of a matmul (`act`, or `f32` for logits).
- any other `{{NAME}}`: a constant of the kernel's spec (ints become `123`, floats a
  WGSL float literal, strings are inserted as they are).

`compile_artifacts` is the entry point used by packager/bundle.py.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import PackError

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
VARIANTS = ("f32", "f16")

# The device limits a plan targets unless told otherwise: maxStorageBufferBindingSize on
# many devices, and WebGPU's default maxBufferSize. Larger weights are split into row blocks.
DEFAULT_MAX_BINDING = 128 << 20
DEFAULT_MAX_BUFFER = 256 << 20

PRELUDES = {
    "f32": "alias act = f32;\nalias act4 = vec4<f32>;\n",
    "f16": "enable f16;\nalias act = f16;\nalias act4 = vec4<f16>;\n",
}
ACT_BYTES = {"f32": 4, "f16": 2}

# Binding types, as WebGPU names them (GPUBufferBindingType).
U, R, W = "uniform", "read-only-storage", "storage"

# Per template: bindings [(binding, type)] besides the weight parts (read-only storage
# at 8, 9, ... in the order of the format's parts), the uniform field names (binding 0,
# u32 each, in order), workgroup size and workgroup memory bytes.
TEMPLATES: dict[str, dict] = {
    "embedding": dict(bindings=[(0, U), (1, R), (2, W)], uniforms=["seq_len", "row0", "rows"],
                      workgroup_size=(64, 1, 1), workgroup_bytes=0),
    "rmsnorm": dict(bindings=[(0, U), (1, R), (2, W), (8, R)], uniforms=["in_row0"],
                    workgroup_size=(64, 1, 1), workgroup_bytes=256),
    "matvec": dict(bindings=[(0, U), (1, R), (2, W)], uniforms=["seq_len", "row0", "rows"],
                   workgroup_size=(64, 1, 1), workgroup_bytes=None),
    "matmul": dict(bindings=[(0, U), (1, R), (2, W)], uniforms=["seq_len", "row0", "rows"],
                   workgroup_size=(8, 8, 1), workgroup_bytes=12288),
    "rope": dict(bindings=[(0, U), (1, W), (2, W)], uniforms=["seq_len", "past_len"],
                 workgroup_size=(64, 1, 1), workgroup_bytes=0),
    "kv_append": dict(bindings=[(0, U), (1, R), (2, R), (3, W), (4, W)], uniforms=["n", "dst"],
                      workgroup_size=(256, 1, 1), workgroup_bytes=0),
    "attention": dict(bindings=[(0, U), (1, R), (2, R), (3, R), (4, W)], uniforms=["seq_len", "past_len"],
                      workgroup_size=(64, 1, 1), workgroup_bytes=None),
    "attention_decode": dict(bindings=[(0, U), (1, R), (2, R), (3, R), (4, W)], uniforms=["past_len"],
                             workgroup_size=(64, 1, 1), workgroup_bytes=None),
    "attention_combine": dict(bindings=[(0, U), (1, R), (2, W)], uniforms=["past_len"],
                              workgroup_size=(64, 1, 1), workgroup_bytes=0),
    "silu_mul": dict(bindings=[(0, U), (1, W), (2, R)], uniforms=["n"],
                     workgroup_size=(256, 1, 1), workgroup_bytes=0),
    "add": dict(bindings=[(0, U), (1, W), (2, R)], uniforms=["n"],
                workgroup_size=(256, 1, 1), workgroup_bytes=0),
}

WEIGHT_BINDING0 = 8
WEIGHT_PARTS = {
    "f32": ["weight"], "f16": ["weight"],
    "q8f16": ["qweight", "scales"], "q4f16": ["qweight", "scales", "mins"], "q4f32": ["qweight", "scales", "mins"],
    "q3f16": ["qweight", "qhigh", "scales", "mins"], "q2f16": ["qweight", "scales", "mins"],
}

_PLACEHOLDER = re.compile(r"\{\{([A-Z0-9_]+)\}\}")


@lru_cache(maxsize=None)
def load_template(name: str) -> str:
    path = KERNEL_DIR / f"{name}.wgsl"
    if not path.exists():
        raise PackError(f"no kernel template {path.name}")
    return path.read_text()


def wgsl_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.9e}"  # 9 significant digits: the f32 value round-trips
    return str(value)


def render(template: str, variant: str, consts: dict | None = None, weight_format: str | None = None) -> str:
    """Specialize a template into WGSL source for one variant ("f32" or "f16")."""
    if variant not in VARIANTS:
        raise PackError(f"unknown kernel variant {variant!r}")
    values = {"PRELUDE": PRELUDES[variant], "OUT": "act"}
    if weight_format is not None:
        if weight_format not in WEIGHT_PARTS:
            raise PackError(f"no kernel for weight format {weight_format!r}")
        values["WEIGHTS"] = load_template(f"_w_{weight_format}")
    values.update({k: wgsl_literal(v) for k, v in (consts or {}).items()})
    text = load_template(template)
    for _ in range(3):  # fragments may hold placeholders of their own
        text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise PackError(f"kernel template {template}: no value for {', '.join(left)}")
    return text


@dataclass
class KernelSpec:
    """One specialized kernel (both variants share the spec)."""

    name: str  # unique in a plan, e.g. "matvec.q4f16.k576.n1536"
    template: str
    consts: dict = field(default_factory=dict)
    weight_format: str | None = None

    @property
    def info(self) -> dict:
        return TEMPLATES[self.template]

    def bindings(self) -> list[tuple[int, str]]:
        b = list(self.info["bindings"])
        if self.weight_format is not None:
            b += [(WEIGHT_BINDING0 + i, R) for i in range(len(WEIGHT_PARTS[self.weight_format]))]
        return b

    def workgroup_bytes(self) -> int:
        n = self.info["workgroup_bytes"]
        if n is None and self.template in ("attention", "attention_decode"):  # qs[HD] + pr[64] + red[64]
            n = 4 * (self.consts["HD"] + 128)
        elif n is None and self.template == "matvec":  # xs[min(K, 2048)] + red[64], f32
            n = 4 * (min(self.consts["K"], 2048) + 64)
        return n

    def source(self, variant: str) -> str:
        return render(self.template, variant, self.consts, self.weight_format)

    def file(self, variant: str) -> str:
        return f"kernels/{self.name}.{variant}.wgsl"

    def to_json(self, variants) -> dict:
        return {
            "template": self.template,
            "files": {v: self.file(v) for v in variants},
            "bindings": [{"binding": n, "type": t} for n, t in self.bindings()],
            "uniforms": list(self.info["uniforms"]),
            "workgroup_size": list(self.info["workgroup_size"]),
            "workgroup_storage_bytes": self.workgroup_bytes(),
        }


# ---------------------------------------------------------------------------------------
# validation with naga (through wgpu-native)


def validation_device(need_f16: bool):
    """A wgpu device for compiling kernels (lavapipe on CI machines), or None."""
    from .gpu_executor import request_device

    try:
        return request_device(f16=need_f16)
    except Exception:  # no adapter at all, or none with shader-f16
        return None


def validate_kernels(sources: dict[str, str], *, device=None, strict: bool = True) -> int:
    """Compile every WGSL source (name -> code) with naga through wgpu-native and build
    its compute pipeline. Raises PackError naming the first kernel that fails. Returns
    the number of modules checked (f16 modules are skipped, with strict=False, when
    no device with shader-f16 exists)."""
    need_f16 = any("enable f16;" in s for s in sources.values())
    dev = device or validation_device(need_f16)
    if dev is None and need_f16:
        dev = validation_device(False)
    if dev is None:
        if strict:
            raise PackError("cannot validate kernels: no WebGPU adapter (install mesa-vulkan-drivers)")
        return 0
    has_f16 = "shader-f16" in dev.features
    checked = 0
    for name, code in sources.items():
        if "enable f16;" in code and not has_f16:
            if strict:
                raise PackError(f"cannot validate kernel {name}: the adapter lacks shader-f16")
            continue
        try:
            module = dev.create_shader_module(label=name, code=code)
            dev.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})
        except Exception as e:  # wgpu.GPUValidationError and friends carry naga's message
            msg = str(e).strip()
            raise PackError(f"kernel {name} failed to compile: {msg}") from None
        checked += 1
    return checked


# ---------------------------------------------------------------------------------------
# entry point


def compile_artifacts(manifest: dict, *, context_window: int | None = None,
                      max_binding_size: int = DEFAULT_MAX_BINDING, max_buffer_size: int = DEFAULT_MAX_BUFFER,
                      prefill_chunk: int | None = None, validate: bool = True) -> tuple[dict[str, bytes], dict]:
    """Build the execution plan and the kernels of a bundle.

    Returns ({path in bundle: bytes}, requirements). The files are "plan.json" and
    "kernels/<kernel>.<variant>.wgsl"; requirements is the dict to store as the
    manifest's "requirements" (features, optional features, limits).
    Raises PackError when the model cannot be planned or a kernel fails to compile."""
    from .plan import DEFAULT_PREFILL_CHUNK, build_plan

    plan, kernels = build_plan(manifest, context_window=context_window, max_binding_size=max_binding_size,
                               max_buffer_size=max_buffer_size,
                               prefill_chunk=prefill_chunk or DEFAULT_PREFILL_CHUNK)
    files: dict[str, bytes] = {}
    sources: dict[str, str] = {}
    for spec in kernels:
        for variant in plan["variants"]:
            code = spec.source(variant)
            sources[f"{spec.name}.{variant}"] = code
            files[spec.file(variant)] = code.encode()
    if validate and not os.environ.get("LLMPACK_SKIP_KERNEL_VALIDATION"):
        validate_kernels(sources)
    files["plan.json"] = (json.dumps(plan, separators=(",", ":")) + "\n").encode()
    return files, plan["requirements"]
