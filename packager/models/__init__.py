"""Architecture definitions, and the one place a model's config is resolved.

Each module here defines one architecture family (packager.models.base.Architecture):
how its config.json is read, its tensor table and its graph. To add one, write the
module and list its definition in DEFINITIONS (docs/plan.md, "Adding an architecture").
"""

from __future__ import annotations

from typing import Mapping

from ..errors import PackError
from .base import CONTEXT_CAP, Architecture, Graph, ModelConfig, Op, TensorSpec, resolve_context_window
from .gemma import GEMMA2, GEMMA3
from .llama import LLAMA
from .phi3 import PHI3
from .qwen2 import QWEN2
from .qwen3 import QWEN3
from .refusals import refuse_unsupported
from .smollm3 import SMOLLM3

DEFINITIONS: tuple[Architecture, ...] = (LLAMA, QWEN2, QWEN3, PHI3, SMOLLM3, GEMMA2, GEMMA3)

# architectures refused with a reason (model_type -> the same, for configs without "architectures")
REFUSED = {"Gemma3ForConditionalGeneration": "it has a vision tower; package a text-only Gemma 3 checkpoint "
                                             "(Gemma3ForCausalLM: gemma-3-270m, gemma-3-1b)"}
REFUSED_MODEL_TYPES = {"gemma3": "Gemma3ForConditionalGeneration"}

# Hugging Face architecture name -> definition
ARCHITECTURES: dict[str, Architecture] = {hf: d for d in DEFINITIONS for hf in d.hf_architectures}


def definition(name: str) -> Architecture:
    """The definition of a Hugging Face architecture name or of a definition name ("llama")."""
    for d in DEFINITIONS:
        if name == d.name or name in d.hf_architectures:
            return d
    raise PackError(f"unsupported architecture {name!r}; supported: {', '.join(ARCHITECTURES)}")


def gguf_definition(gguf_arch: str | None, file: str) -> Architecture:
    """The definition of a GGUF file's general.architecture."""
    for d in DEFINITIONS:
        if gguf_arch in d.gguf_architectures:
            return d
    supported = ", ".join(a for d in DEFINITIONS for a in d.gguf_architectures)
    raise PackError(f"{file}: GGUF architecture {gguf_arch!r} is not supported; supported: {supported}")


def resolve_config(raw: dict, context_window: int | None = None) -> ModelConfig:
    """A checkpoint's config.json -> its ModelConfig, context window included (the
    requested one, checked, or the default). Raises PackError."""
    archs = raw.get("architectures") or []
    hf_arch = archs[0] if archs else None
    if hf_arch is None:
        hf_arch = next((d.model_types[raw.get("model_type")] for d in DEFINITIONS
                        if raw.get("model_type") in d.model_types), None)
    hf_arch = hf_arch or REFUSED_MODEL_TYPES.get(raw.get("model_type"))
    if hf_arch in REFUSED:
        raise PackError(f"architecture {hf_arch} is not supported: {REFUSED[hf_arch]}")
    refuse_unsupported(raw, hf_arch if isinstance(hf_arch, str) else None)
    if hf_arch not in ARCHITECTURES:
        raise PackError(f"unsupported architecture {hf_arch or raw.get('model_type')!r}; "
                        f"supported: {', '.join(ARCHITECTURES)}")
    d = ARCHITECTURES[hf_arch]
    fields = d.resolve(raw)
    window = resolve_context_window(fields["max_position_embeddings"], context_window)
    return ModelConfig(architecture=d.name, hf_architecture=hf_arch, context_window=window, **fields)


def config_from_manifest(manifest: Mapping, context_window: int | None = None) -> ModelConfig:
    """The ModelConfig a bundle was made with, from its manifest (a dict). The context
    window: `context_window` if given (checked), else the manifest's, else the default."""
    model = manifest.get("model", {})
    name = model.get("hf_architecture") or model.get("architecture") or "llama"
    d = definition(name)
    hf_arch = name if name in d.hf_architectures else d.hf_architectures[0]
    cfg = model.get("config")
    if not isinstance(cfg, Mapping):
        raise PackError("the manifest has no model config; package the bundle again")
    if context_window is None:
        context_window = (manifest.get("memory") or {}).get("context_window")
    window = resolve_context_window(int(cfg.get("max_position_embeddings") or 0), context_window)
    return ModelConfig.from_json(cfg, architecture=d.name, hf_architecture=hf_arch, context_window=window)


def count_parameters(c: ModelConfig) -> int:
    total = 0
    for t in definition(c.architecture).tensors(c):
        n = 1
        for d in t.shape:
            n *= d
        total += n
    return total


__all__ = ["ARCHITECTURES", "Architecture", "CONTEXT_CAP", "DEFINITIONS", "Graph", "ModelConfig", "Op", "TensorSpec",
           "config_from_manifest", "count_parameters", "definition", "gguf_definition", "resolve_config",
           "resolve_context_window"]
