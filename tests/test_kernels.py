"""Every WGSL kernel, f32 and f16 variants, against small numpy implementations of its op.

Runs on whatever WebGPU adapter wgpu-py finds (lavapipe on CI). Inputs are random;
outputs are poisoned with NaN before each run so that unwritten elements fail.
Errors are max|gpu - ref| / max|ref|: <= 1e-5 for f32, <= 2e-3 for f16 (whose inputs
are f16 values and whose outputs are stored as f16). Measured on lavapipe: f32 at most
7.0e-7 (attention; the tolerance is 14x that), f16 at most 4.7e-4 (matmul: about one f16
rounding, 2^-11 = 4.9e-4; the tolerance is 4 roundings). Inputs are seeded from the test's
parameters (`seed`), the same in every process.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from conftest import require, require_module
from gpu_executor import PipelineCache, has_f16, request_device, run_kernel
from kernel_refs import (
    ROPES,
    SEQ_LENS,
    attention_ref,
    encode_weight,
    gelu_tanh_ref,
    matvec_rope_ref,
    rel_err,
    rmsnorm_ref,
    rope_ref,
    rope_scale,
)
from packager.compile import render
from packager.errors import PackError
from packager.kernel_table import WEIGHT_FORMATS
from packager.rope import Rope, rope_cos_sin, rope_inv_freq

TOL = {"f32": 1e-5, "f16": 2e-3}
ACT = {"f32": np.float32, "f16": np.float16}
VARIANTS = ("f32", "f16")


@pytest.fixture(scope="module")
def gpu():
    dev = request_device(f16=has_f16())
    return dev, PipelineCache(dev)


def need_variant(dev, variant):
    if variant == "f16":  # fails without shader-f16, unless LLMPACK_ALLOW_MISSING names f16
        require("f16", "shader-f16" in dev.features, "wgpu-py's adapter lacks shader-f16")


def seed(*key) -> int:
    """A seed from test parameters, the same in every process (hash() of a str is not)."""
    return zlib.crc32("/".join(map(str, key)).encode())


def act_arr(a, variant):
    """Round an array to the variant's activation type (returned as that numpy type)."""
    return np.asarray(a, np.float32).astype(ACT[variant])


def as_act(raw: np.ndarray, variant, shape):
    return raw.view(ACT[variant]).reshape(shape).astype(np.float64)


def weight_parts(fmt, w):
    """Encode w with the format; returns (binding -> array, dequantized float64 weights)."""
    parts, deq = encode_weight(fmt, w)
    return {8 + i: a for i, a in enumerate(parts)}, deq


def row_block(parts: dict[int, np.ndarray], r0, r1):
    return {b: np.ascontiguousarray(a.reshape(a.shape[0], -1)[r0:r1]) for b, a in parts.items()}


BIND_MM = [(0, "uniform"), (1, "read-only-storage"), (2, "storage")]
BIND_NORM = BIND_MM + [(8, "read-only-storage")]


def wbinds(fmt):
    return [(8 + i, "read-only-storage") for i in range(len(WEIGHT_FORMATS[fmt].parts))]


def linear_grid(path, rows, seq):
    """The workgroups of a linear kernel (the plan's sizes): matvec a row block of 16 per token,
    matvec_batch a row block for every token, matmul 64-row x 32-token tiles."""
    return {"matvec": (math.ceil(rows / 16), seq, 1), "matvec_batch": (math.ceil(rows / 16), 1, 1),
            "matmul": (math.ceil(rows / 64), math.ceil(seq / 32), 1)}[path]


