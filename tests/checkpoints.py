"""Test checkpoints: tiny random-weight Llama, Mistral, Qwen2, Qwen3, Phi-3, SmolLM3, Gemma 2
and Gemma 3 models, and the real SmolLM2 GGUF.

Tiny models are built with transformers' own config and model classes and saved the
way the Hub stores them (config.json, safetensors, tokenizer files), so packaging them
exercises the real reading code. Nothing here touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_VARIANTS = {
    "plain": dict(num_key_value_heads=4),
    "gqa": dict(num_key_value_heads=2),
    "llama3": dict(num_key_value_heads=2, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    "untied": dict(num_key_value_heads=1, tie_word_embeddings=False),
    "linear": dict(num_key_value_heads=2, rope_scaling={"rope_type": "linear", "factor": 4.0}),
    # MistralForCausalLM (transformers' Mistral classes) without a sliding window
    "mistral": dict(architecture="mistral", num_key_value_heads=2, sliding_window=None, rope_theta=1e6),
}

# Qwen2ForCausalLM and Qwen3ForCausalLM (their own transformers classes). qwen3: head_dim 32,
# not hidden_size / num_attention_heads = 16
TINY_QWEN = {
    "qwen2": dict(architecture="qwen2", num_key_value_heads=2, rope_theta=1e6),
    "qwen2-untied": dict(architecture="qwen2", num_key_value_heads=1, tie_word_embeddings=False),
    "qwen3": dict(architecture="qwen3", num_key_value_heads=2, head_dim=32, rope_theta=1e6),
    "qwen3-untied": dict(architecture="qwen3", num_key_value_heads=4, head_dim=24, tie_word_embeddings=False),
}

# Phi3ForCausalLM and SmolLM3ForCausalLM (their own transformers classes). phi3: Phi-3-mini's
# shape (untied, full rotary, a sliding window as long as the context); phi3-longrope:
# Phi-4-mini's (tied, 3/4 of each head rotated, LongRoPE with max_position_embeddings /
# original = 4, so cos/sin are scaled by sqrt(1 + ln 4 / ln 4096)); smollm3: every second
# layer without RoPE
TINY_PHI3 = {
    "phi3": dict(architecture="phi3", num_key_value_heads=2, pad_token_id=0, tie_word_embeddings=False,
                 sliding_window=256),
    "phi3-longrope": dict(architecture="phi3", num_key_value_heads=2, pad_token_id=0, partial_rotary_factor=0.75,
                          max_position_embeddings=16384, original_max_position_embeddings=4096, rope_scaling={
                              "type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.2, 3.0],
                              "long_factor": [1.0, 1.5, 2.5, 4.0, 8.0, 16.0]}),
    # Phi-3-mini-4k's kind of window (2047 of 4096 there): every layer attends to 16 keys
    "phi3-window": dict(architecture="phi3", num_key_value_heads=2, pad_token_id=0, tie_word_embeddings=False,
                        sliding_window=16),
    "smollm3": dict(architecture="smollm3", num_key_value_heads=2, pad_token_id=0, no_rope_layer_interval=2),
}

# Gemma2ForCausalLM, Gemma3ForCausalLM (their own transformers classes) and Mistral with a
# sliding window: window 16 (the tests' prompts are longer), local and global layers mixed,
# Gemma 2's soft-caps small enough to change the scores and logits
TINY_GEMMA = {
    # layers: sliding, full, sliding (Gemma 2's default alternation); query_pre_attn_scalar != head_dim
    "gemma2": dict(architecture="gemma2", num_hidden_layers=3, num_key_value_heads=2, sliding_window=16,
                   query_pre_attn_scalar=24, attn_logit_softcapping=4.0, final_logit_softcapping=6.0),
    # head_dim 32 != hidden / heads; sliding layers with their own RoPE base, full ones with linear scaling
    "gemma3": dict(architecture="gemma3", num_hidden_layers=4, num_key_value_heads=2, head_dim=32,
                   sliding_window=16, query_pre_attn_scalar=32,
                   layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
    "gemma3-untied": dict(architecture="gemma3", num_hidden_layers=2, num_key_value_heads=1, head_dim=24,
                          sliding_window=16, tie_word_embeddings=False, final_logit_softcapping=5.0,
                          layer_types=["sliding_attention", "full_attention"]),
    # Gemma 3's 262,144-token vocabulary (tied head) on a tiny model: split under a small binding limit
    "gemma3-vocab262k": dict(architecture="gemma3", vocab_size=262144, num_hidden_layers=2, num_key_value_heads=1,
                             head_dim=32, sliding_window=16, layer_types=["sliding_attention", "full_attention"]),
    # MistralForCausalLM whose sliding_window (every layer) is shorter than the context
    "mistral-window": dict(architecture="mistral", num_key_value_heads=2, sliding_window=16, rope_theta=1e6),
}

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def smollm2_gguf() -> Path:
    from packager.checkpoint import default_source
    return default_source()


def build_tokenizer(out: Path, vocab_size: int) -> None:
    """A small byte-level BPE tokenizer trained on a built-in text, with chat tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = (Path(json.__file__).parent / "__init__.py").read_text().splitlines()
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def model_classes(architecture: str):
    import transformers as t

    return {"llama": (t.LlamaConfig, t.LlamaForCausalLM), "mistral": (t.MistralConfig, t.MistralForCausalLM),
            "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM), "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM),
            "phi3": (t.Phi3Config, t.Phi3ForCausalLM), "smollm3": (t.SmolLM3Config, t.SmolLM3ForCausalLM),
            "gemma2": (t.Gemma2Config, t.Gemma2ForCausalLM),
            "gemma3": (t.Gemma3TextConfig, t.Gemma3ForCausalLM)}[architecture]


