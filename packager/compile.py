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
- `{{BIAS}}` (matvec, matvec_rope): `_bias.wgsl`, the `bias` binding at 3 and `fn bias_of(r)`
  its row r, for the templates whose table entry binds a bias (`matvec_bias`,
  `matvec_rope_bias`, which render the same files: `Template.source`), else `_no_bias.wgsl`
  (`bias_of` 0).
- `{{WEIGHTS2}}` (templates with `weight_sets` 2: `matvec_glu`): the same fragment for a
  second matrix of the same format, its parts bound right after the first's and every name
  it declares prefixed `w2_` (`w2_wdot`, `w2_wload8`, ...; `second_weight_fragment`).
- `{{OUT}}`: output element type of a matmul (`act`, or `f32` for logits).
- `{{WG}}`, `{{WG_X}}`, `{{WG_Y}}`, `{{WG_Z}}` and the template's tile constants: from the
  kernel table (packager/kernel_table.py), the one place they are written.
- any other `{{NAME}}`: a constant of the kernel's spec (ints become `123`, floats a
  WGSL float literal, lists their comma-separated elements, strings are inserted as they are).

`kernel_files` (the WGSL and plan.json of a built plan) is what packager/bundle.py uses;
`compile_artifacts` plans and compiles in one call.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import PackError
from .kernel_table import TEMPLATES, WEIGHT_FORMATS, workgroup_bytes, workgroup_values
from .kernel_table import bindings as kernel_bindings

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
    if isinstance(value, (list, tuple)):  # the elements of an array constructor
        return ", ".join(wgsl_literal(v) for v in value)
    return str(value)


_FRAGMENT_NAMES = re.compile(r"^(?:struct|fn|const) (\w+)|^@group\(0\) @binding\(\d+\) var<[^>]*> (\w+)", re.M)
_BINDING = re.compile(r"@binding\((\d+)\)")


def second_weight_fragment(weight_format: str) -> str:
    """The weight fragment of a kernel's second matrix (`{{WEIGHTS2}}`): its bindings moved
    past the first matrix's parts and every top-level name it declares (parts, W8, wload8,
    GK, wdot, helpers) prefixed `w2_`, so that both copies live in one module."""
    text = load_template(f"_w_{weight_format}")
    names = {a or b for a, b in _FRAGMENT_NAMES.findall(text)}
    text = re.sub(r"\b(" + "|".join(sorted(names)) + r")\b", r"w2_\1", text)
    parts = len(WEIGHT_FORMATS[weight_format].parts)
    return _BINDING.sub(lambda m: f"@binding({int(m.group(1)) + parts})", text)


def render(template: str, variant: str, consts: dict | None = None, weight_format: str | None = None) -> str:
    """Specialize a template into WGSL source for one variant ("f32" or "f16"). The
    template's tile constants and workgroup size come from the kernel table; `consts`
    are the kernel's params (and may repeat the tiles, as plan.json lists them)."""
    if variant not in VARIANTS:
        raise PackError(f"unknown kernel variant {variant!r}")
    spec = TEMPLATES[template]
    values = {"PRELUDE": PRELUDES[variant], "OUT": "act", **spec.tiles, **workgroup_values(spec),
              "BIAS": load_template("_bias" if spec.has_bias else "_no_bias")}
    if weight_format is not None:
        if weight_format not in WEIGHT_FORMATS:
            raise PackError(f"no kernel for weight format {weight_format!r}")
        values["WEIGHTS"] = load_template(f"_w_{weight_format}")
        if spec.weight_sets == 2:
            values["WEIGHTS2"] = second_weight_fragment(weight_format)
    values.update(consts or {})
    values = {k: wgsl_literal(v) for k, v in values.items()}
    text = load_template(spec.file)
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
    consts: dict = field(default_factory=dict)  # params and tiles (kernel_table.kernel_consts)
    weight_format: str | None = None

    def bindings(self) -> list[tuple[int, str]]:
        return kernel_bindings(self.template, self.weight_format)

    def workgroup_bytes(self) -> int:
        return workgroup_bytes(self.template, self.consts)

    def source(self, variant: str) -> str:
        return render(self.template, variant, self.consts, self.weight_format)

    def file(self, variant: str) -> str:
        return f"kernels/{self.name}.{variant}.wgsl"

    def to_json(self, variants) -> dict:
        out = {
            "template": self.template,
            "files": {v: self.file(v) for v in variants},
            "bindings": [{"binding": n, "type": t} for n, t in self.bindings()],
            "uniforms": list(TEMPLATES[self.template].uniforms),
            "workgroup_size": list(TEMPLATES[self.template].workgroup_size),
            "workgroup_storage_bytes": self.workgroup_bytes(),
            "consts": dict(self.consts),
        }
        if self.weight_format is not None:
            out["weight_format"] = self.weight_format
        return out

    @classmethod
    def from_json(cls, name: str, entry: dict) -> KernelSpec:
        """The spec of a plan.json kernel entry (what the Wasm build reads)."""
        if "consts" not in entry:
            raise PackError(f"plan.json kernel {name} has no consts (packaged by an older llmpack); "
                            "package the bundle again")
        return cls(name, entry["template"], dict(entry["consts"]), entry.get("weight_format"))


# ---------------------------------------------------------------------------------------
# validation with naga (through wgpu-native)


_DEVICES: dict[bool, object] = {}


def validation_device(need_f16: bool):
    """A wgpu device for compiling kernels (lavapipe on CI machines), with shader-f16 when
    need_f16; None when there is no such adapter. One per process."""
    if need_f16 not in _DEVICES:
        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))  # quiets Mesa
        try:
            import wgpu

            adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
            if adapter is None or (need_f16 and "shader-f16" not in adapter.features):
                return None
            _DEVICES[need_f16] = adapter.request_device_sync(required_features=["shader-f16"] if need_f16 else [])
        except Exception:  # no Vulkan driver, no adapter
            return None
    return _DEVICES[need_f16]


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


def kernel_files(plan: dict, kernels: list[KernelSpec], *, validate: bool = True) -> dict[str, bytes]:
    """{path in bundle: bytes}: "plan.json" and "kernels/<kernel>.<variant>.wgsl" for every
    kernel and variant of the plan, each compiled by naga first (unless validate=False or
    $LLMPACK_SKIP_KERNEL_VALIDATION is set). Raises PackError naming a kernel that fails."""
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
    return files


def compile_artifacts(manifest: dict, *, config=None, context_window: int | None = None,
                      max_binding_size: int = DEFAULT_MAX_BINDING, max_buffer_size: int = DEFAULT_MAX_BUFFER,
                      prefill_chunk: int | None = None, validate: bool = True,
                      verify_chunk: int | None = None) -> tuple[dict[str, bytes], dict]:
    """Build the execution plan and the kernels of a bundle (build_plan + kernel_files).

    Returns ({path in bundle: bytes}, requirements), requirements being the dict to store
    as the manifest's "requirements" (features, optional features, limits).
    Raises PackError when the model cannot be planned or a kernel fails to compile."""
    from .plan import DEFAULT_PREFILL_CHUNK, build_plan

    plan, kernels = build_plan(manifest, config=config, context_window=context_window,
                               max_binding_size=max_binding_size, max_buffer_size=max_buffer_size,
                               prefill_chunk=prefill_chunk or DEFAULT_PREFILL_CHUNK, verify_chunk=verify_chunk)
    return kernel_files(plan, kernels, validate=validate), plan["requirements"]
