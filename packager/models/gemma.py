"""Gemma 2 and Gemma 3 (text): Gemma2ForCausalLM, Gemma3ForCausalLM.

Specification: transformers' models/gemma2/modeling_gemma2.py and
models/gemma3/modeling_gemma3.py. Against Llama, a Gemma decoder layer

- normalizes with RMSNorm times (1 + weight): the packager stores 1 + weight (in f32, the
  sum transformers computes), so the plan's rmsnorm is Llama's (TensorRow.hf_offset;
  llama.cpp's GGUF files already hold 1 + weight);
- scales the token embeddings by sqrt(hidden_size), rounded to f32 as transformers'
  f32 buffer is (a constant of the embedding kernel: the table is tied to the head);
- normalizes the attention output (post_attention_layernorm) before the residual add,
  and the MLP's input and output (pre_ / post_feedforward_layernorm);
- gates its MLP with GELU (tanh approximation): gelu_tanh(gate) * up;
- scales q.k by query_pre_attn_scalar ** -0.5, soft-caps the attention scores and the
  final logits (Gemma 2: tanh(x / cap) * cap), and alternates sliding-window layers
  (layer_types) with full-attention ones;
- Gemma 3 adds per-head q/k RMSNorms (1 + weight too) before RoPE, its own RoPE for
  the sliding layers (rope_local_base_freq) and rope_scaling for the full layers only.

Gemma3ForConditionalGeneration (a vision tower around the text model) is refused
(packager.models.REFUSED). GGUF files ("gemma2", "gemma3") carry no query_pre_attn_scalar
and a fixed local/global pattern; packager/gguf_source.py fills them in as llama.cpp does.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np

from ..errors import PackError
from ..rope import Rope
from .base import LAYER_PREFIX, Activation, Architecture, Graph, ModelConfig, Op, TensorRow
from .llama import DOWN_PROJ as LLAMA_DOWN
from .llama import EMBED, GATE_PROJ, LM_HEAD, REQUIRED, UP_PROJ, V_PROJ, H, table
from .llama import K_PROJ as LLAMA_K
from .llama import O_PROJ as LLAMA_O
from .llama import Q_PROJ as LLAMA_Q

GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh")  # transformers' names of gelu(approximate="tanh")


def _parse(raw: dict, model_type: str):
    """config.json -> transformers' config object, after the checks both Gemmas share."""
    from transformers import AutoConfig

    missing = [k for k in REQUIRED if not isinstance(raw.get(k), int) or raw.get(k) <= 0]
    if missing:
        raise PackError(f"config.json lacks a positive integer for: {', '.join(missing)}")
    try:
        c = AutoConfig.for_model(model_type, **{k: v for k, v in raw.items() if k != "model_type"})
    except Exception as e:
        raise PackError(f"config.json could not be parsed by transformers ({' '.join(str(e).split())[:300]})") \
            from None
    act = getattr(c, "hidden_activation", None) or getattr(c, "hidden_act", None)
    if act not in GELU_TANH:
        raise PackError(f"hidden_activation {act!r} is not supported (Gemma: gelu_pytorch_tanh)")
    if getattr(c, "attention_bias", False):
        raise PackError("attention_bias checkpoints are not supported (Gemma has none)")
    if getattr(c, "use_bidirectional_attention", False):
        raise PackError("use_bidirectional_attention (an embedding model) is not supported: llmpack runs causal LMs")
    for key in ("query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping", "sliding_window"):
        v = getattr(c, key, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                              or v <= 0):
            raise PackError(f"config.json: {key} must be a positive number or null, not {json.dumps(v)[:40]}")
    return c


def _rope(params) -> Rope:
    return Rope.from_hf(SimpleNamespace(rope_parameters=dict(params or {})))


