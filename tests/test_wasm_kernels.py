"""Every Wasm kernel (packager/wasm/*.c) against small numpy implementations of its op.

The module is compiled by packager.wasm_build (PyPI ziglang) and run with PyPI wasmtime.
Sizes and tolerances follow tests/test_kernels.py (the WGSL kernels): seq_len 1, 7, 64,
300; past_len 0, 5 and near the context window; errors max|wasm - ref| / max|ref| <=
1e-5 (all Wasm arithmetic and storage is f32; the mat-vec dots of q4f16, q4f32 and q8f16
round x to int16 per group of 32, which the reference does too, and which is checked
against the exact product at 1e-4). Outputs are poisoned with NaN before
each call so that unwritten elements fail. Every op also runs as 3 "threads" (its three
shares called one after another), which must together write exactly the same result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import require_module
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
from packager.rope import rope_inv_freq
from packager.wasm_build import FORMATS, OPS, compile_module, f32_bits, heap_base

try:
    import wasmtime
except ImportError:  # every test fails (conftest.require) unless LLMPACK_ALLOW_MISSING names wasmtime
    wasmtime = None


@pytest.fixture(autouse=True, scope="module")  # module: before the module's other fixtures
def needs_wasmtime():
    require_module("wasmtime", "wasmtime")


TOL = 1e-5
ROPE_HD = 64
PAGE = 65536


class Kernels:
    """The module on wasmtime: call(op, consts, uniforms, wg, buffers) with numpy buffers."""

    def __init__(self, wasm: bytes, pages: int = 2048):
        self.store = wasmtime.Store(wasmtime.Engine())
        self.memory = wasmtime.Memory(self.store, wasmtime.MemoryType(wasmtime.Limits(pages, None)))
        inst = wasmtime.Instance(self.store, wasmtime.Module(self.store.engine, wasm), [self.memory])
        ex = inst.exports(self.store)
        self.op_call = ex["op_call"]
        stack_top = heap_base(wasm) + (4 << 20)  # a 4 MiB stack above the module's data
        stack_top -= stack_top % 16
        ex["__stack_pointer"].set_value(self.store, wasmtime.Val.i32(stack_top))
        self.base = stack_top
        self.limit = pages * PAGE

    def call(self, op: str, consts, uniforms, wg, buffers: list[np.ndarray], *, read=(), poison=(), threads=1):
        """Writes the buffers, runs every share of the op, returns the `read` buffers
        (by position in `buffers`) as arrays shaped and typed like the inputs."""
        ptr, ptrs = self.base, []
        for i, arr in enumerate(buffers):
            arr = np.ascontiguousarray(arr)
            raw = np.full(arr.shape, np.nan, arr.dtype).tobytes() if i in poison else arr.tobytes()
            self.memory.write(self.store, raw, ptr)
            ptrs.append(ptr)
            ptr += (len(raw) + 63) // 64 * 64 + 64
        args = np.array([*consts, *uniforms, *wg, *ptrs], np.uint32)
        assert ptr + args.nbytes < self.limit, "test buffers exceed the memory"
        self.memory.write(self.store, args.tobytes(), ptr)
        for tid in range(threads):
            self.op_call(self.store, OPS.index(op), ptr, tid, threads)
        out = {}
        for i in read:
            arr = np.asarray(buffers[i])
            raw = self.memory.read(self.store, ptrs[i], ptrs[i] + arr.nbytes)
            out[i] = np.frombuffer(bytes(raw), arr.dtype).reshape(arr.shape).copy()
        return out


@pytest.fixture(scope="module")
def wk():
    tables = [rope_inv_freq(ROPES[k], ROPE_HD) for k in ROPES]
    return Kernels(compile_module(FORMATS, tables, threads=False))


def rope_offset(kind: str) -> int:
    """Where the table of `kind` starts in rope_tables.h (the tables one after the other)."""
    return sum(len(rope_inv_freq(ROPES[k], ROPE_HD)) for k in list(ROPES)[:list(ROPES).index(kind)])


def row_block(parts, r0, r1):
    return [np.ascontiguousarray(a.reshape(a.shape[0], -1)[r0:r1]) for a in parts]


# ---------------------------------------------------------------------------------------
# matmul (decode mat-vec and prefill), every weight format

# Formats whose mat-vec dot takes x rounded to int16 per group of 32 (llmpack.h, "int16
# activations"), up to DOT_ROWS_MAX_SEQ tokens (matmul.c); the prefill GEMM takes x as it is.
INT16_X = ("q4f16", "q4f32", "q8f16")
DOT_ROWS_MAX_SEQ = 12
# max |wasm - x @ W.T| / max |x @ W.T| with x rounded to int16 (a step is 2^-16 of a
# group's largest |x|): measured 3e-5 ... 5e-5 for K = 256 ... 4224, 64 rows, normal W,
# normal and Student-t (2) x, in all three formats
INT16_X_TOL = 1e-4


def x_as_kernel_sees(fmt, x):
    """x as the dot of `fmt` reads it: per group of 32, d = max|x| / 32767 and
    x' = round_to_even(x * (32767 / max|x|)) * d in f32 (x itself for f32 dots)."""
    if fmt not in INT16_X or x.shape[0] > DOT_ROWS_MAX_SEQ:
        return x.astype(np.float64)
    g = x.reshape(x.shape[0], -1, 32).astype(np.float32)
    amax = np.max(np.abs(g), axis=-1, keepdims=True)
    inv = np.where(amax > 0, np.float32(32767) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(g * inv)
    assert np.max(np.abs(q)) <= 32767
    return (q.astype(np.float64) * (amax / np.float32(32767)).astype(np.float64)).reshape(x.shape)


def check_matmul(fmt, got, x, deq):
    """Against the exact dot of what the kernel reads (TOL), and, for int16 activations,
    against x itself (INT16_X_TOL)."""
    assert rel_err(got, x_as_kernel_sees(fmt, x) @ deq.T) <= TOL
    if fmt in INT16_X:
        assert rel_err(got, x.astype(np.float64) @ deq.T) <= INT16_X_TOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_matmul(wk, fmt):
    rng = np.random.default_rng(FORMATS.index(fmt))
    K, N = 256, 200
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = encode_weight(fmt, w)
    for seq in (*SEQ_LENS, 2, 3, 4, 5):
        x = rng.normal(0, 1, (seq, K)).astype(np.float32)
        if seq == 3:
            x[1, 32:64] = 0  # an all-zero group
            x[2] *= np.float32(1e-30)  # tiny values keep their relative precision
        for threads in (1, 3):
            out = wk.call("matmul", [FORMATS.index(fmt), K, N], [seq, 0, N], [1, 1, 1],
                          [x, np.zeros((seq, N), np.float32), *parts], read=[1], poison=[1], threads=threads)
            check_matmul(fmt, out[1], x, deq)
        if seq == 3:
            assert rel_err(out[1][2], x_as_kernel_sees(fmt, x)[2] @ deq.T) <= TOL


@pytest.mark.parametrize("fmt", INT16_X)
def test_matmul_token_counts(wk, fmt):
    """Batches of 1..16 tokens (speculative decoding's verify calls, short prefill tails):
    the int16 dots in passes of up to MAXT_ROWS = 8 tokens up to DOT_ROWS_MAX_SEQ, the
    GEMM above. Every row of an int16 batch is the single-token (decode) result bit for bit."""
    rng = np.random.default_rng(11)
    K, N = 192, 72
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = encode_weight(fmt, w)
    x = rng.normal(0, 1, (16, K)).astype(np.float32)
    x[5, 64:96] = 0  # an all-zero group
    one = [wk.call("matmul", [FORMATS.index(fmt), K, N], [1, 0, N], [1, 1, 1],
                   [x[t:t + 1], np.zeros((1, N), np.float32), *parts], read=[1], poison=[1])[1][0] for t in range(16)]
    for seq in range(1, 17):
        for threads in (1, 3):
            out = wk.call("matmul", [FORMATS.index(fmt), K, N], [seq, 0, N], [1, 1, 1],
                          [x[:seq], np.zeros((seq, N), np.float32), *parts], read=[1], poison=[1], threads=threads)
            check_matmul(fmt, out[1], x[:seq], deq)
            if seq <= DOT_ROWS_MAX_SEQ:
                assert np.array_equal(out[1], np.stack(one[:seq])), f"{seq} tokens: a row differs from decode's"


@pytest.mark.parametrize("fmt", ["q4f16", "q8f16", "q3f16"])
def test_matmul_row_blocks(wk, fmt):
    """A weight split into row blocks, one call per block, each writing only its columns."""
    rng = np.random.default_rng(7)
    K, N, seq = 128, 328, 7
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = encode_weight(fmt, w)
    x = rng.normal(0, 1, (seq, K)).astype(np.float32)
    got = np.full((seq, N), np.nan)
    for r0, r1 in [(0, 128), (128, 256), (256, N)]:
        out = wk.call("matmul", [FORMATS.index(fmt), K, N], [seq, r0, r1 - r0], [1, 1, 1],
                      [x, np.zeros((seq, N), np.float32), *row_block(parts, r0, r1)], read=[1], poison=[1],
                      threads=2)
        block = out[1]
        assert np.all(np.isnan(np.delete(block, np.s_[r0:r1], axis=1))), "wrote outside its rows"
        got[:, r0:r1] = block[:, r0:r1]
    check_matmul(fmt, got, x, deq)


@pytest.mark.parametrize("fmt", ["f16", "q4f32", "q8f16", "q3f16", "q2f16"])
def test_matmul_long_rows(wk, fmt):
    rng = np.random.default_rng(23)
    K, N = 4224, 40
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = encode_weight(fmt, w)
    for seq in (1, 7):
        x = rng.normal(0, 1, (seq, K)).astype(np.float32)
        out = wk.call("matmul", [FORMATS.index(fmt), K, N], [seq, 0, N], [1, 1, 1],
                      [x, np.zeros((seq, N), np.float32), *parts], read=[1], poison=[1])
        check_matmul(fmt, out[1], x, deq)


# ---------------------------------------------------------------------------------------
# embedding gather, every weight format, with a split table


@pytest.mark.parametrize("fmt", FORMATS)
def test_embedding(wk, fmt):
    rng = np.random.default_rng(3)
    V, H = 200, 128
    w = rng.normal(0, 1, (V, H)).astype(np.float32)
    parts, deq = encode_weight(fmt, w)
    scale = float(np.float32(math.sqrt(H)))  # Gemma's scaled embeddings; the split table below unscaled
    for seq in SEQ_LENS:
        tokens = rng.integers(0, V, seq).astype(np.uint32)
        out = wk.call("embedding", [FORMATS.index(fmt), H, f32_bits(scale)], [seq, 0, V], [1, seq, 1],
                      [tokens, np.zeros((seq, H), np.float32), *parts], read=[1], poison=[1], threads=3)
        assert rel_err(out[1], deq[tokens] * scale) <= TOL
    seq = 64
    tokens = rng.integers(0, V, seq).astype(np.uint32)
    got = np.full((seq, H), np.nan)
    for r0, r1 in [(0, 128), (128, V)]:
        out = wk.call("embedding", [FORMATS.index(fmt), H, f32_bits(1.0)], [seq, r0, r1 - r0], [1, seq, 1],
                      [tokens, np.zeros((seq, H), np.float32), *row_block(parts, r0, r1)], read=[1], poison=[1])
        mine = (tokens >= r0) & (tokens < r1)
        assert np.all(np.isnan(out[1][~mine]))
        got[mine] = out[1][mine]
    assert rel_err(got, deq[tokens]) <= TOL


# ---------------------------------------------------------------------------------------
# RMSNorm


def test_rmsnorm(wk):
    rng = np.random.default_rng(5)
    H, eps = 576, 1e-5
    w = (1 + 0.1 * rng.normal(size=H)).astype(np.float32)
    for seq in SEQ_LENS:
        x = rng.normal(0, 2, (seq, H)).astype(np.float32)
        ref = rmsnorm_ref(x.astype(np.float64), w, eps)
        for threads in (1, 3):
            out = wk.call("rmsnorm", [H, f32_bits(eps)], [0], [seq, 1, 1], [x, np.zeros((seq, H), np.float32), w],
                          read=[1], poison=[1], threads=threads)
            assert rel_err(out[1], ref) <= TOL
        out = wk.call("rmsnorm", [H, f32_bits(eps)], [seq - 1], [1, 1, 1], [x, np.zeros((1, H), np.float32), w],
                      read=[1], poison=[1])
        assert rel_err(out[1], ref[-1:]) <= TOL


def test_add_rmsnorm(wk):
    """The residual add fused with the next RMSNorm: x += y, then the norm of the new x, bit
    for bit `add` then `rmsnorm`; `_inplace` writes the norm over y; the last row only (rows
    in_row0 + t of x and y, row t of out); 3 threads = 1 thread."""
    rng = np.random.default_rng(55)
    H, eps = 576, 1e-6
    consts = [H, f32_bits(eps)]
    w = (1 + 0.1 * rng.normal(size=H)).astype(np.float32)
    for seq in SEQ_LENS:
        x = rng.normal(0, 2, (seq, H)).astype(np.float32)
        y = rng.normal(0, 3, (seq, H)).astype(np.float32)
        x_ref = x + y
        ref = rmsnorm_ref(x_ref.astype(np.float64), w, eps)
        xa = wk.call("add", [], [seq * H], [1, 1, 1], [x, y], read=[0])[0]
        plain = wk.call("rmsnorm", consts, [0], [seq, 1, 1], [xa, np.zeros((seq, H), np.float32), w], read=[1])[1]
        for threads in (1, 3):
            out = wk.call("add_rmsnorm", consts, [0], [seq, 1, 1], [x, y, np.zeros((seq, H), np.float32), w],
                          read=[0, 2], poison=[2], threads=threads)
            assert np.array_equal(out[0], x_ref) and np.array_equal(out[2], plain)
            assert rel_err(out[2], ref) <= TOL
            out = wk.call("add_rmsnorm_inplace", consts, [0], [seq, 1, 1], [x, y, w], read=[0, 1], threads=threads)
            assert np.array_equal(out[0], x_ref) and np.array_equal(out[1], plain)
        out = wk.call("add_rmsnorm", consts, [seq - 1], [1, 1, 1], [x, y, np.zeros((1, H), np.float32), w],
                      read=[0, 2], poison=[2])
        assert np.array_equal(out[0][:-1], x[:-1]) and np.array_equal(out[0][-1], x_ref[-1])
        assert np.array_equal(out[2], plain[-1:])


@pytest.mark.parametrize("head_dim", [16, 24, 128])
def test_rmsnorm_per_head(wk, head_dim):
    """Qwen3's q_norm / k_norm: one row per head (seq_len * heads rows of head_dim values)."""
    rng = np.random.default_rng(head_dim)
    heads, eps = 6, 1e-6
    w = (1 + 0.3 * rng.normal(size=head_dim)).astype(np.float32)
    for seq in SEQ_LENS:
        x = rng.normal(0, 3, (seq, heads, head_dim)).astype(np.float32)
        out = wk.call("rmsnorm", [head_dim, f32_bits(eps)], [0], [seq * heads, 1, 1], [x, np.zeros_like(x), w],
                      read=[1], poison=[1], threads=3)
        assert rel_err(out[1], rmsnorm_ref(x.astype(np.float64), w, eps)) <= TOL


def test_bias_add(wk):
    rng = np.random.default_rng(31)
    W = 200
    b = rng.normal(0, 2, W).astype(np.float32)
    for seq in SEQ_LENS:  # 300 x 200 values: over SMALL_WORK, so the threads share the rows
        x = rng.normal(0, 1, (seq, W)).astype(np.float32)
        for threads in (1, 3):
            out = wk.call("bias_add", [W], [seq * W], [1, 1, 1], [x, b], read=[0], threads=threads)
            assert rel_err(out[0], x.astype(np.float64) + b) <= TOL


# ---------------------------------------------------------------------------------------
# RoPE (default, linear, llama3 tables)


@pytest.mark.parametrize("kind", list(ROPES))
def test_rope(wk, kind):
    rng = np.random.default_rng(11)
    NH, NKV, HD, ctx = 4, 2, ROPE_HD, 4096
    inv = rope_inv_freq(ROPES[kind], HD)
    half, scale = len(inv), rope_scale(kind)
    for seq, past in [(1, 0), (1, 5), (1, ctx - 1), (7, 5), (64, 0), (300, 5), (300, ctx - 300)]:
        q = rng.normal(0, 1, (seq, NH, HD)).astype(np.float32)
        k = rng.normal(0, 1, (seq, NKV, HD)).astype(np.float32)
        pos = np.arange(past, past + seq)
        out = wk.call("rope", [NH, NKV, HD, half, f32_bits(scale), rope_offset(kind)], [seq, past], [1, 1, 1],
                      [q, k], read=[0, 1], threads=2)
        # the f32 rounding of the angle products is in the reference too; what is left
        # is the f32 rounding of cos, sin and the products
        assert rel_err(out[0], rope_ref(q.astype(np.float64), pos, inv, scale)) <= TOL
        assert rel_err(out[1], rope_ref(k.astype(np.float64), pos, inv, scale)) <= TOL


def test_rope_odd_half(wk):
    """A rotary half that is not a multiple of 4 (the SIMD width): the scalar tail (head_dim
    16 at partial rotary 0.75: 6 frequencies, the start of the longrope table)."""
    rng = np.random.default_rng(12)
    NH, NKV, HD, half, scale = 3, 1, 16, 6, 1.25
    inv = rope_inv_freq(ROPES["longrope"], ROPE_HD)[:half]
    q = rng.normal(0, 1, (5, NH, HD)).astype(np.float32)
    k = rng.normal(0, 1, (5, NKV, HD)).astype(np.float32)
    out = wk.call("rope", [NH, NKV, HD, half, f32_bits(scale), rope_offset("longrope")], [5, 3], [1, 1, 1],
                  [q, k], read=[0, 1])
    pos = np.arange(3, 8)
    assert rel_err(out[0], rope_ref(q.astype(np.float64), pos, inv, scale)) <= TOL
    assert rel_err(out[1], rope_ref(k.astype(np.float64), pos, inv, scale)) <= TOL
    assert np.array_equal(out[0][..., 2 * half:], q[..., 2 * half:])  # the unrotated part passes


# matvec + RoPE fused (decode q / k, k straight into a KV-cache row)


# (format, rope kind, bias): matvec_rope, and matvec_rope_bias (Qwen2's biased q / k)
MATVEC_ROPE_CASES = [("q4f16", kind, False) for kind in ROPES] \
    + [("f16", "default", False), ("q3f16", "default", False), ("q4f16", "default", True), ("q3f16", "llama3", True)]


@pytest.mark.parametrize("fmt,kind,biased", MATVEC_ROPE_CASES)
def test_matvec_rope(wk, fmt, kind, biased):
    """q (dst 0) and k into row past % rows of a ring cache (the other rows untouched), 1 and 3
    threads, against the projection (plus its bias: matvec_rope_bias) rotated in numpy, and bit
    for bit the matmul (bias_add) then rope ops."""
    rng = np.random.default_rng(FORMATS.index(fmt) * 10 + list(ROPES).index(kind) + 100 * biased)
    heads, HD, K, rows = 5, ROPE_HD, 256, 80
    N = heads * HD
    inv = rope_inv_freq(ROPES[kind], HD)
    half, scale = len(inv), rope_scale(kind)
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = encode_weight(fmt, w)
    bias = rng.normal(0, 2, N).astype(np.float32) if biased else None
    op, bias_buf = ("matvec_rope_bias", [bias]) if biased else ("matvec_rope", [])
    consts = [FORMATS.index(fmt), K, N, HD, half, f32_bits(scale), rope_offset(kind)]
    for past in (0, 5, 79, 80, 4095):
        x = rng.normal(0, 1, (1, K)).astype(np.float32)
        y = wk.call("matmul", [FORMATS.index(fmt), K, N], [1, 0, N], [1, 1, 1], [x, np.zeros((1, N), np.float32),
                                                                                  *parts], read=[1])[1]
        if biased:
            y = wk.call("bias_add", [N], [N], [1, 1, 1], [y, bias], read=[0])[0]
        unfused = wk.call("rope", [heads, 0, HD, half, f32_bits(scale), rope_offset(kind)], [1, past], [1, 1, 1],
                          [y, np.zeros(4, np.float32)], read=[0])[0].reshape(-1)
        kc = rng.normal(0, 1, (rows, N)).astype(np.float32)
        row = past % rows
        for threads in (1, 3):
            q = wk.call(op, consts, [past, 0], [1, 1, 1], [x, np.zeros(N, np.float32), *bias_buf, *parts],
                        read=[1], poison=[1], threads=threads)[1]
            np.testing.assert_array_equal(q, unfused)
            out = wk.call(op, consts, [past, row * N], [1, 1, 1], [x, kc, *bias_buf, *parts], read=[1],
                          threads=threads)[1]
            np.testing.assert_array_equal(out[row], q)
            np.testing.assert_array_equal(np.delete(out, row, axis=0), np.delete(kc, row, axis=0))
        assert rel_err(q, matvec_rope_ref(x_as_kernel_sees(fmt, x)[0], deq, HD, past, inv, scale, bias)) <= TOL


@pytest.mark.parametrize("fmt", ["q4f16", "q3f16", "f32"])
def test_matvec_bias(wk, fmt):
    """matvec_bias (Qwen2's decode v projection) into rows row0 .. row0 + rows of y (a KV-cache
    row; the rest untouched), 1 and 3 threads, 1 and 3 tokens: against numpy, and bit for bit the
    matmul then bias_add ops."""
    rng = np.random.default_rng(FORMATS.index(fmt) + 200)
    K, N, cache_rows, row = 256, 72, 6, 2
    w = rng.normal(0, 1, (N, K)).astype(np.float32)
    parts, deq = encode_weight(fmt, w)
    bias = rng.normal(0, 2, N).astype(np.float32)
    consts = [FORMATS.index(fmt), K, N]
    for seq in (1, 3):
        x = rng.normal(0, 1, (seq, K)).astype(np.float32)
        y = wk.call("matmul", consts, [seq, 0, N], [1, 1, 1], [x, np.zeros((seq, N), np.float32), *parts],
                    read=[1])[1]
        unfused = wk.call("bias_add", [N], [seq * N], [1, 1, 1], [y, bias], read=[0])[0]
        kc = rng.normal(0, 1, (cache_rows, N)).astype(np.float32)
        for threads in (1, 3):
            out = wk.call("matvec_bias", consts, [seq, row * N, N], [1, 1, 1], [x, kc, bias, *parts], read=[1],
                          threads=threads)[1].reshape(-1)
            got = out[row * N:(row + seq) * N].reshape(seq, N)
            np.testing.assert_array_equal(got, unfused)
            np.testing.assert_array_equal(np.delete(out, np.s_[row * N:(row + seq) * N]),
                                          np.delete(kc.reshape(-1), np.s_[row * N:(row + seq) * N]))
        if seq == 1:
            assert rel_err(got, x_as_kernel_sees(fmt, x) @ deq.T + bias) <= TOL


# ---------------------------------------------------------------------------------------
# KV-cache append, attention


def test_kv_append(wk):
    rng = np.random.default_rng(13)
    KVD, ctx = 2 * 64, 512
    # a full cache of ctx rows, then a ring buffer of 80 rows (rows = positions % 80) that wraps
    for rows, cases in [(ctx, [(1, 0), (7, 5), (64, 5), (300, ctx - 300), (1, ctx - 1)]),
                        (80, [(1, 79), (7, 75), (64, 200), (80, 123)])]:
        for seq, past in cases:
            k = rng.normal(size=(seq, KVD)).astype(np.float32)
            v = rng.normal(size=(seq, KVD)).astype(np.float32)
            kc = rng.normal(size=(rows, KVD)).astype(np.float32)
            vc = rng.normal(size=(rows, KVD)).astype(np.float32)
            n = seq * KVD
            out = wk.call("kv_append", [rows * KVD], [n, past % rows * KVD], [1, 1, 1], [k, v, kc, vc],
                          read=[2, 3], threads=3)
            for b, new, old in [(2, k, kc), (3, v, vc)]:
                want = old.copy()
                want[np.arange(past, past + seq) % rows] = new
                np.testing.assert_array_equal(out[b], want)


@pytest.mark.parametrize("heads", [(4, 2, 64), (3, 1, 128), (2, 2, 16)], ids=["gqa", "mqa-hd128", "mha-hd16"])
def test_attention(wk, heads):
    rng = np.random.default_rng(17)
    NH, NKV, HD = heads
    ctx = 512
    cases = [(1, 0), (1, 5), (1, ctx - 1), (7, 0), (7, 5), (64, 5), (300, 0), (300, ctx - 300)]
    if HD != 64:
        cases = [(1, 0), (1, ctx - 1), (7, 5), (64, 200)]
    for seq, past in cases:
        q = rng.normal(0, 1, (seq, NH, HD)).astype(np.float32)
        kc = rng.normal(0, 1, (ctx, NKV, HD)).astype(np.float32)
        vc = rng.normal(0, 1, (ctx, NKV, HD)).astype(np.float32)
        total = past + seq
        kc[total:] = np.nan  # never read past the causal end
        vc[total:] = np.nan
        ref = attention_ref(q.astype(np.float64), kc.astype(np.float64), vc.astype(np.float64), past, NKV)
        out = wk.call("attention", [NH, NKV, HD, f32_bits(HD ** -0.5), f32_bits(0.0), ctx, ctx], [seq, past],
                      [NH, seq, 1],
                      [q, kc, vc, np.zeros_like(q)], read=[3], poison=[3], threads=3)
        assert rel_err(out[3], ref) <= TOL, (seq, past)


def test_attention_decode_splits(wk):
    """Decode attention split over the cache (256 keys per split) and merged."""
    rng = np.random.default_rng(29)
    NH, NKV, HD, ctx, split = 6, 2, 64, 1024, 256
    max_splits = ctx // split
    consts = [NH, NKV, HD, f32_bits(HD ** -0.5), f32_bits(0.0), ctx, ctx, split, max_splits]
    for past in (0, 5, 255, 256, 700, ctx - 1):
        q = rng.normal(0, 1, (1, NH, HD)).astype(np.float32)
        kc = rng.normal(0, 1, (ctx, NKV, HD)).astype(np.float32)
        vc = rng.normal(0, 1, (ctx, NKV, HD)).astype(np.float32)
        kc[past + 1:] = np.nan
        vc[past + 1:] = np.nan
        ref = attention_ref(q.astype(np.float64), kc.astype(np.float64), vc.astype(np.float64), past, NKV)
        n_split = math.ceil((past + 1) / split)
        part = np.full(NH * max_splits * (HD + 2), np.nan, np.float32)
        out = wk.call("attention_decode", consts, [past], [NH, n_split, 1], [q, kc, vc, part], read=[3], threads=2)
        out = wk.call("attention_combine", [HD, ctx, split, max_splits], [past], [NH, 1, 1],
                      [out[3], np.zeros_like(q)], read=[1], poison=[1], threads=4)
        assert rel_err(out[1], ref) <= TOL, past


# ---------------------------------------------------------------------------------------
# elementwise: SiLU-gated MLP activation, residual add


def test_silu_mul_and_add(wk):
    rng = np.random.default_rng(19)
    for seq in SEQ_LENS:
        n = seq * 384 + 3  # odd length: the scalar tail too
        g = rng.normal(0, 3, n).astype(np.float32)
        g[:4] = [-100.0, 100.0, 0.0, -88.5]  # exp clamps
        u = rng.normal(0, 1, n).astype(np.float32)
        gd = g.astype(np.float64)
        ref = gd / (1 + np.exp(-gd)) * u
        out = wk.call("silu_mul", [], [n], [1, 1, 1], [g, u], read=[0], threads=3)
        assert rel_err(out[0], ref) <= TOL
        x = rng.normal(0, 3, n).astype(np.float32)
        out = wk.call("add", [], [n], [1, 1, 1], [x, u], read=[0], threads=3)
        assert rel_err(out[0], x.astype(np.float64) + u) <= TOL


# ---------------------------------------------------------------------------------------
# sliding-window attention over a ring-buffer cache, soft-capped scores; Gemma's elementwise ops


def test_attention_sliding_window_ring(wk):
    """Prefill chunks and decode steps of a sliding-window layer, positions past the ring's
    rows (wrapping), with soft-capping and a scale other than head_dim ** -0.5."""
    from test_kernels import RING

    rng = np.random.default_rng(31)
    NH, NKV, HD, split, max_splits = 4, 2, 64, 256, 4
    W, rows = RING["window"], RING["rows"]
    scale, cap = 0.3, 4.0
    common = [NH, NKV, HD, f32_bits(scale), f32_bits(cap), W, rows]
    for seq, past in [(7, 0), (128, 250), (128, 1000), (1, 5), (1, 299), (1, 300), (1, 2000)]:
        q = rng.normal(0, 1, (seq, NH, HD)).astype(np.float32)
        kc = rng.normal(0, 1, (rows, NKV, HD)).astype(np.float32)
        vc = rng.normal(0, 1, (rows, NKV, HD)).astype(np.float32)
        seen = np.zeros(rows, bool)
        seen[np.arange(max(0, past + 1 - W), past + seq) % rows] = True
        kc[~seen] = np.nan  # rows no query sees
        vc[~seen] = np.nan
        ref = attention_ref(q.astype(np.float64), np.nan_to_num(kc.astype(np.float64)),
                            np.nan_to_num(vc.astype(np.float64)), past, NKV, scale, cap, W)
        if seq > 1:
            out = wk.call("attention", common, [seq, past], [NH, seq, 1], [q, kc, vc, np.zeros_like(q)], read=[3],
                          poison=[3], threads=3)
            got = out[3]
        else:
            part = np.full(NH * max_splits * (HD + 2), np.nan, np.float32)
            n_split = math.ceil(min(past + 1, W) / split)
            out = wk.call("attention_decode", common + [split, max_splits], [past], [NH, n_split, 1],
                          [q, kc, vc, part], read=[3], threads=2)
            got = wk.call("attention_combine", [HD, W, split, max_splits], [past], [NH, 1, 1],
                          [out[3], np.zeros_like(q)], read=[1], poison=[1], threads=4)[1]
        assert rel_err(got, ref) <= TOL, (seq, past)


def test_gelu_tanh_mul_and_softcap(wk):
    rng = np.random.default_rng(37)
    for seq in SEQ_LENS:
        n = seq * 384 + 3  # odd length: the scalar tail too
        g = rng.normal(0, 3, n).astype(np.float32)
        g[:4] = [-30.0, 30.0, 0.0, -1e-3]  # tanh saturates both ways; no overflow
        g[-1] = -2.5  # the scalar tail, negative
        u = rng.normal(0, 1, n).astype(np.float32)
        out = wk.call("gelu_tanh_mul", [], [n], [1, 1, 1], [g, u], read=[0], threads=3)
        assert rel_err(out[0], gelu_tanh_ref(g.astype(np.float64)) * u) <= TOL
        x = rng.normal(0, 20, n).astype(np.float32)
        x[:3] = [1e4, -1e4, 0.0]
        x[-1] = -7.0
        out = wk.call("softcap", [f32_bits(30.0)], [n], [1, 1, 1], [x], read=[0], threads=3)
        assert rel_err(out[0], np.tanh(x.astype(np.float64) / 30) * 30) <= TOL


def test_modules_build_per_bundle_formats():
    """Only the formats asked for are compiled in; the threaded module exports the pool."""
    small = compile_module(["q4f32"], [], threads=False)
    assert len(small) < len(compile_module(FORMATS, [], threads=False))
    cfg = wasmtime.Config()
    cfg.wasm_threads = True
    engine = wasmtime.Engine(cfg)
    mt = wasmtime.Module(engine, compile_module(["q4f32"], [], threads=True))
    assert {"pool_init", "pool_run", "pool_worker", "__stack_pointer", "__heap_base"} <= {e.name for e in mt.exports}
    st = wasmtime.Module(engine, small)
    assert {"run", "op_call"} <= {e.name for e in st.exports}
