"""Numpy references and helpers shared by the WGSL kernel tests (test_kernels.py) and the
Wasm kernel tests (test_wasm_kernels.py): the same sizes, the same oracles."""

from __future__ import annotations

import math

import numpy as np

from packager.kernel_table import WEIGHT_FORMATS
from quantization.formats import FORMATS

SEQ_LENS = (1, 7, 64, 300)
ROPES = {
    "default": {"type": "default", "theta": 10000.0},
    "linear": {"type": "linear", "theta": 10000.0, "factor": 4.0},
    "llama3": {"type": "llama3", "theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    # Phi-4-mini's kind: LongRoPE over 3/4 of each head, cos and sin scaled by the attention
    # factor of max_position_embeddings / original = 32 (head_dim 64: 24 frequencies)
    "longrope": {"type": "longrope", "theta": 10000.0, "original_max_position_embeddings": 4096,
                 "partial_rotary_factor": 0.75, "short_factor": [1.0 + 0.05 * i for i in range(24)],
                 "long_factor": [1.0 + 0.4 * i for i in range(24)],
                 "attention_factor": math.sqrt(1 + math.log(32) / math.log(4096))},
}


def rel_err(got, ref):
    """max |got - ref| / max |ref|; fails on any non-finite (unwritten, NaN-poisoned) element."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got)), f"{np.sum(~np.isfinite(got))} unwritten / non-finite elements"
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))


def encode_weight(fmt, w):
    """w in the format: (its parts in kernel binding order, the dequantized float64 weights)."""
    f = FORMATS[fmt]
    parts = f.encode(w)
    deq = f.decode(parts, w.shape).astype(np.float64)
    return [np.ascontiguousarray(parts[p]) for p in WEIGHT_FORMATS[fmt].parts], deq


def rmsnorm_ref(x, w, eps):
    """RMSNorm of every run of len(w) values along the last axis (float64)."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_ref(x, pos, inv_freq, scale=1.0):
    """x [seq, heads, hd] float64; HF rotate_half convention over the first 2 len(inv_freq)
    values of each head (the rest pass); angle = f32 product; cos and sin times `scale`."""
    half = len(inv_freq)
    ang = (pos.astype(np.float32)[:, None] * inv_freq[None, :]).astype(np.float64)
    c, s = scale * np.cos(ang)[:, None, :], scale * np.sin(ang)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:2 * half]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s, x[..., 2 * half:]], axis=-1)


def matvec_rope_ref(x, deq, hd, pos, inv_freq, scale=1.0, bias=None):
    """One token's projection x [K] @ deq.T (+ bias [N]), its heads of hd values rotated at
    position pos (rope_ref): the fused decode q / k projection, flat [N] (float64)."""
    y = x.astype(np.float64) @ deq.T
    y = (y if bias is None else y + bias).reshape(1, -1, hd)
    return rope_ref(y, np.array([pos]), inv_freq, scale).reshape(-1)


def rope_scale(kind: str) -> float:
    return ROPES[kind].get("attention_factor", 1.0)


def attention_ref(q, kc, vc, past, nkv, scale=None, cap=0.0, window=0):
    """Causal grouped-query attention of q [seq, heads, hd] over the cache: query t (position
    past + t) sees positions max(0, past + t + 1 - window) .. past + t (all if window is 0),
    position j in cache row j % rows (a ring buffer when the cache is shorter); scores times
    `scale` (default hd ** -0.5), soft-capped as tanh(s / cap) * cap when cap > 0."""
    seq, nh, hd = q.shape
    group = nh // nkv
    rows = kc.shape[0]
    scale = 1 / math.sqrt(hd) if scale is None else scale
    out = np.zeros_like(q)
    for t in range(seq):
        end = past + t + 1
        pos = np.arange(max(0, end - window) if window else 0, end) % rows
        for h in range(nh):
            s = kc[pos, h // group] @ q[t, h] * scale
            if cap:
                s = np.tanh(s / cap) * cap
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ vc[pos, h // group]
    return out


def gelu_tanh_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
