"""Quantization schemes: which weight format each tensor of a model gets.

A scheme (`--quant`) names the format of the bulk of the weights; the policy keeps
vectors (norms, biases) in f32, the output head (or the token table tied to it) at
8 bits, the input token table at >= 4 bits, and falls back to a float format for a
matrix whose input dimension does not divide into the format's groups. Under 2- and
3-bit schemes the "sensitive" matrices (v_proj, down_proj) stay at 4 bits, and the head
stays at 8 bits because it is the most sensitive matrix of all (docs/formats.md; what
each scheme costs: `llmpack eval`). The manifest records the outcome per tensor, so
readers never re-derive it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bundle_contract.errors import UserError

from .formats import FORMATS, Format


@dataclass(frozen=True)
class Scheme:
    name: str
    matrix: str  # format of 2-D weights
    sensitive: str  # format of the matrices that cost the most when quantized coarsely
    embedding: str  # format of the input token table (when not tied to the head)
    head: str  # format of the output head (lm_head, or the tied token table)
    fallback: str  # float format for matrices the quantized format cannot hold
    compute: str  # "f16" when the kernels may compute in f16, else "f32"
    description: str


SCHEMES: dict[str, Scheme] = {s.name: s for s in [
    #      name     matrix   sensitive embedding head   fallback compute
    Scheme("q4f16", "q4f16", "q4f16", "q4f16", "q8f16", "f16", "f16", "4-bit, f16 scale+min per 32"),
    Scheme("q4f32", "q4f32", "q4f32", "q4f32", "q8f16", "f32", "f32", "4-bit, f32 scale+min per 32"),
    Scheme("q3f16", "q3f16", "q4f16", "q4f16", "q8f16", "f16", "f16", "3-bit weights (scale+min per 64)"),
    Scheme("q2f16", "q2f16", "q4f16", "q4f16", "q8f16", "f16", "f16", "2-bit weights (scale+min per 64)"),
    Scheme("q8f16", "q8f16", "q8f16", "q8f16", "q8f16", "f16", "f16", "8-bit weights, f16 scales per 32"),
    Scheme("f16", "f16", "f16", "f16", "f16", "f16", "f16", "16-bit float weights"),
    Scheme("f32", "f32", "f32", "f32", "f32", "f32", "f32", "32-bit float weights (reference)"),
]}


class SchemeError(UserError, ValueError):
    """An unknown quantization scheme or quantizer."""


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise SchemeError(f"unknown --quant {name!r}; choose one of: {', '.join(SCHEMES)}") from None


def choose_format(scheme: Scheme, shape: tuple[int, ...], role: str) -> Format:
    """role: "vector", "matrix", "sensitive", "embedding" or "head" (the tensor tables of packager/models/)."""
    if role == "vector" or len(shape) != 2:
        return FORMATS["f32"]
    fmt = FORMATS[getattr(scheme, role)]  # roles "matrix", "sensitive", "embedding", "head" are Scheme fields
    return fmt if fmt.supports(shape) else FORMATS[scheme.fallback]
