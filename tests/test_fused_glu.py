"""The fused gated MLP of decode (docs/plan.md, "Fused dispatches"): `matvec_glu` computes
act(x . Wg[n]) * (x . Wu[n]) in one dispatch instead of two mat-vecs and silu_mul (or
gelu_tanh_mul). Its WGSL kernel (wgpu-py, both variants) and its C op (wasmtime) against
numpy for every weight format the plan fuses, SiLU and GELU-tanh; against the unfused
kernels they replace; and where the plan fuses (decode only; formats whose parts fit 8
storage buffers; Phi-3's gate_up_proj row views; Gemma's GELU; weights in row blocks).
Whole models with the fused plan are compared with the reference by test_plan_gpu.py,
test_wasm_plan.py, test_gemma.py and test_phi3_smollm3.py."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from conftest import require, require_module
from gpu_executor import PipelineCache, has_f16, request_device, run_kernel
from kernel_refs import encode_weight, gelu_tanh_ref, rel_err
from packager import plan as plan_module
from packager.compile import render
from packager.kernel_table import GLU_ACTS, WEIGHT_FORMATS, bindings
from packager.plan import MAX_STORAGE_BUFFERS, build_plan
from packager.wasm_build import FORMATS, compile_module

# the formats whose two weights' parts and x, y fit WebGPU's default 8 storage buffers
GLU_FORMATS = [f for f in WEIGHT_FORMATS if 2 + 2 * len(WEIGHT_FORMATS[f].parts) <= MAX_STORAGE_BUFFERS]
TOL = {"f32": 1e-5, "f16": 2e-3}  # tests/test_kernels.py's
ACT_DTYPE = {"f32": np.float32, "f16": np.float16}
K, N = 256, 200  # N not a multiple of the 16 rows of a workgroup


def test_the_formats_that_fuse():
    assert GLU_FORMATS == ["f32", "f16", "q8f16", "q4f16", "q4f32", "q2f16"]  # not q3f16 (4 parts)
    assert sum(t != "uniform" for _, t in bindings("matvec_glu", "q4f16")) == 8


@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_second_weight_binds_after_the_first(fmt):
    """{{WEIGHTS2}}: the fragment again, its parts bound after the first's, under w2_ names."""
    code = render("matvec_glu", "f32", {"K": K, "N": N, "ACT": 0}, fmt)
    assert [int(n) for n in re.findall(r"@binding\((\d+)\)", code)] == [n for n, _ in bindings("matvec_glu", fmt)]
    assert "fn wdot(" in code and "fn w2_wdot(" in code


def act_ref(act: str, g, u):
    return (g / (1 + np.exp(-g)) if act == "silu" else gelu_tanh_ref(g)) * u


def glu_weights(rng, fmt, n=N):
    """(parts of Wg then Wu, dequantized Wg, Wu): a gate large enough to reach both tails of
    the activation."""
    pg, dg = encode_weight(fmt, rng.normal(0, 0.3, (n, K)).astype(np.float32))
    pu, du = encode_weight(fmt, rng.normal(0, 0.1, (n, K)).astype(np.float32))
    return [*pg, *pu], dg, du


# ---------------------------------------------------------------------------------------
# the WGSL kernel


@pytest.fixture(scope="module")
def gpu():
    dev = request_device(f16=has_f16())
    return dev, PipelineCache(dev)


def run_glu(gpu, variant, fmt, act, x, parts, n=N, r0=0, rows=None):
    """y [seq, n] of one dispatch over rows [r0, r0 + rows) (all n by default); y is NaN before."""
    dev, cache = gpu
    seq, rows = x.shape[0], n if rows is None else rows
    code = render("matvec_glu", variant, {"K": K, "N": n, "ACT": GLU_ACTS.index(act)}, fmt)
    buffers = {1: x, 2: np.zeros((seq, n), ACT_DTYPE[variant]), **{8 + i: p for i, p in enumerate(parts)}}
    out = run_kernel(dev, cache, code, bindings("matvec_glu", fmt), buffers, [seq, r0, rows],
                     (math.ceil(rows / 16), seq, 1), read=[2], poison=[2])
    return out[2].view(ACT_DTYPE[variant]).reshape(seq, n).astype(np.float64)