# ---------------------------------------------------------------------------------------
# matmul (decode mat-vec, verify's few tokens and tiled prefill), every weight format


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", ["matvec", "matvec_batch", "matmul"])
@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_matmul(gpu, fmt, path, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(seed(fmt, path, variant))
    K, N = 256, 200
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = weight_parts(fmt, w)
    code = render(path, variant, {"K": K, "N": N}, fmt)
    modules = None
    for seq in SEQ_LENS:
        x = act_arr(rng.normal(0, 1, (seq, K)), variant)
        ref = x.astype(np.float64) @ deq.T
        out = run_kernel(dev, cache, code, BIND_MM + wbinds(fmt),
                         {1: x, 2: np.zeros((seq, N), ACT[variant]), **parts},
                         [seq, 0, N], linear_grid(path, N, seq), read=[2], poison=[2])
        got = as_act(out[2], variant, (seq, N))
        assert rel_err(got, ref) <= TOL[variant], (seq, rel_err(got, ref))
        if modules is None:
            modules = cache.modules
        assert cache.modules == modules, "a new seq_len must not compile a new kernel"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("path", ["matvec", "matvec_batch", "matmul"])
def test_matmul_row_blocks_and_f32_out(gpu, path, variant):
    """A weight split into row blocks, one dispatch per block, each writing its rows."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(7)
    fmt, K, N, seq = "q4f16", 128, 328, 7
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = weight_parts(fmt, w)
    x = act_arr(rng.normal(0, 1, (seq, K)), variant)
    ref = x.astype(np.float64) @ deq.T
    code = render(path, variant, {"K": K, "N": N, "OUT": "f32"}, fmt)
    got = np.full((seq, N), np.nan)
    for r0, r1 in [(0, 128), (128, 256), (256, N)]:
        rows = r1 - r0
        out = run_kernel(dev, cache, code, BIND_MM + wbinds(fmt),
                         {1: x, 2: np.zeros((seq, N), np.float32), **row_block(parts, r0, r1)},
                         [seq, r0, rows], linear_grid(path, rows, seq), read=[2], poison=[2])
        block = out[2].view(np.float32).reshape(seq, N)
        assert np.all(np.isnan(np.delete(block, np.s_[r0:r1], axis=1))), "wrote outside its rows"
        got[:, r0:r1] = block[:, r0:r1]
    assert rel_err(got, ref) <= TOL["f32"] * (1 if variant == "f32" else 10)


@pytest.mark.parametrize("path", ["matvec", "matvec_batch"])
@pytest.mark.parametrize("fmt", ["f16", "q4f32", "q3f16", "q2f16"])
def test_matvec_long_rows(gpu, fmt, path):
    """K above the x chunk of the mat-vec kernels (2048 and 384 values), not a multiple of it;
    matvec_batch with a partial second pass of 8 tokens."""
    dev, cache = gpu
    rng = np.random.default_rng(23)
    K, N = 4160, 40
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = weight_parts(fmt, w)
    code = render(path, "f32", {"K": K, "N": N}, fmt)
    for seq in (1, 7, 11):
        x = rng.normal(0, 1, (seq, K)).astype(np.float32)
        out = run_kernel(dev, cache, code, BIND_MM + wbinds(fmt), {1: x, 2: np.zeros((seq, N), np.float32), **parts},
                         [seq, 0, N], linear_grid(path, N, seq), read=[2], poison=[2])
        assert rel_err(out[2].view(np.float32).reshape(seq, N), x.astype(np.float64) @ deq.T) <= TOL["f32"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", ["q4f16", "q3f16", "f32"])
def test_matvec_bias(gpu, fmt, variant):
    """matvec_bias (Qwen2's decode v projection): x W^T + bias into rows row0 .. row0 + rows of
    y (a KV-cache row; the rest untouched), against numpy; in f32 bit for bit matvec then bias_add."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(seed("matvec_bias", fmt, variant))
    K, N, cache_rows = 256, 72, 5
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = weight_parts(fmt, w)
    bias = rng.normal(0, 2, N).astype(np.float32)
    code = render("matvec_bias", variant, {"K": K, "N": N}, fmt)
    x = act_arr(rng.normal(0, 1, (1, K)), variant)
    kc = act_arr(rng.normal(0, 1, (cache_rows, N)), variant)
    row = 3
    out = run_kernel(dev, cache, code, BIND_MM + bias_binds(bias) + wbinds(fmt), {1: x, 2: kc, 3: bias, **parts},
                     [1, row * N, N], (math.ceil(N / 16), 1, 1), read=[2])[2]
    out = as_act(out, variant, (cache_rows, N))
    assert rel_err(out[row], x[0].astype(np.float64) @ deq.T + bias) <= TOL[variant]
    assert np.array_equal(np.delete(out, row, axis=0), np.delete(kc.astype(np.float64), row, axis=0))
    if variant == "f32":
        y = run_kernel(dev, cache, render("matvec", variant, {"K": K, "N": N}, fmt), BIND_MM + wbinds(fmt),
                       {1: x, 2: np.zeros(N, np.float32), **parts}, [1, 0, N], (math.ceil(N / 16), 1, 1), read=[2])[2]
        y = run_kernel(dev, cache, render("bias_add", variant, {"W": N}),
                       [(0, "uniform"), (1, "storage"), (8, "read-only-storage")], {1: y.view(np.float32), 8: bias},
                       [N], (1, 1, 1), read=[1])[1]
        assert np.array_equal(out[row], y.view(np.float32).astype(np.float64))


# ---------------------------------------------------------------------------------------
# embedding gather, every weight format, with a split table


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_embedding(gpu, fmt, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(3)
    V, H = 200, 128
    w = rng.normal(0, 1, (V, H)).astype(np.float32)
    parts, deq = weight_parts(fmt, w)
    scale = float(np.float32(math.sqrt(H)))  # Gemma's scaled embeddings; the split table below unscaled
    code = render("embedding", variant, {"K": H, "SCALE": scale}, fmt)
    binds = [(0, "uniform"), (1, "read-only-storage"), (2, "storage")] + wbinds(fmt)
    for seq in SEQ_LENS:
        tokens = rng.integers(0, V, seq).astype(np.uint32)
        ref = deq[tokens] * scale
        wg = (math.ceil(H / 8 / 64), seq, 1)
        out = run_kernel(dev, cache, code, binds, {1: tokens, 2: np.zeros((seq, H), np.float32), **parts},
                         [seq, 0, V], wg, read=[2], poison=[2])
        assert rel_err(out[2].view(np.float32).reshape(seq, H), ref) <= TOL["f32"]
    # split table: two row blocks, each writes only its own tokens
    code = render("embedding", variant, {"K": H, "SCALE": 1.0}, fmt)
    seq = 64
    tokens = rng.integers(0, V, seq).astype(np.uint32)
    got = np.full((seq, H), np.nan)
    for r0, r1 in [(0, 128), (128, V)]:
        out = run_kernel(dev, cache, code, binds,
                         {1: tokens, 2: np.zeros((seq, H), np.float32), **row_block(parts, r0, r1)},
                         [seq, r0, r1 - r0], (1, seq, 1), read=[2], poison=[2])
        block = out[2].view(np.float32).reshape(seq, H)
        mine = (tokens >= r0) & (tokens < r1)
        assert np.all(np.isnan(block[~mine]))
        got[mine] = block[mine]
    assert rel_err(got, deq[tokens]) <= TOL["f32"]


# ---------------------------------------------------------------------------------------
# RMSNorm


@pytest.mark.parametrize("variant", VARIANTS)
def test_rmsnorm(gpu, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(5)
    H, eps = 576, 1e-5
    w = (1 + 0.1 * rng.normal(size=H)).astype(np.float32)
    code = render("rmsnorm", variant, {"H": H, "EPS": eps, "IN": "f32"})
    for seq in SEQ_LENS:
        x = rng.normal(0, 2, (seq, H)).astype(np.float32)  # the residual stream is f32
        ref = rmsnorm_ref(x.astype(np.float64), w, eps)
        out = run_kernel(dev, cache, code, BIND_NORM, {1: x, 2: np.zeros((seq, H), ACT[variant]), 8: w},
                         [0], (seq, 1, 1), read=[2], poison=[2])
        assert rel_err(as_act(out[2], variant, (seq, H)), ref) <= TOL[variant]
        # last row only (the final norm before the logits)
        out = run_kernel(dev, cache, code, BIND_NORM, {1: x, 2: np.zeros((1, H), ACT[variant]), 8: w},
                         [seq - 1], (1, 1, 1), read=[2], poison=[2])
        assert rel_err(as_act(out[2], variant, (1, H)), ref[-1:]) <= TOL[variant]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("head_dim", [16, 24, 128])
def test_rmsnorm_per_head(gpu, head_dim, variant):
    """Qwen3's q_norm / k_norm: every head of an activation (IN = act) normed on its own."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(head_dim)
    heads, eps = 6, 1e-6
    w = (1 + 0.3 * rng.normal(size=head_dim)).astype(np.float32)
    code = render("rmsnorm", variant, {"H": head_dim, "EPS": eps, "IN": "act"})
    for seq in SEQ_LENS:
        x = act_arr(rng.normal(0, 3, (seq, heads, head_dim)), variant)
        ref = rmsnorm_ref(x.astype(np.float64), w, eps)
        out = run_kernel(dev, cache, code, BIND_NORM, {1: x, 2: np.zeros_like(x), 8: w}, [0], (seq * heads, 1, 1),
                         read=[2], poison=[2])
        assert rel_err(as_act(out[2], variant, x.shape), ref) <= TOL[variant]


BIND_ADD_NORM = [(0, "uniform"), (1, "storage"), (2, "read-only-storage"), (3, "storage"), (8, "read-only-storage")]
BIND_ADD_NORM_INPLACE = [(0, "uniform"), (1, "storage"), (2, "storage"), (8, "read-only-storage")]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("y_type", ["act", "f32"])
def test_add_rmsnorm(gpu, y_type, variant):
    """The residual add fused with the next RMSNorm: x += y exactly as `add` (f32), the norm of
    the new x as `rmsnorm` (bit for bit the two unfused kernels here); y an activation or f32
    (Gemma's `o`); `_inplace`: the norm overwrites y (Gemma's xn); the last row only (decode's
    final norm: rows in_row0 + t of x and y, row t of out)."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(seed("add_rmsnorm", y_type, variant))
    H, eps = 576, 1e-6
    w = (1 + 0.1 * rng.normal(size=H)).astype(np.float32)
    consts = {"H": H, "EPS": eps, "Y": y_type}
    fused, inplace = render("add_rmsnorm", variant, consts), render("add_rmsnorm_inplace", variant, consts)
    plain_norm = render("rmsnorm", variant, {"H": H, "EPS": eps, "IN": "f32"})
    plain_add = render("add", variant) if y_type == "act" else None
    for seq in SEQ_LENS:
        x = rng.normal(0, 2, (seq, H)).astype(np.float32)
        y = rng.normal(0, 3, (seq, H)).astype(np.float32)
        y = act_arr(y, variant) if y_type == "act" else y
        x_ref = x + y.astype(np.float32)  # the add in f32, as the kernel does it
        ref = rmsnorm_ref(x_ref.astype(np.float64), w, eps)
        out = run_kernel(dev, cache, fused, BIND_ADD_NORM, {1: x, 2: y, 3: np.zeros((seq, H), ACT[variant]), 8: w},
                         [0], (seq, 1, 1), read=[1, 3], poison=[3])
        assert np.array_equal(out[1].view(np.float32).reshape(seq, H), x_ref)
        normed = out[3].view(ACT[variant]).reshape(seq, H)
        assert rel_err(normed.astype(np.float64), ref) <= TOL[variant]
        if plain_add is not None:  # the unfused pair: add, then rmsnorm of the new x
            n = seq * H
            xa = run_kernel(dev, cache, plain_add, [(0, "uniform"), (1, "storage"), (2, "read-only-storage")],
                            {1: x, 2: y}, [n], (math.ceil(n / 256), 1, 1), read=[1])[1].view(np.float32)
            plain = run_kernel(dev, cache, plain_norm, BIND_NORM, {1: xa, 2: np.zeros((seq, H), ACT[variant]), 8: w},
                               [0], (seq, 1, 1), read=[2], poison=[2])[2].view(ACT[variant]).reshape(seq, H)
            assert np.array_equal(normed, plain)
        # y is also the output (one read_write binding)
        out = run_kernel(dev, cache, inplace, BIND_ADD_NORM_INPLACE, {1: x, 2: y, 8: w}, [0], (seq, 1, 1),
                         read=[1, 2])
        assert np.array_equal(out[1].view(np.float32).reshape(seq, H), x_ref)
        yo = out[2].view(y.dtype).reshape(seq, H)
        if y_type == "act":  # the same values as add_rmsnorm's out
            assert np.array_equal(yo, normed)
        assert rel_err(yo, ref) <= TOL[variant if y_type == "act" else "f32"]
        # the last row only: x's other rows untouched
        out = run_kernel(dev, cache, fused, BIND_ADD_NORM, {1: x, 2: y, 3: np.zeros((1, H), ACT[variant]), 8: w},
                         [seq - 1], (1, 1, 1), read=[1, 3], poison=[3])
        xo = out[1].view(np.float32).reshape(seq, H)
        assert np.array_equal(xo[:-1], x[:-1]) and np.array_equal(xo[-1], x_ref[-1])
        assert rel_err(as_act(out[3], variant, (1, H)), ref[-1:]) <= TOL[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_bias_add(gpu, variant):
    """A linear layer's bias, added in place to every token's row."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(31)
    W = 200
    b = rng.normal(0, 2, W).astype(np.float32)
    code = render("bias_add", variant, {"W": W})
    for seq in SEQ_LENS:
        x = act_arr(rng.normal(0, 1, (seq, W)), variant)
        n = seq * W
        out = run_kernel(dev, cache, code, [(0, "uniform"), (1, "storage"), (8, "read-only-storage")],
                         {1: x, 8: b}, [n], (math.ceil(n / 256), 1, 1), read=[1])
        assert rel_err(as_act(out[1], variant, x.shape), x.astype(np.float64) + b) <= TOL[variant]


# ---------------------------------------------------------------------------------------
# RoPE

def hf_rotary(rope, head_dim):
    """transformers' own rotary embedding module for the same configuration (Phi-3's for
    longrope / partial rotary, whose attention rotates part of each head; Llama's else)."""
    require_module("torch", "torch")
    from transformers import LlamaConfig, Phi3Config
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

    params = {"rope_type": rope["type"], "rope_theta": rope["theta"]}
    params.update({k: v for k, v in rope.items() if k not in ("type", "theta", "attention_factor")})
    if rope["type"] == "longrope" or "partial_rotary_factor" in rope:
        original = params.pop("original_max_position_embeddings", 4096)
        cfg = Phi3Config(hidden_size=head_dim * 4, num_attention_heads=4, max_position_embeddings=32 * original,
                         original_max_position_embeddings=original, rope_parameters=params)
        return cfg, Phi3RotaryEmbedding(config=cfg)
    cfg = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                      max_position_embeddings=4096, rope_parameters=params)
    return cfg, LlamaRotaryEmbedding(config=cfg)


HF_ROPES = {**ROPES, "partial": {"type": "default", "theta": 10000.0, "partial_rotary_factor": 0.5}}


@pytest.mark.parametrize("kind", list(HF_ROPES))
def test_rope_inv_freq_matches_transformers(kind):
    """inv_freq and the cos/sin factor, from our Rope and from transformers' config (the
    same Rope: Rope.from_hf), against transformers' rotary embedding module."""
    cfg, module = hf_rotary(HF_ROPES[kind], 64)
    rope = Rope.from_hf(cfg, partial_rotary="partial_rotary_factor" in HF_ROPES[kind])
    assert rope == Rope.from_json(HF_ROPES[kind])
    ours = rope_inv_freq(HF_ROPES[kind], 64)
    np.testing.assert_allclose(ours, module.inv_freq.numpy(), rtol=2e-7, atol=0)
    assert rope.attention_scaling == module.attention_scaling


def test_longrope_cos_sin_match_transformers_within_the_original_length():
    """transformers picks short_factor while the sequence fits original_max_position_embeddings
    (the bundle's rule: rope_cos_sin of the short table, scaled) and long_factor past it,
    which is why a longer context window is refused."""
    import torch

    kind = dict(ROPES["longrope"], original_max_position_embeddings=64)
    cfg, module = hf_rotary(kind, 64)
    rope = Rope.from_hf(cfg, partial_rotary=True)  # attention factor sqrt(1 + ln 32 / ln 64)
    x = torch.zeros(1, 1, 64)
    for n in (1, 17, 64):
        pos = np.arange(n)
        cos, sin = module(x, torch.arange(n)[None])
        ours = rope_cos_sin(rope_inv_freq(rope, 64), pos, rope.attention_scaling)
        np.testing.assert_allclose(ours[0], cos[0].numpy(), rtol=0, atol=2e-7)
        np.testing.assert_allclose(ours[1], sin[0].numpy(), rtol=0, atol=2e-7)
    cos, _ = module(x, torch.arange(65)[None])  # past the original length: long_factor
    assert np.max(np.abs(rope_cos_sin(rope_inv_freq(rope, 64), np.arange(65), rope.attention_scaling)[0]
                         - cos[0].numpy())) > 1e-2
    rope.check_context(64)
    with pytest.raises(PackError, match="--context-window 64 or less"):
        rope.check_context(65)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", list(ROPES))
def test_rope(gpu, kind, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(11)
    NH, NKV, HD, ctx = 4, 2, 64, 4096
    inv = rope_inv_freq(ROPES[kind], HD)
    half, scale = len(inv), rope_scale(kind)
    code = render("rope", variant, {"NH": NH, "NKV": NKV, "HD": HD, "HALF": half, "SCALE": scale,
                                    "INV_FREQ": [float(v) for v in inv]})
    binds = [(0, "uniform"), (1, "storage"), (2, "storage")]
    for seq, past in [(1, 0), (1, 5), (1, ctx - 1), (7, 5), (64, 0), (300, 5), (300, ctx - 300)]:
        q = act_arr(rng.normal(0, 1, (seq, NH, HD)), variant)
        k = act_arr(rng.normal(0, 1, (seq, NKV, HD)), variant)
        pos = np.arange(past, past + seq)
        n = seq * (NH + NKV) * half
        nwg = math.ceil(n / 64)
        out = run_kernel(dev, cache, code, binds, {1: q, 2: k}, [seq, past], (nwg, 1, 1), read=[1, 2])
        # rounding of the f32 angle products dominates at large positions: 2e-6 abs
        tol = max(TOL[variant], 3e-6)
        assert rel_err(as_act(out[1], variant, q.shape), rope_ref(q.astype(np.float64), pos, inv, scale)) <= tol
        assert rel_err(as_act(out[2], variant, k.shape), rope_ref(k.astype(np.float64), pos, inv, scale)) <= tol


# matvec + RoPE fused (decode q / k, k straight into a KV-cache row)

# (format, rope kind, bias): matvec_rope, and matvec_rope_bias (Qwen2's biased q / k; q3f16:
# its 4 weight parts, bias, x and y are 7 storage buffers)
MATVEC_ROPE_CASES = [("q4f16", kind, False) for kind in ROPES] + [(fmt, "default", False) for fmt in ("f16", "q8f16",
                                                                                                     "q3f16")] \
    + [("q4f16", "default", True), ("q3f16", "llama3", True), ("f32", "default", True)]


def bias_binds(bias):
    """The bias binding of the `_bias` templates (none without a bias)."""
    return [] if bias is None else [(3, "read-only-storage")]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fmt,kind,biased", MATVEC_ROPE_CASES)
def test_matvec_rope(gpu, fmt, kind, biased, variant):
    """q (dst 0) and k into row past % rows of a ring cache (the other rows untouched), against
    the projection (plus its bias: matvec_rope_bias) rotated in numpy; and the same values as the
    matvec (bias_add) and rope kernels it replaces (bit for bit in f32)."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(seed("matvec_rope", fmt, kind, variant, *(["bias"] if biased else [])))
    heads, HD, K, rows = 3, 64, 256, 80
    N = heads * HD
    inv = rope_inv_freq(ROPES[kind], HD)
    half, scale = len(inv), rope_scale(kind)
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = weight_parts(fmt, w)
    bias = rng.normal(0, 2, N).astype(np.float32) if biased else None
    extra = {} if bias is None else {3: bias}
    rope = {"HALF": half, "SCALE": scale, "INV_FREQ": [float(v) for v in inv]}
    code = render("matvec_rope_bias" if biased else "matvec_rope", variant, {"K": K, "N": N, "HD": HD, **rope}, fmt)
    unfused = (render("matvec", variant, {"K": K, "N": N}, fmt),
               render("rope", variant, {"NH": heads, "NKV": 0, "HD": HD, **rope}),
               render("bias_add", variant, {"W": N}))
    binds = BIND_MM + bias_binds(bias) + wbinds(fmt)
    for past in (0, 5, 79, 80, 4095):
        x = act_arr(rng.normal(0, 1, (1, K)), variant)
        kc = act_arr(rng.normal(0, 1, (rows, N)), variant)
        ref = matvec_rope_ref(x[0], deq, HD, past, inv, scale, bias)
        q = run_kernel(dev, cache, code, binds, {1: x, 2: np.zeros(N, ACT[variant]), **extra, **parts}, [past, 0],
                       (math.ceil(N / 16), 1, 1), read=[2], poison=[2])[2]
        got = as_act(q, variant, (N,))
        tol = max(TOL[variant], 3e-6)  # the f32 angle products at large positions (test_rope)
        assert rel_err(got, ref) <= tol, (past, rel_err(got, ref))
        row = past % rows
        out = run_kernel(dev, cache, code, binds, {1: x, 2: kc, **extra, **parts}, [past, row * N],
                         (math.ceil(N / 16), 1, 1), read=[2])[2]
        out = as_act(out, variant, (rows, N))
        assert np.array_equal(out[row], got)
        assert np.array_equal(np.delete(out, row, axis=0), np.delete(kc.astype(np.float64), row, axis=0))
        y = run_kernel(dev, cache, unfused[0], BIND_MM + wbinds(fmt), {1: x, 2: np.zeros((1, N), ACT[variant]),
                                                                        **parts},
                       [1, 0, N], (math.ceil(N / 16), 1, 1), read=[2])[2]
        if bias is not None:
            y = run_kernel(dev, cache, unfused[2], [(0, "uniform"), (1, "storage"), (8, "read-only-storage")],
                           {1: y.view(ACT[variant]), 8: bias}, [N], (math.ceil(N / 256), 1, 1), read=[1])[1]
        y = run_kernel(dev, cache, unfused[1], [(0, "uniform"), (1, "storage"), (2, "storage")],
                       {1: y.view(ACT[variant]), 2: np.zeros(4, ACT[variant])}, [1, past],
                       (math.ceil(heads * half / 64), 1, 1), read=[1])[1]
        if variant == "f32":
            assert np.array_equal(got, as_act(y, variant, (N,)))
        else:  # the products are rounded to f16 before the rotation in both (the unfused bias_add once more);
            # cos/sin may differ by an ulp
            assert rel_err(got, as_act(y, variant, (N,))) <= TOL[variant]


@pytest.mark.parametrize("variant", VARIANTS)
def test_matvec_rope_pairs_across_workgroups(gpu, variant):
    """head_dim 24 (heads not aligned to the 16 rows of a workgroup; 72 rows: the last
    workgroup half empty) and partial rotary (8 of 24 values rotate)."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(seed("matvec_rope_hd24", variant))
    fmt, heads, HD, K = "q4f16", 3, 24, 64
    N = heads * HD
    for half, biased in ((12, False), (4, False), (12, True), (4, True)):
        inv = rope_inv_freq({"type": "default", "theta": 10000.0}, 2 * half)
        w = rng.normal(0, 1, (N, K)).astype(np.float32)
        parts, deq = weight_parts(fmt, w)
        bias = rng.normal(0, 2, N).astype(np.float32) if biased else None
        code = render("matvec_rope_bias" if biased else "matvec_rope", variant,
                      {"K": K, "N": N, "HD": HD, "HALF": half, "SCALE": 1.0, "INV_FREQ": [float(v) for v in inv]}, fmt)
        x = act_arr(rng.normal(0, 1, (1, K)), variant)
        out = run_kernel(dev, cache, code, BIND_MM + bias_binds(bias) + wbinds(fmt),
                         {1: x, 2: np.zeros(N, ACT[variant]), **({} if bias is None else {3: bias}), **parts},
                         [37, 0], (math.ceil(N / 16), 1, 1), read=[2], poison=[2])[2]
        got = as_act(out, variant, (N,))
        ref = matvec_rope_ref(x[0], deq, HD, 37, inv, 1.0, bias)
        assert rel_err(got, ref) <= TOL[variant], (half, biased, rel_err(got, ref))


# ---------------------------------------------------------------------------------------
# KV-cache append, attention


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_append(gpu, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(13)
    KVD, ctx = 2 * 64, 512
    binds = [(0, "uniform"), (1, "read-only-storage"), (2, "read-only-storage"), (3, "storage"), (4, "storage")]
    # a full cache of ctx rows, then a ring buffer of 80 rows (rows = positions % 80) that wraps
    for rows, cases in [(ctx, [(1, 0), (7, 5), (64, 5), (300, ctx - 300), (1, ctx - 1)]),
                        (80, [(1, 79), (7, 75), (64, 200), (80, 123)])]:
        code = render("kv_append", variant, {"CACHE": rows * KVD})
        for seq, past in cases:
            k = act_arr(rng.normal(size=(seq, KVD)), variant)
            v = act_arr(rng.normal(size=(seq, KVD)), variant)
            kc = act_arr(rng.normal(size=(rows, KVD)), variant)
            vc = act_arr(rng.normal(size=(rows, KVD)), variant)
            n = seq * KVD
            out = run_kernel(dev, cache, code, binds, {1: k, 2: v, 3: kc, 4: vc}, [n, past % rows * KVD],
                             (math.ceil(n / 256), 1, 1), read=[3, 4])
            for b, new, old in [(3, k, kc), (4, v, vc)]:
                want = old.copy()
                want[np.arange(past, past + seq) % rows] = new
                np.testing.assert_array_equal(out[b].view(ACT[variant]).reshape(rows, KVD), want)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("heads", [(4, 2, 64), (3, 1, 128), (2, 2, 16)], ids=["gqa", "mqa-hd128", "mha-hd16"])
def test_attention(gpu, heads, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(17)
    NH, NKV, HD = heads
    ctx = 512
    code = render("attention", variant, {"NH": NH, "NKV": NKV, "HD": HD, "SCALE": HD ** -0.5, "SOFTCAP": 0.0,
                                         "WINDOW": ctx, "SLOTS": ctx})
    binds = [(0, "uniform"), (1, "read-only-storage"), (2, "read-only-storage"), (3, "read-only-storage"),
             (4, "storage")]
    cases = [(1, 0), (1, 5), (1, ctx - 1), (7, 0), (7, 5), (64, 5), (300, 0), (300, ctx - 300)]
    if heads[2] != 64:
        cases = [(1, 0), (1, ctx - 1), (7, 5), (64, 200)]
    modules = None
    for seq, past in cases:
        q = act_arr(rng.normal(0, 1, (seq, NH, HD)), variant)
        kc = act_arr(rng.normal(0, 1, (ctx, NKV, HD)), variant)
        vc = act_arr(rng.normal(0, 1, (ctx, NKV, HD)), variant)
        total = past + seq
        kc[total:] = np.nan  # never read past the causal end
        vc[total:] = np.nan
        ref = attention_ref(q.astype(np.float64), kc.astype(np.float64), vc.astype(np.float64), past, NKV)
        out = run_kernel(dev, cache, code, binds, {1: q, 2: kc, 3: vc, 4: np.zeros_like(q)}, [seq, past],
                         (NH, seq, 1), read=[4], poison=[4])
        assert rel_err(as_act(out[4], variant, q.shape), ref) <= TOL[variant], (seq, past)
        modules = modules or cache.modules
        assert cache.modules == modules


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_decode_splits(gpu, variant):
    """Decode attention split over the cache (256 keys per workgroup) and merged."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(29)
    NH, NKV, HD, ctx, split = 6, 2, 64, 1024, 256
    max_splits = ctx // split
    consts = {"NH": NH, "NKV": NKV, "HD": HD, "SCALE": HD ** -0.5, "SOFTCAP": 0.0, "WINDOW": ctx, "SLOTS": ctx,
              "SPLIT": split, "MAX_SPLITS": max_splits}
    code1 = render("attention_decode", variant, consts)
    code2 = render("attention_combine", variant, {"HD": HD, "WINDOW": ctx, "SPLIT": split, "MAX_SPLITS": max_splits})
    b1 = [(0, "uniform"), (1, "read-only-storage"), (2, "read-only-storage"), (3, "read-only-storage"),
          (4, "storage")]
    b2 = [(0, "uniform"), (1, "read-only-storage"), (2, "storage")]
    for past in (0, 5, 255, 256, 700, ctx - 1):
        q = act_arr(rng.normal(0, 1, (1, NH, HD)), variant)
        kc = act_arr(rng.normal(0, 1, (ctx, NKV, HD)), variant)
        vc = act_arr(rng.normal(0, 1, (ctx, NKV, HD)), variant)
        kc[past + 1:] = np.nan
        vc[past + 1:] = np.nan
        ref = attention_ref(q.astype(np.float64), kc.astype(np.float64), vc.astype(np.float64), past, NKV)
        n_split = math.ceil((past + 1) / split)
        part = np.full(NH * max_splits * (HD + 2), np.nan, np.float32)
        out = run_kernel(dev, cache, code1, b1, {1: q, 2: kc, 3: vc, 4: part}, [past], (NH, n_split, 1), read=[4])
        part = out[4].view(np.float32)
        out = run_kernel(dev, cache, code2, b2, {1: part, 2: np.zeros_like(q)}, [past], (NH, 1, 1), read=[2],
                         poison=[2])
        assert rel_err(as_act(out[2], variant, q.shape), ref) <= TOL[variant], past


# ---------------------------------------------------------------------------------------
# elementwise: SiLU-gated MLP activation, residual add


@pytest.mark.parametrize("variant", VARIANTS)
def test_silu_mul_and_add(gpu, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(19)
    binds = [(0, "uniform"), (1, "storage"), (2, "read-only-storage")]
    for seq in SEQ_LENS:
        n = seq * 384
        g = act_arr(rng.normal(0, 3, n), variant)
        u = act_arr(rng.normal(0, 1, n), variant)
        gd = g.astype(np.float64)
        ref = gd / (1 + np.exp(-gd)) * u
        wg = (min(math.ceil(n / 256), 65535), math.ceil(math.ceil(n / 256) / 65535), 1)
        out = run_kernel(dev, cache, render("silu_mul", variant), binds, {1: g, 2: u}, [n], wg, read=[1])
        assert rel_err(out[1].view(ACT[variant]), ref) <= TOL[variant]
        xr = rng.normal(0, 3, n).astype(np.float32)  # residual stream: f32 in both variants
        out = run_kernel(dev, cache, render("add", variant), binds, {1: xr, 2: u}, [n], wg, read=[1])
        assert rel_err(out[1].view(np.float32), xr.astype(np.float64) + u) <= TOL["f32"]


# ---------------------------------------------------------------------------------------
# sliding-window attention over a ring-buffer cache, soft-capped scores (Gemma)

RING = {"window": 300, "rows": 300 + 128}  # window + prefill chunk rows: position j in row j % rows


def ring_cache(rng, variant, rows, NKV, HD, past, seq, window):
    """A ring cache whose rows hold random keys/values; rows no query sees are NaN."""
    kc = act_arr(rng.normal(0, 1, (rows, NKV, HD)), variant)
    vc = act_arr(rng.normal(0, 1, (rows, NKV, HD)), variant)
    seen = np.zeros(rows, bool)
    seen[np.arange(max(0, past + 1 - window), past + seq) % rows] = True
    kc[~seen] = np.nan
    vc[~seen] = np.nan
    return kc, vc


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_sliding_window_ring(gpu, variant):
    """Prefill chunks and decode steps of a sliding-window layer, positions past the ring's
    rows (wrapping), with soft-capping and a scale other than head_dim ** -0.5."""
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(31)
    NH, NKV, HD, split = 4, 2, 64, 256
    W, rows = RING["window"], RING["rows"]
    scale, cap = 0.3, 4.0
    common = {"NH": NH, "NKV": NKV, "HD": HD, "SCALE": scale, "SOFTCAP": cap, "WINDOW": W, "SLOTS": rows}
    code = render("attention", variant, common)
    max_splits = 4
    code1 = render("attention_decode", variant, {**common, "SPLIT": split, "MAX_SPLITS": max_splits})
    code2 = render("attention_combine", variant, {"HD": HD, "WINDOW": W, "SPLIT": split, "MAX_SPLITS": max_splits})
    binds = [(0, "uniform"), (1, "read-only-storage"), (2, "read-only-storage"), (3, "read-only-storage"),
             (4, "storage")]
    for seq, past in [(7, 0), (128, 250), (128, 1000), (1, 5), (1, 299), (1, 300), (1, 2000)]:
        q = act_arr(rng.normal(0, 1, (seq, NH, HD)), variant)
        kc, vc = ring_cache(rng, variant, rows, NKV, HD, past, seq, W)
        ref = attention_ref(q.astype(np.float64), np.nan_to_num(kc.astype(np.float64)),
                            np.nan_to_num(vc.astype(np.float64)), past, NKV, scale, cap, W)
        if seq > 1:
            out = run_kernel(dev, cache, code, binds, {1: q, 2: kc, 3: vc, 4: np.zeros_like(q)}, [seq, past],
                             (NH, seq, 1), read=[4], poison=[4])
            got = as_act(out[4], variant, q.shape)
        else:
            part = np.full(NH * max_splits * (HD + 2), np.nan, np.float32)
            n_split = math.ceil(min(past + 1, W) / split)
            out = run_kernel(dev, cache, code1, binds, {1: q, 2: kc, 3: vc, 4: part}, [past], (NH, n_split, 1),
                             read=[4])
            out = run_kernel(dev, cache, code2, [(0, "uniform"), (1, "read-only-storage"), (2, "storage")],
                             {1: out[4].view(np.float32), 2: np.zeros_like(q)}, [past], (NH, 1, 1), read=[2],
                             poison=[2])
            got = as_act(out[2], variant, q.shape)
        assert rel_err(got, ref) <= TOL[variant], (seq, past)


# ---------------------------------------------------------------------------------------
# Gemma's elementwise ops: GELU(tanh)-gated MLP activation, final-logit soft-capping


@pytest.mark.parametrize("variant", VARIANTS)
def test_gelu_tanh_mul_and_softcap(gpu, variant):
    dev, cache = gpu
    need_variant(dev, variant)
    rng = np.random.default_rng(37)
    binds = [(0, "uniform"), (1, "storage"), (2, "read-only-storage")]
    for seq in SEQ_LENS:
        n = seq * 384
        g = act_arr(rng.normal(0, 3, n), variant)
        g[:4] = [-30.0, 30.0, 0.0, -1e-3]  # tanh saturates both ways; no overflow
        u = act_arr(rng.normal(0, 1, n), variant)
        ref = gelu_tanh_ref(g.astype(np.float64)) * u
        wg = (min(math.ceil(n / 256), 65535), math.ceil(math.ceil(n / 256) / 65535), 1)
        out = run_kernel(dev, cache, render("gelu_tanh_mul", variant), binds, {1: g, 2: u}, [n], wg, read=[1])
        assert rel_err(out[1].view(ACT[variant]), ref) <= TOL[variant]
        x = rng.normal(0, 20, n).astype(np.float32)  # logits: f32 in both variants
        x[:3] = [1e4, -1e4, 0.0]
        out = run_kernel(dev, cache, render("softcap", variant, {"CAP": 30.0}), binds[:2], {1: x}, [n], wg,
                         read=[1])
        assert rel_err(out[1].view(np.float32), np.tanh(x.astype(np.float64) / 30) * 30) <= TOL["f32"]


def cpu_argmax(x: np.ndarray) -> int:
    """The CPU sampler's argmax (runtime_js/src/sampler.ts): the first strictly larger value
    wins, so ties go to the lowest id and NaN is never chosen (unless at id 0)."""
    best, top = 0, x[0]
    for i in range(1, len(x)):
        if x[i] > top:
            best, top = i, x[i]
    return best


def test_argmax(gpu):
    """Greedy next token on the device, against numpy and the CPU sampler's rule: ties to the
    lowest id, -inf, NaN, and a 262144-token vocabulary (Gemma 3's)."""
    dev, cache = gpu
    binds = [(0, "uniform"), (1, "read-only-storage"), (2, "storage")]
    rng = np.random.default_rng(41)
    code = render("argmax", "f32")
    cases = []
    x = rng.normal(0, 5, 262144).astype(np.float32)
    x[[7, 200001, 262143]] = x.max() + 1.0  # a three-way tie far apart: the lowest id wins
    cases.append(x)
    x = rng.normal(0, 5, 49152).astype(np.float32)
    x[0], x[5], x[49151] = np.nan, np.nan, 100.0  # NaN at id 0 is kept, as the CPU sampler does
    cases.append(x)
    x = rng.normal(0, 5, 49152).astype(np.float32)
    x[3::7] = np.nan  # NaN never wins
    cases.append(x)
    cases.append(np.full(1000, -np.inf, np.float32))  # all masked: id 0
    x = np.full(300, -np.inf, np.float32)
    x[299] = -1e30  # the only finite value, at the end (a row block's tail)
    cases.append(x)
    cases.append(np.array([2.0, 2.0, 2.0], np.float32))
    for x in cases:
        out = run_kernel(dev, cache, code, binds, {1: x, 2: np.zeros(2, np.uint32)}, [len(x)], (1, 1, 1),
                         read=[2], poison=[2]).get(2).view(np.uint32)
        want = cpu_argmax(x)
        if not np.isnan(x[0]):
            finite = np.where(np.isnan(x), -np.inf, x)
            assert want == int(np.argmax(finite))  # the rule itself, against numpy
        assert int(out[0]) == want
        assert out[1:2].view(np.float32)[0] == x[want] or np.isnan(x[want])



def test_argmax_rows(gpu):
    """The "verify_argmax" entry's dispatch of the argmax kernel: one workgroup per row of a
    rows x n buffer, row r's [id, f32 bits] at out[2 r]; each row against the CPU sampler's rule
    (ties, NaN, an all -inf row), and fewer rows dispatched than the buffer holds (the rest
    untouched)."""
    dev, cache = gpu
    binds = [(0, "uniform"), (1, "read-only-storage"), (2, "storage")]
    rng = np.random.default_rng(43)
    n, max_rows, rows = 4099, 8, 6
    x = rng.normal(0, 5, (max_rows, n)).astype(np.float32)
    x[0, [9, 3000]] = x[0].max() + 2.0  # a tie: the lowest id
    x[1, 0], x[1, 17] = np.nan, 1e30  # NaN at the row's id 0 is kept, as the CPU sampler does
    x[2, 1::3] = np.nan  # NaN never wins
    x[2, 4000] = 50.0
    x[3] = -np.inf  # all masked: id 0
    x[4, :] = x[4].min() - 1
    x[4, n - 1] = 1e3  # the row's last value (the next row's first is not it)
    x[5, 0] = 1e4  # row 5's id 0
    x[6, 0] = 1e9  # rows past `rows` are not scanned
    sentinel = 0xDEADBEEF
    out = run_kernel(dev, cache, render("argmax", "f32"), binds,
                     {1: x.reshape(-1), 2: np.full(2 * max_rows, sentinel, np.uint32)}, [n], (1, rows, 1),
                     read=[2])[2].view(np.uint32)
    for r in range(rows):
        want = cpu_argmax(x[r])
        assert int(out[2 * r]) == want, r
        assert out[2 * r + 1: 2 * r + 2].view(np.float32)[0] == x[r, want] or np.isnan(x[r, want])
    assert cpu_argmax(x[4]) == n - 1 and cpu_argmax(x[3]) == 0
    assert (out[2 * rows:] == sentinel).all()


def topk_ref(x: np.ndarray, k: int, inv_t: float) -> tuple[list[int], float, int]:
    """The K largest of the logits, best first (larger value, then lower id; NaN and -inf never
    listed), the softmax denominator sum(exp((x - max) * inv_t)) over the listed ones (f64), and
    their count: what the "topk" entry writes, and the order of the CPU sampler's top-k."""
    ids = np.nonzero(~np.isnan(x) & (x > -np.inf))[0]
    if not len(ids):
        return [], 0.0, 0
    vals = x[ids].astype(np.float64)
    order = np.lexsort((ids, -vals))  # by value descending, then id
    top = ids[order[:k]]
    z = float(np.exp((vals - vals.max()) * np.float64(np.float32(inv_t))).sum())
    return [int(i) for i in top], z, len(ids)


def run_topk(dev, cache, x: np.ndarray, k: int, inv_t: float) -> np.ndarray:
    """The two kernels of the "topk" entry, as the plan dispatches them; the merged words."""
    from packager.plan import topk_groups

    per_thread, groups = topk_groups(len(x))
    binds = [(0, "uniform"), (1, "read-only-storage"), (2, "read-only-storage"), (3, "storage")]
    it = np.array([inv_t], np.float32)
    part = run_kernel(dev, cache, render("topk_partial", "f32", {"K": k, "E": per_thread}), binds,
                      {1: x, 2: it, 3: np.zeros(groups * (2 * k + 4), np.uint32)}, [len(x)], (groups, 1, 1),
                      read=[3], poison=[3])[3].view(np.uint32)
    return run_kernel(dev, cache, render("topk_merge", "f32", {"K": k}), binds,
                      {1: part, 2: it, 3: np.zeros(2 * k + 2, np.uint32)}, [groups], (1, 1, 1),
                      read=[3], poison=[3])[3].view(np.uint32)


def test_topk(gpu):
    """Top-K candidates on the device against numpy: ties to the lowest id (across groups too),
    NaN and -inf never listed, -0 equal to +0, fewer finite logits than K, a 262144-token
    vocabulary (Gemma 3's: 128 groups), and the softmax denominator within 1e-5 of numpy's f64
    sum (measured on lavapipe: 2e-7; the runtime allows 2^-10)."""
    from packager.plan import topk_groups

    # at most 256 groups (topk_merge's threads): more logits per thread past 2^19 logits
    assert [topk_groups(v) for v in (100, 49152, 262144, 2**20, 2**21 + 1)] == [
        (8, 1), (8, 24), (8, 128), (16, 256), (33, 249)]
    dev, cache = gpu
    rng = np.random.default_rng(43)
    cases = []
    x = rng.normal(0, 4, 262144).astype(np.float32)
    x[[9, 70001, 262143]] = x.max() + 1.0  # a tie at the top, in three groups
    x[[5, 3000, 99999, 200000]] = x.max()  # ...and below it
    x[rng.integers(0, len(x), 500)] = np.nan
    x[rng.integers(0, len(x), 500)] = -np.inf
    cases.append((x, 64, 1.0))
    x = rng.normal(0, 2, 49152).astype(np.float32)
    x[::3] = np.round(x[::3])  # many ties
    cases.append((x, 64, 1 / 0.7))
    x = np.full(5000, -np.inf, np.float32)
    x[[4999, 17, 2500]] = [3.0, -1e30, -0.0]
    x[[18, 19]] = [0.0, np.nan]
    cases.append((x, 64, 2.0))  # 4 finite logits: 60 empty slots
    cases.append((np.full(3000, np.nan, np.float32), 16, 1.0))  # nothing listed
    x = (rng.normal(0, 1, 100) * 50).astype(np.float32)
    cases.append((x, 8, 1 / 0.05))  # a small vocabulary in one group, low temperature
    for x, k, inv_t in cases:
        out = run_topk(dev, cache, x, k, inv_t)
        ids, z, count = topk_ref(x, k, inv_t)
        got = [int(i) for i in out[0:2 * k:2]]
        assert got == ids + [0xFFFFFFFF] * (k - len(ids))
        bits = out[1:2 * k:2]
        assert np.array_equal(bits[:len(ids)], x[ids].view(np.uint32))  # the logits' own bits
        assert np.all(bits[len(ids):] == np.float32(-np.inf).view(np.uint32))
        assert int(out[2 * k + 1]) == count
        if count:
            assert abs(float(out[2 * k:2 * k + 1].view(np.float32)[0]) - z) <= 1e-5 * z