def _fields(c, rope: Rope, rope_local: Rope | None) -> dict:
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    if heads % kv_heads:
        raise PackError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    head_dim = int(c.head_dim)
    layer_types = tuple(c.layer_types or ())
    unknown = sorted(set(layer_types) - {"sliding_attention", "full_attention"})
    if unknown or len(layer_types) != c.num_hidden_layers:
        raise PackError(f"config.json: layer_types must list sliding_attention / full_attention for each of the "
                        f"{c.num_hidden_layers} layers (got {', '.join(unknown) or len(layer_types)})")
    window = int(c.sliding_window or 0)
    return dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                num_hidden_layers=c.num_hidden_layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                head_dim=head_dim, rms_norm_eps=float(c.rms_norm_eps),
                max_position_embeddings=int(c.max_position_embeddings),
                tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", True)), rope=rope,
                embed_scale=float(np.float32(c.hidden_size ** 0.5)),
                attention_scale=float(c.query_pre_attn_scalar) ** -0.5,
                attn_logit_softcap=float(c.attn_logit_softcapping or 0.0),
                final_logit_softcap=float(c.final_logit_softcapping or 0.0),
                sliding_window=window, layer_types=layer_types if window else (),
                rope_local=rope_local if rope_local != rope else None)


def resolve_gemma2(raw: dict) -> dict:
    c = _parse(raw, "gemma2")
    return _fields(c, Rope.from_hf(c), None)


def resolve_gemma3(raw: dict) -> dict:
    c = _parse(raw, raw.get("model_type") if raw.get("model_type") == "gemma3_text" else "gemma3_text")
    params = getattr(c, "rope_parameters", None) or {}
    if "full_attention" not in params or "sliding_attention" not in params:
        raise PackError("config.json: Gemma 3's rope parameters lack full_attention / sliding_attention")
    return _fields(c, _rope(params["full_attention"]), _rope(params["sliding_attention"]))


# ---------------------------------------------------------------------------------------
# tensors: Llama's, with the norms stored as 1 + weight (hf_offset) and two more per layer;
# llama.cpp keeps Gemma's q/k rows in Hugging Face's order (no gguf_rope_heads)

NORM = TensorRow("model.norm.weight", (H,), "vector", "output_norm.weight", hf_offset=1.0)
ATTN_NORM = TensorRow("input_layernorm.weight", (H,), "vector", "attn_norm.weight", hf_offset=1.0)
Q_PROJ = TensorRow(LLAMA_Q.name, LLAMA_Q.shape, LLAMA_Q.role, LLAMA_Q.gguf)
K_PROJ = TensorRow(LLAMA_K.name, LLAMA_K.shape, LLAMA_K.role, LLAMA_K.gguf)
Q_NORM = TensorRow("self_attn.q_norm.weight", ("head_dim",), "vector", "attn_q_norm.weight", hf_offset=1.0)
K_NORM = TensorRow("self_attn.k_norm.weight", ("head_dim",), "vector", "attn_k_norm.weight", hf_offset=1.0)
POST_ATTN_NORM = TensorRow("post_attention_layernorm.weight", (H,), "vector", "post_attention_norm.weight",
                           hf_offset=1.0)
PRE_FFN_NORM = TensorRow("pre_feedforward_layernorm.weight", (H,), "vector", "ffn_norm.weight", hf_offset=1.0)
POST_FFN_NORM = TensorRow("post_feedforward_layernorm.weight", (H,), "vector", "post_ffw_norm.weight",
                          hf_offset=1.0)

GEMMA2_LAYER = (ATTN_NORM, Q_PROJ, K_PROJ, V_PROJ, LLAMA_O, POST_ATTN_NORM, PRE_FFN_NORM, GATE_PROJ, UP_PROJ,
                LLAMA_DOWN, POST_FFN_NORM)
GEMMA3_LAYER = (ATTN_NORM, Q_PROJ, Q_NORM, K_PROJ, K_NORM, V_PROJ, LLAMA_O, POST_ATTN_NORM, PRE_FFN_NORM, GATE_PROJ,
                UP_PROJ, LLAMA_DOWN, POST_FFN_NORM)


# ---------------------------------------------------------------------------------------
# graph


