"""Rotary position embedding: its parameters, and its frequencies as transformers computes
them.

Shared by the reference executor and the plan (which bakes the table into the kernels), so
that both agree on every RoPE variant bit for bit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import PackError

ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class Rope:
    type: str = "default"
    theta: float = 10000.0
    factor: float | None = None  # linear, llama3
    low_freq_factor: float | None = None  # llama3
    high_freq_factor: float | None = None  # llama3
    original_max_position_embeddings: int | None = None  # llama3

    def to_json(self) -> dict:
        """{"type", "theta", and the parameters the type has}: the manifest's form."""
        out = {"type": self.type, "theta": self.theta}
        for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> Rope:
        return cls(**dict(data))

    @classmethod
    def from_hf(cls, config) -> Rope:
        """From a transformers config object (rope_parameters, or rope_scaling and
        rope_theta before transformers 5). Raises PackError for other rope types."""
        params = dict(getattr(config, "rope_parameters", None) or {})
        if not params:  # transformers < 5
            params = dict(getattr(config, "rope_scaling", None) or {})
            params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
        kind = params.get("rope_type") or params.get("type") or "default"
        if not isinstance(kind, str) or kind not in ROPE_TYPES:
            raise PackError(f"rope type {str(kind)[:40]!r} is not supported; supported: {', '.join(ROPE_TYPES)}")

        def number(key: str, default: float | None = None) -> float:
            v = params.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise PackError(f"config.json: {key} must be a positive number, not {str(v)[:40]!r} "
                                f"(rope type {kind}); fix the config")
            return float(v)

        theta = number("rope_theta", 10000.0)
        if kind == "linear":
            return cls(kind, theta, factor=number("factor"))
        if kind == "llama3":
            return cls(kind, theta, factor=number("factor"), low_freq_factor=number("low_freq_factor"),
                       high_freq_factor=number("high_freq_factor"),
                       original_max_position_embeddings=int(number("original_max_position_embeddings")))
        return cls(kind, theta)


def rope_inv_freq(rope: Rope | Mapping, head_dim: int) -> np.ndarray:
    """inv_freq [head_dim / 2] in float32, step by step as transformers computes it
    (default, linear and llama3 rope types). `rope`: a Rope or its JSON form."""
    if not isinstance(rope, Rope):
        rope = Rope.from_json(rope)
    kind = rope.type
    f32 = np.float32
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(f32) / f32(head_dim)
    base = f32(rope.theta)
    inv = f32(1.0) / (base.astype(np.float64) ** exponent.astype(np.float64)).astype(f32)
    if kind == "default":
        return inv
    if kind == "linear":
        return (inv / f32(rope.factor)).astype(f32)
    if kind == "llama3":
        factor = rope.factor
        low, high = rope.low_freq_factor, rope.high_freq_factor
        old = rope.original_max_position_embeddings
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
