"""Llama (Llama 2 / 3 / 3.1 / 3.2, SmolLM, TinyLlama) and Mistral without a sliding window.

Specification: transformers' models/llama/modeling_llama.py. A decoder layer is
pre-norm attention then a SiLU-gated MLP, each added to the residual stream.
"""

from __future__ import annotations

import json
from typing import Callable

from ..errors import PackError
from ..rope import Rope
from .base import LAYER_PREFIX, Activation, Architecture, Graph, ModelConfig, Op, TensorRow, TensorSpec

REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def parse_config(raw: dict, model_type: str, sliding_window: bool = False) -> object:
    """config.json -> transformers' config object (it upgrades legacy rope_scaling and fills
    in defaults), after the checks every Llama-like definition shares: the sizes, a SiLU MLP
    and no sliding window in use (unless `sliding_window`: the definition resolves it).
    `model_type`: the default when config.json has none. Raises PackError."""
    from transformers import AutoConfig

    missing = [k for k in REQUIRED if not isinstance(raw.get(k), int) or raw.get(k) <= 0]
    if missing:
        raise PackError(f"config.json lacks a positive integer for: {', '.join(missing)}")
    try:
        c = AutoConfig.for_model(raw.get("model_type", model_type),
                                 **{k: v for k, v in raw.items() if k != "model_type"})
    except Exception as e:
        raise PackError(f"config.json could not be parsed by transformers ({' '.join(str(e).split())[:300]})") \
            from None
    for key in ("rope_theta", "max_position_embeddings"):  # transformers may keep or replace a bad one
        if key in raw and (isinstance(raw[key], bool) or not isinstance(raw[key], (int, float))):
            raise PackError(f"config.json: {key} must be a number, not {json.dumps(raw[key])[:40]}; fix the config")
    if getattr(c, "hidden_act", "silu") != "silu":
        raise PackError(f"hidden_act {c.hidden_act!r} is not supported (only silu)")
    # Mistral applies sliding_window in every layer; Qwen2/3 only in the layers that
    # layer_types marks "sliding_attention" (none unless use_sliding_window)
    window = getattr(c, "sliding_window", None)
    layer_types = getattr(c, "layer_types", None)
    sliding = layer_types is None or "sliding_attention" in layer_types
    if window not in (None, 0) and sliding and window < c.max_position_embeddings and not sliding_window:
        raise PackError(f"sliding-window attention (sliding_window={window}) is not supported; "
                        "only models without a sliding window in use are")
    return c


def config_fields(c, partial_rotary: bool = False) -> dict:
    """The ModelConfig fields of a parsed Llama-like config (`partial_rotary`: the
    architecture rotates part of each head, Rope.from_hf). Raises PackError."""
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    if heads % kv_heads:
        raise PackError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    if head_dim % 2:
        raise PackError(f"head_dim {head_dim} must be even for rotary embeddings")
    return dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                num_hidden_layers=c.num_hidden_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                head_dim=head_dim, rms_norm_eps=float(c.rms_norm_eps),
                max_position_embeddings=int(c.max_position_embeddings),
                tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
                rope=Rope.from_hf(c, partial_rotary))


def resolve(raw: dict) -> dict:
    """config.json -> the ModelConfig fields. Raises PackError for what the definition
    does not cover. Mistral's sliding_window applies to every layer (transformers'
    modeling_mistral.py) when it is shorter than max_position_embeddings."""
    c = parse_config(raw, "llama", sliding_window=True)
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise PackError("attention_bias / mlp_bias checkpoints are not supported yet")
    fields = config_fields(c)
    window = getattr(c, "sliding_window", None)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise PackError(f"config.json: sliding_window must be a positive integer or null, "
                        f"not {json.dumps(window)[:40]}")
    if window and window < c.max_position_embeddings:
        fields.update(sliding_window=window, layer_types=("sliding_attention",) * c.num_hidden_layers)
    return fields


# ---------------------------------------------------------------------------------------
# tensors. Roles: v_proj and down_proj are "sensitive" (the matrices whose quantization
# error costs the most; low-bit schemes keep them at 4 bits, as llama.cpp's Q2_K/Q3_K mixes
# do); the token table is "head" when it is tied to the output head.

H, FF, V, Q, KV = "hidden_size", "intermediate_size", "vocab_size", "q_size", "kv_size"

EMBED = TensorRow("model.embed_tokens.weight", (V, H), "embedding", "token_embd.weight")
NORM = TensorRow("model.norm.weight", (H,), "vector", "output_norm.weight")
LM_HEAD = TensorRow("lm_head.weight", (V, H), "head", "output.weight")

ATTN_NORM = TensorRow("input_layernorm.weight", (H,), "vector", "attn_norm.weight")
Q_PROJ = TensorRow("self_attn.q_proj.weight", (Q, H), "matrix", "attn_q.weight", "num_attention_heads")
K_PROJ = TensorRow("self_attn.k_proj.weight", (KV, H), "matrix", "attn_k.weight", "num_key_value_heads")
V_PROJ = TensorRow("self_attn.v_proj.weight", (KV, H), "sensitive", "attn_v.weight")
O_PROJ = TensorRow("self_attn.o_proj.weight", (H, Q), "matrix", "attn_output.weight")
MLP_NORM = TensorRow("post_attention_layernorm.weight", (H,), "vector", "ffn_norm.weight")
GATE_PROJ = TensorRow("mlp.gate_proj.weight", (FF, H), "matrix", "ffn_gate.weight")
UP_PROJ = TensorRow("mlp.up_proj.weight", (FF, H), "matrix", "ffn_up.weight")
DOWN_PROJ = TensorRow("mlp.down_proj.weight", (H, FF), "sensitive", "ffn_down.weight")

