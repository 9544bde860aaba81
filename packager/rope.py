"""Rotary position embedding frequencies, as transformers computes them.

Shared by the reference executor and the plan (which uploads the table to the GPU), so
that both agree on every RoPE variant bit for bit."""

from __future__ import annotations

import math

import numpy as np

from .errors import PackError


def rope_inv_freq(rope: dict, head_dim: int) -> np.ndarray:
    """inv_freq [head_dim / 2] in float32, step by step as transformers computes it
    (default, linear and llama3 rope types)."""
    kind = rope.get("type", "default")
    f32 = np.float32
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(f32) / f32(head_dim)
    base = f32(rope["theta"])
    inv = f32(1.0) / (base.astype(np.float64) ** exponent.astype(np.float64)).astype(f32)
    if kind == "default":
        return inv
    if kind == "linear":
        return (inv / f32(rope["factor"])).astype(f32)
    if kind == "llama3":
        factor = rope["factor"]
        low, high = rope["low_freq_factor"], rope["high_freq_factor"]
        old = rope["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = f32(2 * math.pi) / inv
        inv_l = np.where(wavelen > f32(low_wavelen), inv / f32(factor), inv).astype(f32)
        smooth = ((f32(old) / wavelen - f32(low)) / f32(high - low)).astype(f32)
        smoothed = ((f32(1) - smooth) * inv_l / f32(factor) + smooth * inv_l).astype(f32)
        medium = ~(wavelen < f32(high_wavelen)) & ~(wavelen > f32(low_wavelen))
        return np.where(medium, smoothed, inv_l).astype(f32)
    raise PackError(f"rope type {kind!r} is not supported (default, linear, llama3 are)")


def rope_cos_sin(inv_freq: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [len(positions), head_dim] in the rotate_half layout (halves repeated)."""
    freqs = positions.astype(np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)
