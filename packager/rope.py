"""Rotary position embedding frequencies, as transformers computes them.

Shared by the reference executor and the plan (which uploads the table to the GPU), so
that both agree on every RoPE variant bit for bit."""

from __future__ import annotations

import math

import numpy as np


def rope_inv_freq(rope: dict, head_dim: int) -> np.ndarray:
    """inv_freq[head_dim/2] (float32) for a normalized rope dict (see docs/bundle.md)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
    inv = (1.0 / (rope["theta"] ** exponents)).astype(np.float32)
    kind = rope["type"]
    if kind == "linear":
        return (inv / rope["factor"]).astype(np.float32)
    if kind == "llama3":
        factor, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old_ctx = rope["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_ctx / lo, old_ctx / hi
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old_ctx / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def rope_cos_sin(inv_freq: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [len(positions), head_dim] in the rotate_half layout (halves repeated)."""
    freqs = positions.astype(np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)
