"""The Llama architecture family: config normalization and the tensors it must have.

Everything the later stages (plan, kernels, reference executor) need about a model is
the normalized config returned here; they never look at the raw Hugging Face config.
"""

from __future__ import annotations

from .errors import PackError

# Hugging Face architecture name -> plan family
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
}
ROPE_TYPES = ("default", "linear", "llama3")


def _hf_config(raw: dict):
    """Let transformers parse the config (it upgrades legacy rope_scaling and friends)."""
    from transformers import AutoConfig

    model_type = raw.get("model_type", "llama")
    try:
        return AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k != "model_type"})
    except Exception as e:
        raise PackError(f"config.json could not be parsed by transformers ({e})") from None


def normalize_config(raw: dict) -> tuple[str, dict]:
    """raw config.json -> (HF architecture name, normalized config). Raises PackError."""
    archs = raw.get("architectures") or []
    arch = archs[0] if archs else {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}.get(raw.get("model_type"))
    if arch not in SUPPORTED_ARCHITECTURES:
        raise PackError(f"unsupported architecture {arch or raw.get('model_type')!r}; "
                        f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
    required = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]
    missing = [k for k in required if not isinstance(raw.get(k), int) or raw.get(k) <= 0]
    if missing:
        raise PackError(f"config.json lacks a positive integer for: {', '.join(missing)}")
    c = _hf_config(raw)
    if getattr(c, "hidden_act", "silu") != "silu":
        raise PackError(f"hidden_act {c.hidden_act!r} is not supported (only silu)")
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise PackError("attention_bias / mlp_bias checkpoints are not supported yet")
    if getattr(c, "sliding_window", None) not in (None, 0) and c.sliding_window < c.max_position_embeddings:
        raise PackError(f"sliding-window attention (sliding_window={c.sliding_window}) is not supported; "
                        "only Mistral variants without a sliding window are")
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    if heads % kv_heads:
        raise PackError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    if head_dim % 2:
        raise PackError(f"head_dim {head_dim} must be even for rotary embeddings")
    cfg = {
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": float(c.rms_norm_eps),
        "max_position_embeddings": int(c.max_position_embeddings),
        "tie_word_embeddings": bool(getattr(c, "tie_word_embeddings", False)),
        "rope": _rope(c),
    }
    return arch, cfg


def _rope(c) -> dict:
    params = dict(getattr(c, "rope_parameters", None) or {})
    if not params:  # transformers < 5
        params = dict(getattr(c, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(c, "rope_theta", 10000.0))
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind not in ROPE_TYPES:
        raise PackError(f"rope type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    rope = {"type": kind, "theta": float(params.get("rope_theta", 10000.0))}
    if kind == "linear":
        rope["factor"] = float(params["factor"])
    elif kind == "llama3":
        for k in ("factor", "low_freq_factor", "high_freq_factor"):
            rope[k] = float(params[k])
        rope["original_max_position_embeddings"] = int(params["original_max_position_embeddings"])
    return rope


def expected_tensors(cfg: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, role) of every weight, in the order they are stored.

    role is "vector", "matrix", "sensitive" (a matrix whose quantization error costs the
    most: v_proj and down_proj, which low-bit schemes keep at 4 bits as llama.cpp's
    Q2_K/Q3_K mixes do), "embedding" (the input token table) or "head" (the output
    head: lm_head, or the token table when it is tied to the head)."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    out = [("model.embed_tokens.weight", (v, h), "head" if cfg["tie_word_embeddings"] else "embedding")]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [
            (p + "input_layernorm.weight", (h,), "vector"),
            (p + "self_attn.q_proj.weight", (q, h), "matrix"),
            (p + "self_attn.k_proj.weight", (kv, h), "matrix"),
            (p + "self_attn.v_proj.weight", (kv, h), "sensitive"),
            (p + "self_attn.o_proj.weight", (h, q), "matrix"),
            (p + "post_attention_layernorm.weight", (h,), "vector"),
            (p + "mlp.gate_proj.weight", (i, h), "matrix"),
            (p + "mlp.up_proj.weight", (i, h), "matrix"),
            (p + "mlp.down_proj.weight", (h, i), "sensitive"),
        ]
    out.append(("model.norm.weight", (h,), "vector"))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h), "head"))
    return out


def count_parameters(cfg: dict) -> int:
    total = 0
    for _, shape, _ in expected_tensors(cfg):
        n = 1
        for d in shape:
            n *= d
        total += n
    return total
