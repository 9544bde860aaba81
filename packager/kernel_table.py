"""The kernel interface in one table: what every op's WGSL template and Wasm function take,
and the weight formats they read. Everything else derives from it:

- compile.py renders a template with the table's tile constants and workgroup size (the
  `{{NAME}}` placeholders) and writes the plan's kernel entries (bindings, uniforms,
  workgroup size and storage) from it;
- plan.py sizes dispatches with the same tile constants;
- wasm_build.py writes the generated C header `kernel_table.h` (op and format ids, the
  offset of every argument of every op) and the Wasm kernel table from it.

A C op reads one argument record (docs/wasm.md):
`[consts][uniforms][wg_x, wg_y, wg_z][pointers: bindings in binding order, then the weight parts]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

# Binding types, as WebGPU names them (GPUBufferBindingType).
U, R, W = "uniform", "read-only-storage", "storage"
WEIGHT_BINDING0 = 8  # weight parts bind at 8, 9, ... in the format's part order


@dataclass(frozen=True)
class WeightFormat:
    id: int  # FMT_<NAME> in kernel_table.h, the Wasm kernels' format argument
    parts: tuple[str, ...]  # in binding order (docs/formats.md); `_w_<name>.wgsl` declares them


# Order = ids. The parts are the order of quantization.formats (checked by a test).
WEIGHT_FORMATS: dict[str, WeightFormat] = {name: WeightFormat(i, parts) for i, (name, parts) in enumerate([
    ("f32", ("weight",)),
    ("f16", ("weight",)),
    ("q8f16", ("qweight", "scales")),
    ("q4f16", ("qweight", "scales", "mins")),
    ("q4f32", ("qweight", "scales", "mins")),
    ("q3f16", ("qweight", "qhigh", "scales", "mins")),
    ("q2f16", ("qweight", "scales", "mins")),
])}
MAX_WEIGHT_PARTS = max(len(f.parts) for f in WEIGHT_FORMATS.values())


@dataclass(frozen=True)
class WasmOp:
    """A C function `op_<name>` in packager/wasm/<name>.c."""

    consts: tuple[str, ...]  # its constant arguments: kernel values by name; FORMAT is the weight format's id
    tiles: Mapping[str, int] = field(default_factory=dict)  # its compile-time sizes (#define <OP>_<NAME>)


# Order = op ids (OP_<NAME> in kernel_table.h, `op` in kernels/llmpack.wasm.json).
# Ints are passed as they are, floats as their f32 bits, lists (RoPE's INV_FREQ) as the
# offset of the list in the module's constant tables (rope_tables.h).
WASM_OPS: dict[str, WasmOp] = {
    "embedding": WasmOp(("FORMAT", "K", "SCALE")),
    "rmsnorm": WasmOp(("H", "EPS")),
    # TILE tokens share one prepped x tile; RB rows are dequantized at a time (prefill)
    "matmul": WasmOp(("FORMAT", "K", "N"), {"TILE": 16, "RB": 4}),
    "rope": WasmOp(("NH", "NKV", "HD", "HALF", "SCALE", "INV_FREQ")),
    "kv_append": WasmOp(("CACHE",)),
    "attention": WasmOp(("NH", "NKV", "HD", "SCALE", "SOFTCAP", "WINDOW", "SLOTS")),
    "attention_decode": WasmOp(("NH", "NKV", "HD", "SCALE", "SOFTCAP", "WINDOW", "SLOTS", "SPLIT", "MAX_SPLITS")),
    "attention_combine": WasmOp(("HD", "WINDOW", "SPLIT", "MAX_SPLITS")),
    "silu_mul": WasmOp(()),
    "add": WasmOp(()),
    "bias_add": WasmOp(("W",)),
    "gelu_tanh_mul": WasmOp(()),
    "softcap": WasmOp(("CAP",)),
    # decode: gate and up projections and the gated activation in one op (ACT: GLU_ACTS)
    "matvec_glu": WasmOp(("FORMAT", "K", "N", "ACT")),
    "matvec_rope": WasmOp(("FORMAT", "K", "N", "HD", "HALF", "SCALE", "INV_FREQ")),
    "add_rmsnorm": WasmOp(("H", "EPS")),
    "add_rmsnorm_inplace": WasmOp(("H", "EPS")),
    # decode: matvec / matvec_rope with a linear layer's bias (Qwen2's q, k, v projections)
    "matvec_bias": WasmOp(("FORMAT", "K", "N")),
    "matvec_rope_bias": WasmOp(("FORMAT", "K", "N", "HD", "HALF", "SCALE", "INV_FREQ")),
}

# matvec_glu's ACT: the index of its activation here (the op it replaces: <act>_mul)
GLU_ACTS = ("silu", "gelu_tanh")


@dataclass(frozen=True)
class Binding:
    binding: int
    name: str  # the variable's name in the WGSL template and the pointer's name in the C op
    type: str


@dataclass(frozen=True)
class Template:
    """One WGSL template, packager/kernels/<name>.wgsl, and the Wasm op that runs it."""

    name: str
    bindings: tuple[Binding, ...]  # besides binding 0 (the uniform struct) and the weight parts
    uniforms: tuple[str, ...]  # fields of the uniform struct (all u32), in order
    workgroup_size: tuple[int, int, int]
    params: tuple[str, ...] = ()  # constants the plan specializes each kernel with
    tiles: Mapping[str, int] = field(default_factory=dict)  # fixed sizes of the template
    weights: bool = False  # includes a weight fragment ({{WEIGHTS}}); parts at WEIGHT_BINDING0..
    # weight matrices it reads (same format and shape): 2 also includes {{WEIGHTS2}}, the
    # fragment again with its parts bound after the first's and its names prefixed (compile.py)
    weight_sets: int = 1
    workgroup_bytes: Callable[[dict], int] = lambda v: 0  # of the kernel's values
    wasm: str = ""  # the WASM_OPS entry that runs it ("": the op of the same name; "-": none)
    source: str = ""  # its WGSL file, packager/kernels/<source>.wgsl ("": <name>.wgsl)

    @property
    def file(self) -> str:
        """Its WGSL file's name, without .wgsl."""
        return self.source or self.name

    @property
    def has_bias(self) -> bool:
        """Binds a bias: `{{BIAS}}` in its file is the fragment `_bias.wgsl`, else `_no_bias.wgsl`."""
        return any(b.name == "bias" for b in self.bindings)

    @property
    def wasm_op(self) -> str:
        """The Wasm op's name; "-": none (a WebGPU-only template)."""
        return self.wasm or self.name


