"""What no definition supports, refused in one line that names it, before a definition
reads the config: mixtures of experts, vision / audio towers (multimodal checkpoints) and
pre-quantized checkpoints. (What a definition itself does not cover, such as biases, other
activations, rope types or sliding windows, is refused by its `resolve`.)"""

from __future__ import annotations

from ..errors import PackError

# config.json keys that count the experts of a mixture-of-experts layer
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
# architectures made of experts whose configs name the count otherwise (or not at all)
MOE_ARCHITECTURES = ("MixtralForCausalLM", "DbrxForCausalLM", "JambaForCausalLM", "GptOssForCausalLM",
                     "DeepseekV2ForCausalLM", "DeepseekV3ForCausalLM", "ArcticForCausalLM", "GraniteMoeForCausalLM")
TOWER_KEYS = ("vision_config", "audio_config", "vision_tower", "mm_vision_tower")


def refuse_unsupported(raw: dict, architecture: str | None) -> None:
    """Raises PackError naming the first unsupported feature of a config.json."""
    name = architecture or raw.get("model_type") or "?"
    for key in EXPERT_KEYS:
        n = raw.get(key)
        if isinstance(n, int) and not isinstance(n, bool) and n > 1:
            raise PackError(f"{name} is a mixture of experts ({key}={n}); mixtures of experts are not supported")
    if isinstance(architecture, str) and (architecture in MOE_ARCHITECTURES or "moe" in architecture.lower()):
        raise PackError(f"{architecture} is a mixture of experts; mixtures of experts are not supported")
    for key in TOWER_KEYS:
        if raw.get(key):
            raise PackError(f"{name} has a vision or audio tower ({key}); multimodal checkpoints are not supported "
                            "(only text decoders)")
    q = raw.get("quantization_config")
    if q:
        method = q.get("quant_method", "?") if isinstance(q, dict) else "?"
        raise PackError(f"the checkpoint is already quantized (quantization_config, quant_method "
                        f"{str(method)[:40]!r}), which is not supported; package the float (bf16/f16/f32) checkpoint")