@pytest.mark.parametrize("act", GLU_ACTS)
@pytest.mark.parametrize("variant", ["f32", "f16"])
@pytest.mark.parametrize("fmt", GLU_FORMATS)
def test_matvec_glu_kernel(gpu, fmt, variant, act):
    dev, cache = gpu
    if variant == "f16":
        require("f16", "shader-f16" in dev.features, "wgpu-py's adapter lacks shader-f16")
    rng = np.random.default_rng(GLU_FORMATS.index(fmt) * 4 + GLU_ACTS.index(act) * 2 + (variant == "f16"))
    parts, dg, du = glu_weights(rng, fmt)
    for seq in (1, 3):
        x = rng.normal(0, 1, (seq, K)).astype(ACT_DTYPE[variant])
        xd = x.astype(np.float64)
        got = run_glu(gpu, variant, fmt, act, x, parts)
        assert rel_err(got, act_ref(act, xd @ dg.T, xd @ du.T)) <= TOL[variant], (seq, variant)
    if variant == "f32":  # the dispatches it replaces: two mat-vecs, then <act>_mul in place
        mm = render("matvec", "f32", {"K": K, "N": N}, fmt)
        binds = [(0, "uniform"), (1, "read-only-storage"), (2, "storage")]
        wb = [(8 + i, "read-only-storage") for i in range(len(WEIGHT_FORMATS[fmt].parts))]
        p = len(wb)
        g, u = (run_kernel(dev, cache, mm, binds + wb, {1: x, 2: np.zeros((seq, N), np.float32),
                                                        **{8 + i: a for i, a in enumerate(w)}},
                           [seq, 0, N], (math.ceil(N / 16), seq, 1), read=[2])[2] for w in (parts[:p], parts[p:]))
        n = seq * N
        chain = run_kernel(dev, cache, render(f"{act}_mul", "f32"),
                           [(0, "uniform"), (1, "storage"), (2, "read-only-storage")], {1: g, 2: u}, [n],
                           (math.ceil(n / 256), 1, 1), read=[1])[1].view(np.float32).reshape(seq, N)
        # the same reduction and formula: equal up to the compiler's f32 contractions (measured: 0 on lavapipe)
        assert rel_err(got, chain) <= 1e-6


def test_matvec_glu_row_blocks(gpu):
    """Both weights in the same row blocks: one dispatch per block writes its rows only."""
    rng = np.random.default_rng(5)
    fmt, n = "q4f16", 328
    parts, dg, du = glu_weights(rng, fmt, n)
    x = rng.normal(0, 1, (1, K)).astype(np.float32)
    got = np.full((1, n), np.nan)
    for r0, r1 in [(0, 128), (128, 256), (256, n)]:
        block = [np.ascontiguousarray(a.reshape(n, -1)[r0:r1]) for a in parts]
        out = run_glu(gpu, "f32", fmt, "silu", x, block, n, r0, r1 - r0)
        assert np.all(np.isnan(np.delete(out, np.s_[r0:r1], axis=1))), "wrote outside its rows"
        got[:, r0:r1] = out[:, r0:r1]
    xd = x.astype(np.float64)
    assert rel_err(got, act_ref("silu", xd @ dg.T, xd @ du.T)) <= TOL["f32"]


# ---------------------------------------------------------------------------------------
# the C op (Wasm)


@pytest.fixture(scope="module")
def wk():
    require_module("wasmtime", "wasmtime")
    from test_wasm_kernels import Kernels

    return Kernels(compile_module(FORMATS, [], threads=False))


@pytest.mark.parametrize("act", GLU_ACTS)
@pytest.mark.parametrize("fmt", GLU_FORMATS)
def test_matvec_glu_c_op(wk, fmt, act):
    """Against numpy on the x the format's dot reads (int16 per group of 32 for q4 and q8,
    test_wasm_kernels.py), and bit for bit against the matmul and <act>_mul ops it replaces;
    three threads, each a share of the rows."""
    from test_wasm_kernels import INT16_X_TOL, x_as_kernel_sees
    from test_wasm_kernels import TOL as WASM_TOL

    rng = np.random.default_rng(100 + GLU_FORMATS.index(fmt) * 2 + GLU_ACTS.index(act))
    parts, dg, du = glu_weights(rng, fmt)
    p, fid = len(WEIGHT_FORMATS[fmt].parts), FORMATS.index(fmt)
    for seq in (1, 3):
        x = rng.normal(0, 1, (seq, K)).astype(np.float32)
        y = np.zeros((seq, N), np.float32)
        got = wk.call("matvec_glu", [fid, K, N, GLU_ACTS.index(act)], [seq, 0, N], [1, 1, 1], [x, y, *parts],
                      read=[1], poison=[1], threads=3)[1]
        xs = x_as_kernel_sees(fmt, x)
        assert rel_err(got, act_ref(act, xs @ dg.T, xs @ du.T)) <= WASM_TOL
        xd = x.astype(np.float64)
        assert rel_err(got, act_ref(act, xd @ dg.T, xd @ du.T)) <= INT16_X_TOL
        g, u = (wk.call("matmul", [fid, K, N], [seq, 0, N], [1, 1, 1], [x, y, *w], read=[1], threads=3)[1]
                for w in (parts[:p], parts[p:]))
        chain = wk.call(f"{act}_mul", [], [seq * N], [1, 1, 1], [g, u], read=[0])[0]
        np.testing.assert_array_equal(got, chain)


# ---------------------------------------------------------------------------------------
# where the plan fuses

SMALL = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
         "max_position_embeddings": 256, "tie_word_embeddings": True, "rope": {"type": "default", "theta": 10000.0}}