def tiny_hf_config(variant: str = "gqa", **overrides):
    """(transformers config, model class) of a TINY_VARIANTS (Llama, Mistral), TINY_QWEN,
    TINY_PHI3 or TINY_GEMMA variant."""
    kw = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
              tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    kw.update({**TINY_VARIANTS, **TINY_QWEN, **TINY_PHI3, **TINY_GEMMA}[variant])
    kw.update(overrides)
    architecture = kw.pop("architecture", "llama")
    config_cls, model_cls = model_classes(architecture)
    if config_cls.__name__ in ("Qwen2Config", "Phi3Config"):  # no head_dim field: hidden_size / num_attention_heads
        kw.pop("head_dim")
    return config_cls(**kw), model_cls


def build_tiny_checkpoint(out: Path, variant: str = "gqa", seed: int = 0, dtype: str = "float32",
                          max_shard_size: str | None = None, **overrides) -> Path:
    """Save a tiny random checkpoint of a TINY_VARIANTS (Llama, Mistral), TINY_QWEN, TINY_PHI3 or
    TINY_GEMMA variant to `out` and return it."""
    import torch
    from transformers import GenerationConfig

    config, model_cls = tiny_hf_config(variant, **overrides)
    gemma = model_cls.__name__.startswith("Gemma")
    torch.manual_seed(seed)
    model = model_cls(config).to(getattr(torch, dtype)).eval()
    with torch.no_grad():  # random init is tiny (std 0.02); make activations non-trivial
        for name, p in model.named_parameters():
            if "norm" in name:  # the layer norms, and the per-head q_norm / k_norm
                p.copy_((0.0 if gemma else 1.0) + 0.1 * torch.randn_like(p))  # Gemma's scale by 1 + weight
            elif name.endswith(".bias"):  # Qwen2's q/k/v biases: as large as the projections' outputs
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.15)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=True, temperature=0.6)
    save_kw = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **save_kw)
    build_tokenizer(out, config.vocab_size)
    return out
