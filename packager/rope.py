"""Rotary position embedding: its parameters, and its frequencies as transformers computes
them.

Shared by the reference executor and the plan (which bakes the table into the kernels), so
that both agree on every RoPE variant bit for bit. A Rope says three things a kernel needs:

- its inverse frequencies (`rope_inv_freq`): default, linear, llama3 or longrope, over the
  first `rotary_dim(head_dim)` dimensions of a head (partial rotary: Phi-4-mini rotates 96
  of 128; the rest pass through unrotated);
- the factor transformers multiplies cos and sin by (`attention_scaling`: longrope's
  attention factor; 1 for the others);
- the contexts it is exact for (`check_context`).

LongRoPE (Phi-3 / Phi-3.5 / Phi-4-mini): transformers computes inv_freq = 1 / (ext * theta^(2i/d))
with ext = long_factor when the sequence (max(position_ids) + 1) exceeds
original_max_position_embeddings and short_factor otherwise, and recomputes the whole KV
cache when a generation crosses that length. A bundle bakes one table and never recomputes
its cache, so it uses short_factor, and its context window may not exceed
original_max_position_embeddings (unless the two factor lists are equal): within such a
window every sequence transformers sees is at most original_max_position_embeddings long,
so it uses short_factor too, exactly. A longer window is refused (`check_context`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import PackError

ROPE_TYPES = ("default", "linear", "llama3", "longrope")


@dataclass(frozen=True)
class Rope:
    type: str = "default"
    theta: float = 10000.0
    factor: float | None = None  # linear, llama3
    low_freq_factor: float | None = None  # llama3
    high_freq_factor: float | None = None  # llama3
    original_max_position_embeddings: int | None = None  # llama3, longrope
    partial_rotary_factor: float | None = None  # rotate int(head_dim * this) dims of each head (None: all)
    short_factor: tuple[float, ...] | None = None  # longrope: per-frequency divisors (the bundle's table)
    long_factor: tuple[float, ...] | None = None  # longrope: those of sequences past original_max_...
    attention_factor: float | None = None  # longrope: cos and sin are multiplied by it (None: 1)

    OPTIONAL = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings",
                "partial_rotary_factor", "short_factor", "long_factor", "attention_factor")

    def rotary_dim(self, head_dim: int) -> int:
        """The dimensions of a head that are rotated (the first ones), as transformers sizes them."""
        return int(head_dim * (self.partial_rotary_factor if self.partial_rotary_factor is not None else 1.0))

    @property
    def attention_scaling(self) -> float:
        """What transformers multiplies cos and sin by."""
        return 1.0 if self.attention_factor is None else float(self.attention_factor)

    def check_context(self, context_window: int) -> None:
        """Raises PackError if one baked table cannot match transformers over the window."""
        if self.type == "longrope" and self.short_factor != self.long_factor \
                and context_window > self.original_max_position_embeddings:
            raise PackError(
                f"LongRoPE switches from short_factor to long_factor past original_max_position_embeddings "
                f"({self.original_max_position_embeddings} tokens), which a bundle cannot do; a context window of "
                f"{context_window} is not supported: pass --context-window {self.original_max_position_embeddings} "
                "or less")

    def to_json(self) -> dict:
        """{"type", "theta", and the parameters the type has}: the manifest's form."""
        out = {"type": self.type, "theta": self.theta}
        for k in self.OPTIONAL:
            v = getattr(self, k)
            if v is not None:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> Rope:
        values = dict(data)
        for k in ("short_factor", "long_factor"):
            if values.get(k) is not None:
                values[k] = tuple(float(v) for v in values[k])
        return cls(**values)

    @classmethod
    def from_hf(cls, config, partial_rotary: bool = False) -> Rope:
        """From a transformers config object (rope_parameters, or rope_scaling and
        rope_theta before transformers 5). `partial_rotary`: whether the architecture's
        attention rotates only part of each head (Phi-3); elsewhere a partial_rotary_factor
        other than 1 is refused. Raises PackError for other rope types."""
        params = dict(getattr(config, "rope_parameters", None) or {})
        if not params:  # transformers < 5
            params = dict(getattr(config, "rope_scaling", None) or {})
            params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
        kind = params.get("rope_type") or params.get("type") or "default"
        if not isinstance(kind, str) or kind not in ROPE_TYPES:
            raise PackError(f"rope type {str(kind)[:40]!r} is not supported; supported: {', '.join(ROPE_TYPES)}")

        def number(key: str, default: float | None = None, source: Mapping = params) -> float:
            v = source.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise PackError(f"config.json: {key} must be a positive number, not {str(v)[:40]!r} "
                                f"(rope type {kind}); fix the config")
            return float(v)

        theta = number("rope_theta", 10000.0)
        partial = params.get("partial_rotary_factor")  # where transformers' rope functions read it
        if partial is not None:
            partial = number("partial_rotary_factor", source={"partial_rotary_factor": partial})
            if partial > 1.0:
                raise PackError(f"config.json: partial_rotary_factor {partial} must be at most 1")
            if partial == 1.0 or (not partial_rotary and kind == "default"):  # (transformers ignores it there)
                partial = None
            elif not partial_rotary:
                raise PackError(f"partial_rotary_factor {partial} is not supported by "
                                f"{type(config).__name__.removesuffix('Config')} models (only 1)")
        if kind == "linear":
            return cls(kind, theta, factor=number("factor"), partial_rotary_factor=partial)
        if kind == "llama3":
            return cls(kind, theta, factor=number("factor"), low_freq_factor=number("low_freq_factor"),
                       high_freq_factor=number("high_freq_factor"),
                       original_max_position_embeddings=int(number("original_max_position_embeddings")),
                       partial_rotary_factor=partial)
        if kind == "longrope":
            return cls._longrope(config, params, theta, partial, number)
        return cls(kind, theta, partial_rotary_factor=partial)

    @classmethod
    def _longrope(cls, config, params: dict, theta: float, partial: float | None, number) -> Rope:
        """transformers' _compute_longrope_parameters: the factor lists, and the attention
        factor (given, or sqrt(1 + ln(factor) / ln(original)) with factor defaulting to
        max_position_embeddings / original_max_position_embeddings)."""
        original = int(number("original_max_position_embeddings"))
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        half = int(head_dim * (partial or 1.0)) // 2
        lists = {}
        for key in ("short_factor", "long_factor"):
            v = params.get(key)
            if not isinstance(v, (list, tuple)) or len(v) != half or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                    for x in v):
                raise PackError(f"config.json: rope_scaling {key} must be a list of {half} positive numbers "
                                "(half the rotary dimensions); fix the config")
            lists[key] = tuple(float(x) for x in v)
        factor = params.get("factor")
        factor = config.max_position_embeddings / original if factor is None else number("factor")
        attention = params.get("attention_factor")
        if attention is None:
            attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
        else:
            attention = number("attention_factor")
        return cls("longrope", theta, original_max_position_embeddings=original, partial_rotary_factor=partial,
                   attention_factor=float(attention), **lists)