def plans(quant, architecture="llama", **kw):
    """(manifest, plan, the plan with every fusion but fuse_glu)."""
    from test_plan_gpu import check_plan, synthetic_manifest

    m = synthetic_manifest({**SMALL, **kw.pop("config", {})}, quant, architecture)
    fused = build_plan(m, **kw)[0]
    others = [f for f in plan_module.FUSIONS if f is not plan_module.fuse_glu]
    assert len(others) == len(plan_module.FUSIONS) - 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan_module, "FUSIONS", others)
        unfused = build_plan(m, **kw)[0]
    check_plan(fused)
    return m, fused, unfused


def glu_dispatches(plan, entry="decode"):
    return [d for d in plan["entries"][entry]["dispatches"] if plan["kernels"][d["kernel"]]["template"] == "matvec_glu"]


@pytest.mark.parametrize("quant", ["q4f16", "q3f16", "f16"])
def test_decode_fuses_gate_up_and_silu(quant):
    m, fused, unfused = plans(quant)
    fmt = {t["name"]: t["format"] for t in m["tensors"]}["model.layers.0.mlp.gate_proj.weight"]
    layers = SMALL["num_hidden_layers"]
    assert fused["entries"]["prefill"] == unfused["entries"]["prefill"]  # prefill's matmul stays
    assert fused["requirements"]["limits"]["maxStorageBuffersPerShaderStage"] <= MAX_STORAGE_BUFFERS
    dec, dec0 = fused["entries"]["decode"]["dispatches"], unfused["entries"]["decode"]["dispatches"]
    if fmt not in GLU_FORMATS:  # q3f16: 2 + 2 x 4 storage buffers would exceed the default limit
        assert dec == dec0
        return
    glu = glu_dispatches(fused)
    assert len(glu) == layers and len(dec) == len(dec0) - 2 * layers
    assert not any(fused["kernels"][d["kernel"]]["template"] == "silu_mul" for d in dec)
    d = glu[0]
    assert d["label"] == "layer 0 gate_proj + up_proj + silu_mul"
    assert fused["kernels"][d["kernel"]]["consts"]["ACT"] == GLU_ACTS.index("silu")
    names = [f"model.layers.0.mlp.{w}_proj.weight:{p}" for w in ("gate", "up") for p in WEIGHT_FORMATS[fmt].parts]
    assert d["bindings"] == [[1, "xn"], [2, "gate"], *([8 + i, b] for i, b in enumerate(names))]
    # what the three dispatches did: gate_proj(xn), up_proj(xn) into gate, up; silu_mul into gate
    i = [x["label"] for x in dec0].index("layer 0 gate_proj")
    assert [x["label"] for x in dec0[i:i + 3]] == ["layer 0 gate_proj", "layer 0 up_proj", "layer 0 silu_mul"]
    assert dec[i] == d and dec[i + 1]["label"] == "layer 0 down_proj"


def test_phi3_gate_up_views_fuse():
    """Phi-3's gate and up are row views of gate_up_proj: both bind byte ranges of its parts."""
    m, fused, _ = plans("q4f16", "phi3", config={"tie_word_embeddings": False})
    FF = SMALL["intermediate_size"]
    d = glu_dispatches(fused)[0]
    t = "model.layers.0.mlp.gate_up_proj.weight"
    parts = WEIGHT_FORMATS["q4f16"].parts
    assert [b for _, b in d["bindings"][2:]] == [f"{t}[0..{FF}]:{p}" for p in parts] + \
        [f"{t}[{FF}..{2 * FF}]:{p}" for p in parts]
    assert d["uniforms"] == ["seq_len", "0", str(FF)]
    q = fused["buffers"][f"{t}[{FF}..{2 * FF}]:qweight"]
    assert q["offset"] == q["bytes"]  # the up rows follow the gate rows


def test_gemma_fuses_gelu():
    _, fused, _ = plans("q4f16", "gemma2", config={"head_dim": 16})
    d = glu_dispatches(fused)
    assert len(d) == SMALL["num_hidden_layers"] and d[0]["label"].endswith("gelu_tanh_mul")
    assert fused["kernels"][d[0]["kernel"]]["consts"]["ACT"] == GLU_ACTS.index("gelu_tanh")


def test_weights_in_row_blocks_fuse_block_by_block():
    _, fused, unfused = plans("q4f16", config={"hidden_size": 128, "num_attention_heads": 8}, max_binding_size=8192,
                              prefill_chunk=8, context_window=64)
    glu = glu_dispatches(fused)
    gates = [d for d in unfused["entries"]["decode"]["dispatches"] if d["label"].startswith("layer 0 gate_proj")]
    assert len(gates) > 1 and len([d for d in glu if d["label"].startswith("layer 0 ")]) == len(gates)
    for g, d in zip(gates, glu):
        assert d["uniforms"][1:] == g["uniforms"][1:] and d["workgroups"][0] == g["workgroups"][0]