ATTENTION_SPLIT = 256  # keys per workgroup of the decode attention (both of its passes)

TEMPLATES: dict[str, Template] = {t.name: t for t in [
    Template("embedding", (Binding(1, "tokens", R), Binding(2, "y", W)), ("seq_len", "row0", "rows"),
                          (64, 1, 1), params=("K", "SCALE"), weights=True),
    # rows of H values (a token's hidden state, or one head of q or k); IN: the type of x
    # ("f32": the residual stream, "act": another activation)
    Template("rmsnorm", (Binding(1, "x", R), Binding(2, "y", W), Binding(8, "w", R)), ("in_row0",), (64, 1, 1),
                        params=("H", "EPS", "IN"), workgroup_bytes=lambda v: 4 * v["WG"]),
    # x[t, i] += b[i] in place, x of W values per token (a linear layer's bias)
    Template("bias_add", (Binding(1, "x", W), Binding(8, "b", R)), ("n",), (256, 1, 1), params=("W",)),
    # decode: ROWS output rows per workgroup, THREADS_PER_ROW threads each (the kernel's
    # final sum adds 4 partials); x staged in chunks of up to X_CHUNK values
    Template("matvec", (Binding(1, "x", R), Binding(2, "y", W)), ("seq_len", "row0", "rows"), (64, 1, 1),
                       params=("K", "N", "OUT"), tiles={"ROWS": 16, "THREADS_PER_ROW": 4, "X_CHUNK": 2048},
                       weights=True, workgroup_bytes=lambda v: 4 * (min(v["K"], v["X_CHUNK"]) + v["WG"]),
                       wasm="matmul"),
    # verify (speculative decoding's few tokens): matvec's rows and threads over the tokens in
    # passes of 8, so each weight is dequantized once per pass (a vec4 reduction per 4 tokens)
    Template("matvec_batch", (Binding(1, "x", R), Binding(2, "y", W)), ("seq_len", "row0", "rows"), (64, 1, 1),
                             params=("K", "N", "OUT"), tiles={"ROWS": 16, "THREADS_PER_ROW": 4}, weights=True,
                             wasm="matmul", workgroup_bytes=lambda v: 32 * v["WG"]),
    # prefill: TILE_M (tokens) x TILE_N (rows) output tiles, K in steps of TILE_K; the
    # kernel's unrolled inner loop fixes TILE_M = 4 WG_Y and TILE_N = 8 WG_X
    Template("matmul", (Binding(1, "x", R), Binding(2, "y", W)), ("seq_len", "row0", "rows"), (8, 8, 1),
                       params=("K", "N", "OUT"), tiles={"TILE_M": 32, "TILE_N": 64, "TILE_K": 32}, weights=True,
                       workgroup_bytes=lambda v: 16 * (v["TILE_M"] + v["TILE_N"]) * v["TILE_K"] // 4),
    Template("rope", (Binding(1, "q", W), Binding(2, "k", W)), ("seq_len", "past_len"), (64, 1, 1),
                     params=("NH", "NKV", "HD", "HALF", "SCALE", "INV_FREQ")),
    # decode: matvec whose workgroups hold rotary pairs of rows (row i and i + HALF of a head
    # of HD rows) and rotate them at position past_len before storing y[dst + row]: q, or k
    # straight into its cache row (tiles as matvec's)
    Template("matvec_rope", (Binding(1, "x", R), Binding(2, "y", W)), ("past_len", "dst"), (64, 1, 1),
                            params=("K", "N", "HD", "HALF", "SCALE", "INV_FREQ"),
                            tiles={"ROWS": 16, "THREADS_PER_ROW": 4, "X_CHUNK": 2048}, weights=True,
                            workgroup_bytes=lambda v: 4 * (min(v["K"], v["X_CHUNK"]) + v["WG"])),
    # decode, a linear layer with a bias (Qwen2's q, k, v; fuse_qkv_rope): matvec's and
    # matvec_rope's files with the bias fragment, bias[r] (f32, one per row of the bound weight)
    # added to row r's f32 sum, before it is stored (matvec_bias) or rounded and rotated
    # (matvec_rope_bias)
    Template("matvec_bias", (Binding(1, "x", R), Binding(2, "y", W), Binding(3, "bias", R)),
                            ("seq_len", "row0", "rows"), (64, 1, 1), params=("K", "N", "OUT"),
                            tiles={"ROWS": 16, "THREADS_PER_ROW": 4, "X_CHUNK": 2048}, weights=True,
                            workgroup_bytes=lambda v: 4 * (min(v["K"], v["X_CHUNK"]) + v["WG"]), source="matvec"),
    Template("matvec_rope_bias", (Binding(1, "x", R), Binding(2, "y", W), Binding(3, "bias", R)),
                                 ("past_len", "dst"), (64, 1, 1), params=("K", "N", "HD", "HALF", "SCALE", "INV_FREQ"),
                                 tiles={"ROWS": 16, "THREADS_PER_ROW": 4, "X_CHUNK": 2048}, weights=True,
                                 workgroup_bytes=lambda v: 4 * (min(v["K"], v["X_CHUNK"]) + v["WG"]),
                                 source="matvec_rope"),
    # CACHE: the cache's elements (a sliding-window layer's ring buffer wraps around)
    Template("kv_append", (Binding(1, "k", R), Binding(2, "v", R), Binding(3, "kc", W), Binding(4, "vc", W)),
                          ("n", "dst"), (256, 1, 1), params=("CACHE",)),
    # SOFTCAP: attention-logit soft-capping (0: none); WINDOW: keys per query (the context
    # window unless a sliding-window layer); SLOTS: cache rows (position j in row j % SLOTS)
    Template("attention", (Binding(1, "q", R), Binding(2, "kc", R), Binding(3, "vc", R), Binding(4, "out", W)),
                          ("seq_len", "past_len"), (64, 1, 1),
                          params=("NH", "NKV", "HD", "SCALE", "SOFTCAP", "WINDOW", "SLOTS"),
                          workgroup_bytes=lambda v: 4 * (v["HD"] + 2 * v["WG"])),
    Template("attention_decode", (Binding(1, "q", R), Binding(2, "kc", R), Binding(3, "vc", R),
                                  Binding(4, "part", W)), ("past_len",), (64, 1, 1),
                                 params=("NH", "NKV", "HD", "SCALE", "SOFTCAP", "WINDOW", "SLOTS", "MAX_SPLITS"),
                                 tiles={"SPLIT": ATTENTION_SPLIT},
                                 workgroup_bytes=lambda v: 4 * (v["HD"] + 2 * v["WG"])),
    Template("attention_combine", (Binding(1, "part", R), Binding(2, "out", W)), ("past_len",), (64, 1, 1),
                                  params=("HD", "WINDOW", "MAX_SPLITS"), tiles={"SPLIT": ATTENTION_SPLIT}),
    Template("silu_mul", (Binding(1, "g", W), Binding(2, "u", R)), ("n",), (256, 1, 1)),
    Template("add", (Binding(1, "x", W), Binding(2, "y", R)), ("n",), (256, 1, 1)),
    # Gemma's MLP activation: g = gelu_tanh(g) * u
    Template("gelu_tanh_mul", (Binding(1, "g", W), Binding(2, "u", R)), ("n",), (256, 1, 1)),
    # x = tanh(x / CAP) * CAP on f32 values (final-logit soft-capping)
    Template("softcap", (Binding(1, "x", W),), ("n",), (256, 1, 1), params=("CAP",)),
    # decode, gated MLP: y[t, n] = act(x[t] . Wg[n]) * (x[t] . Wu[n]), act = GLU_ACTS[ACT], f32 until
    # stored; matvec's reduction for both weights (Wg's parts at 8.., then Wu's)
    Template("matvec_glu", (Binding(1, "x", R), Binding(2, "y", W)), ("seq_len", "row0", "rows"), (64, 1, 1),
                           params=("K", "N", "ACT"), tiles={"ROWS": 16, "THREADS_PER_ROW": 4, "X_CHUNK": 2048},
                           weights=True, weight_sets=2,
                           workgroup_bytes=lambda v: 4 * (min(v["K"], v["X_CHUNK"]) + 2 * v["WG"])),
    # the residual add fused with the next RMSNorm (docs/plan.md, "Fused dispatches"): x += y
    # (x: the f32 residual stream; Y: the type of y, "act" or "f32"), then out = rmsnorm(x) * w,
    # rows in_row0 + t of x and y, row t of out; one workgroup per row. `_inplace`: out is y
    # (one binding: WebGPU forbids binding a buffer twice when one binding writes it)
    Template("add_rmsnorm", (Binding(1, "x", W), Binding(2, "y", R), Binding(3, "out", W), Binding(8, "w", R)),
                            ("in_row0",), (64, 1, 1), params=("H", "EPS", "Y"),
                            workgroup_bytes=lambda v: 4 * v["WG"]),
    Template("add_rmsnorm_inplace", (Binding(1, "x", W), Binding(2, "y", W), Binding(8, "w", R)), ("in_row0",),
                                    (64, 1, 1), params=("H", "EPS", "Y"), workgroup_bytes=lambda v: 4 * v["WG"]),
    # greedy next token on the device: out = [id, f32 bits] of the largest of n logits (one
    # workgroup; the plan's optional "argmax" entry). WebGPU only: no Wasm op (its logits
    # are in memory already)
    Template("argmax", (Binding(1, "x", R), Binding(2, "out", W)), ("n",), (256, 1, 1),
                       workgroup_bytes=lambda v: 8 * v["WG"], wasm="-"),
    # top-K sampling candidates on the device (the plan's optional "topk" entry): per group of
    # WG * E logits its K largest and softmax statistics at temperature 1 / inv_t, then one
    # workgroup merging the groups' lists (groups <= WG). WebGPU only, as argmax
    Template("topk_partial", (Binding(1, "x", R), Binding(2, "inv_t", R), Binding(3, "part", W)), ("n",),
                             (256, 1, 1), params=("K", "E"), workgroup_bytes=lambda v: 12 * v["WG"], wasm="-"),
    Template("topk_merge", (Binding(1, "part", R), Binding(2, "inv_t", R), Binding(3, "out", W)), ("groups",),
                           (256, 1, 1), params=("K",), workgroup_bytes=lambda v: 12 * v["WG"], wasm="-"),
]}


def workgroup_values(t: Template) -> dict[str, int]:
    """The workgroup placeholders every template may use: WG (invocations per workgroup),
    WG_X, WG_Y, WG_Z."""
    x, y, z = t.workgroup_size
    return {"WG": x * y * z, "WG_X": x, "WG_Y": y, "WG_Z": z}


def kernel_consts(name: str, params: Mapping) -> dict:
    """The constants a kernel of template `name` is specialized with: its params (all of
    them, nothing else) and the template's tiles. What plan.json lists per kernel."""
    t = TEMPLATES[name]
    if set(params) != set(t.params):
        raise ValueError(f"kernel template {name} takes {sorted(t.params)}, got {sorted(params)}")
    return {**params, **t.tiles}


def bindings(name: str, weight_format: str | None) -> list[tuple[int, str]]:
    """(binding, type) of a kernel, binding 0 and the weight parts included."""
    t = TEMPLATES[name]
    out = [(0, U)] + [(b.binding, b.type) for b in t.bindings]
    if t.weights:
        out += [(WEIGHT_BINDING0 + i, R) for i in range(t.weight_sets * len(WEIGHT_FORMATS[weight_format].parts))]
    return out


def workgroup_bytes(name: str, consts: Mapping) -> int:
    t = TEMPLATES[name]
    return t.workgroup_bytes({**consts, **workgroup_values(t)})


# ---------------------------------------------------------------------------------------
# the C argument record of each Wasm op


def wasm_layout(op: str) -> list[tuple[str, int]]:
    """(name, offset) of every fixed argument of a Wasm op: its consts, its uniforms, WG_X,
    WG_Y, WG_Z, its pointers (binding names) and WEIGHTS (the first weight part, if any)."""
    t = next(t for t in TEMPLATES.values() if t.wasm_op == op)
    names = [*WASM_OPS[op].consts, *t.uniforms, "WG_X", "WG_Y", "WG_Z", *(b.name for b in t.bindings)]
    if t.weights:
        names.append("WEIGHTS")
    return [(n, i) for i, n in enumerate(names)]


def _check() -> None:
    """Templates that share a Wasm op agree on its record; tiles agree with the workgroup."""
    for op in WASM_OPS:
        users = [t for t in TEMPLATES.values() if t.wasm_op == op]
        assert users, f"Wasm op {op} runs no template"
        first = users[0]
        for t in users[1:]:
            assert (t.uniforms, t.bindings, t.weights) == (first.uniforms, first.bindings, first.weights), op
        names = [n.upper() for n, _ in wasm_layout(op)]
        assert len(names) == len(set(names)), f"Wasm op {op}: argument names collide"
    mv, mm = TEMPLATES["matvec"], TEMPLATES["matmul"]
    assert mv.tiles["ROWS"] * mv.tiles["THREADS_PER_ROW"] == math.prod(mv.workgroup_size)
    assert mv.tiles["THREADS_PER_ROW"] == 4
    assert TEMPLATES["matvec_glu"].tiles == mv.tiles  # the same reduction: g and u equal matvec's
    assert TEMPLATES["matvec_rope"].tiles == mv.tiles  # its rows pair up as matvec's rows do
    assert TEMPLATES["matvec_bias"].tiles == TEMPLATES["matvec_rope_bias"].tiles == mv.tiles  # the same reductions
    mb = TEMPLATES["matvec_batch"].tiles
    assert (mb["ROWS"], mb["THREADS_PER_ROW"]) == (mv.tiles["ROWS"], mv.tiles["THREADS_PER_ROW"])  # its reduction
    assert (mm.tiles["TILE_M"], mm.tiles["TILE_N"]) == (4 * mm.workgroup_size[1], 8 * mm.workgroup_size[0])


_check()