LAYER = (ATTN_NORM, Q_PROJ, K_PROJ, V_PROJ, O_PROJ, MLP_NORM, GATE_PROJ, UP_PROJ, DOWN_PROJ)


def table(layer_rows: tuple[TensorRow, ...],
          norm: TensorRow | None = None) -> Callable[[ModelConfig], list[TensorSpec]]:
    """The `tensors` of a Llama-like definition whose decoder layers hold `layer_rows`
    (`norm`: the final norm's row, when it is not Llama's)."""
    norm = norm or NORM
    def tensors(c: ModelConfig) -> list[TensorSpec]:
        out = [EMBED.spec(c, role="head" if c.tie_word_embeddings else None)]
        for i in range(c.num_hidden_layers):
            out += [row.spec(c, LAYER_PREFIX.format(i)) for row in layer_rows]
        out.append(norm.spec(c))
        if not c.tie_word_embeddings:
            out.append(LM_HEAD.spec(c))
        return out

    return tensors




# ---------------------------------------------------------------------------------------
# graph


def qkv_projections(p: str) -> tuple[Op, ...]:
    """The attention inputs q, k and v of a layer (tensor prefix p) from the normed stream xn."""
    return (Op("linear", ("xn",), "q", p + Q_PROJ.name, "q_proj"),
            Op("linear", ("xn",), "k", p + K_PROJ.name, "k_proj"),
            Op("linear", ("xn",), "v", p + V_PROJ.name, "v_proj"))


def decoder_graph(c: ModelConfig, qkv: Callable[[str], tuple[Op, ...]] = qkv_projections,
                  extra: tuple[Activation, ...] = ()) -> Graph:
    """The Llama graph, with `qkv` making each layer's q, k, v (Llama: three linear
    layers); `extra`: the activations those ops use besides Llama's."""
    acts = (Activation("x", c.hidden_size, "f32"),  # the residual stream: f32 in every kernel variant
            Activation("xn", c.hidden_size), Activation("q", c.q_size), Activation("k", c.kv_size),
            Activation("v", c.kv_size), Activation("attn", c.q_size), Activation("o", c.hidden_size),
            Activation("gate", c.intermediate_size), Activation("up", c.intermediate_size),
            Activation("x_last", c.hidden_size, last_token=True), *extra)

    def layer(i: int) -> tuple[Op, ...]:
        p = LAYER_PREFIX.format(i)
        return (
            Op("rmsnorm", ("x",), "xn", p + ATTN_NORM.name, "input_layernorm"),
            *qkv(p),
            Op("rope", ("q", "k"), label="rope"),
            Op("attention", ("q", "k", "v"), "attn", label="attention",
               window=c.sliding_window if c.is_sliding(i) else 0),
            Op("linear", ("attn",), "o", p + O_PROJ.name, "o_proj"),
            Op("add", ("x", "o"), "x", label="residual"),
            Op("rmsnorm", ("x",), "xn", p + MLP_NORM.name, "post_attention_layernorm"),
            Op("linear", ("xn",), "gate", p + GATE_PROJ.name, "gate_proj"),
            Op("linear", ("xn",), "up", p + UP_PROJ.name, "up_proj"),
            Op("silu_mul", ("gate", "up"), "gate", label="silu_mul"),
            Op("linear", ("gate",), "o", p + DOWN_PROJ.name, "down_proj"),
            Op("add", ("x", "o"), "x", label="residual"),
        )

    head = EMBED.name if c.tie_word_embeddings else LM_HEAD.name
    return Graph(
        activations=acts,
        embed=(Op("embedding", ("tokens",), "x", EMBED.name, "embed"),),
        layers=tuple(layer(i) for i in range(c.num_hidden_layers)),
        head=(Op("rmsnorm", ("x",), "x_last", NORM.name, "final norm (last token)"),
              Op("linear", ("x_last",), "logits", head, "lm_head")),
    )


def graph(c: ModelConfig) -> Graph:
    return decoder_graph(c)


def llama_like(name: str, model_types: dict[str, str], gguf_architectures: dict[str, str],
               resolve: Callable[[dict], dict], layer_rows: tuple[TensorRow, ...],
               graph: Callable[[ModelConfig], Graph]) -> Architecture:
    """A definition with Llama's token table, final norm and head around `layer_rows`."""
    return Architecture(name=name, hf_architectures=tuple(dict.fromkeys(model_types.values())),
                        model_types=model_types, gguf_architectures=gguf_architectures, resolve=resolve,
                        global_rows=(EMBED, NORM, LM_HEAD), layer_rows=layer_rows, tensors=table(layer_rows),
                        graph=graph)


LLAMA = llama_like("llama", {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"},
                   {"llama": "LlamaForCausalLM"}, resolve, LAYER, graph)