def _graph(c: ModelConfig, head_norms: bool) -> Graph:
    # the residual stream, and the attention and MLP outputs before their post-norms: f32 in
    # both kernel variants (Gemma's block outputs can exceed f16's range, which is why
    # transformers runs Gemma in bf16 or f32, never f16)
    acts = [Activation("x", c.hidden_size, "f32"), Activation("o", c.hidden_size, "f32"),
            Activation("xn", c.hidden_size), Activation("q", c.q_size), Activation("k", c.kv_size),
            Activation("v", c.kv_size), Activation("attn", c.q_size),
            Activation("gate", c.intermediate_size), Activation("up", c.intermediate_size),
            Activation("x_last", c.hidden_size, last_token=True)]
    if head_norms:
        acts += [Activation("q_proj", c.q_size), Activation("k_proj", c.kv_size)]

    def layer(i: int) -> tuple[Op, ...]:
        p = LAYER_PREFIX.format(i)
        sliding = c.is_sliding(i)
        if head_norms:  # Gemma 3: per-head RMSNorm of q and k before RoPE
            qkv = (Op("linear", ("xn",), "q_proj", p + Q_PROJ.name, "q_proj"),
                   Op("rmsnorm", ("q_proj",), "q", p + Q_NORM.name, "q_norm"),
                   Op("linear", ("xn",), "k_proj", p + K_PROJ.name, "k_proj"),
                   Op("rmsnorm", ("k_proj",), "k", p + K_NORM.name, "k_norm"))
        else:
            qkv = (Op("linear", ("xn",), "q", p + Q_PROJ.name, "q_proj"),
                   Op("linear", ("xn",), "k", p + K_PROJ.name, "k_proj"))
        return (
            Op("rmsnorm", ("x",), "xn", p + ATTN_NORM.name, "input_layernorm"),
            *qkv,
            Op("linear", ("xn",), "v", p + V_PROJ.name, "v_proj"),
            Op("rope", ("q", "k"), label="rope", rope=c.rope_local if sliding else None),
            Op("attention", ("q", "k", "v"), "attn", label="attention", scale=c.attention_scale,
               cap=c.attn_logit_softcap, window=c.sliding_window if sliding else 0),
            Op("linear", ("attn",), "o", p + LLAMA_O.name, "o_proj"),
            Op("rmsnorm", ("o",), "xn", p + POST_ATTN_NORM.name, "post_attention_layernorm"),
            Op("add", ("x", "xn"), "x", label="residual"),
            Op("rmsnorm", ("x",), "xn", p + PRE_FFN_NORM.name, "pre_feedforward_layernorm"),
            Op("linear", ("xn",), "gate", p + GATE_PROJ.name, "gate_proj"),
            Op("linear", ("xn",), "up", p + UP_PROJ.name, "up_proj"),
            Op("gelu_tanh_mul", ("gate", "up"), "gate", label="gelu_tanh_mul"),
            Op("linear", ("gate",), "o", p + LLAMA_DOWN.name, "down_proj"),
            Op("rmsnorm", ("o",), "xn", p + POST_FFN_NORM.name, "post_feedforward_layernorm"),
            Op("add", ("x", "xn"), "x", label="residual"),
        )

    head = EMBED.name if c.tie_word_embeddings else LM_HEAD.name
    head_ops = [Op("rmsnorm", ("x",), "x_last", NORM.name, "final norm (last token)"),
                Op("linear", ("x_last",), "logits", head, "lm_head")]
    if c.final_logit_softcap:
        head_ops.append(Op("softcap", ("logits",), "logits", label="final logit softcap", cap=c.final_logit_softcap))
    return Graph(activations=tuple(acts),
                 embed=(Op("embedding", ("tokens",), "x", EMBED.name, "embed", scale=c.embed_scale),),
                 layers=tuple(layer(i) for i in range(c.num_hidden_layers)), head=tuple(head_ops))


def gemma2_graph(c: ModelConfig) -> Graph:
    return _graph(c, head_norms=False)


def gemma3_graph(c: ModelConfig) -> Graph:
    return _graph(c, head_norms=True)


GEMMA2 = Architecture(name="gemma2", hf_architectures=("Gemma2ForCausalLM",),
                      model_types={"gemma2": "Gemma2ForCausalLM"},
                      gguf_architectures={"gemma2": "Gemma2ForCausalLM"}, resolve=resolve_gemma2,
                      global_rows=(EMBED, NORM, LM_HEAD), layer_rows=GEMMA2_LAYER, tensors=table(GEMMA2_LAYER, NORM),
                      graph=gemma2_graph)
GEMMA3 = Architecture(name="gemma3", hf_architectures=("Gemma3ForCausalLM",),
                      model_types={"gemma3_text": "Gemma3ForCausalLM"},
                      gguf_architectures={"gemma3": "Gemma3ForCausalLM"},
                      resolve=resolve_gemma3, global_rows=(EMBED, NORM, LM_HEAD), layer_rows=GEMMA3_LAYER,
                      tensors=table(GEMMA3_LAYER, NORM), graph=gemma3_graph)