def rope_inv_freq(rope: Rope | Mapping, head_dim: int) -> np.ndarray:
    """inv_freq [rotary_dim / 2] in float32, step by step as transformers computes it
    (default, linear, llama3 and longrope, the latter with short_factor: see the module
    docstring). `rope`: a Rope or its JSON form."""
    if not isinstance(rope, Rope):
        rope = Rope.from_json(rope)
    kind = rope.type
    f32 = np.float32
    dim = rope.rotary_dim(head_dim)
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(f32) / f32(dim)
    base = f32(rope.theta)
    power = (base.astype(np.float64) ** exponent.astype(np.float64)).astype(f32)
    inv = f32(1.0) / power
    if kind == "default":
        return inv
    if kind == "linear":
        return (inv / f32(rope.factor)).astype(f32)
    if kind == "longrope":
        return (f32(1.0) / (np.asarray(rope.short_factor, f32) * power)).astype(f32)
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
    raise PackError(f"rope type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}")


def rope_cos_sin(inv_freq: np.ndarray, positions: np.ndarray, scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [len(positions), 2 * len(inv_freq)] in the rotate_half layout (halves
    repeated), multiplied by `scaling` (Rope.attention_scaling) in f32 as transformers does."""
    freqs = positions.astype(np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    if scaling == 1.0:
        return np.cos(emb), np.sin(emb)
    s = np.float32(scaling)
    return (np.cos(emb) * s).astype(np.float32), (np.sin(emb) * s).astype(np.float32)
