"""Qwen3: the Llama block with an RMSNorm over each head of q and of k (q_norm, k_norm:
head_dim weights), applied before RoPE, and an explicit head_dim (which may differ from
hidden_size / num_attention_heads).

Specification: transformers' models/qwen3/modeling_qwen3.py:
q = q_norm(q_proj(x).view(..., heads, head_dim)), k likewise, then RoPE; the norms use
rms_norm_eps. The released models have no attention biases (attention_bias=false, the
only setting supported here). Sliding-window attention is refused when a layer would use
it. llama.cpp (GGUF architecture "qwen3") keeps the q/k rows in Hugging Face's order.
"""

from __future__ import annotations

from ..errors import PackError
from .base import Activation, Graph, ModelConfig, Op, TensorRow
from .llama import (
    ATTN_NORM,
    DOWN_PROJ,
    GATE_PROJ,
    MLP_NORM,
    O_PROJ,
    UP_PROJ,
    V_PROJ,
    config_fields,
    decoder_graph,
    llama_like,
    parse_config,
)
from .qwen2 import K_WEIGHT, Q_WEIGHT


def resolve(raw: dict) -> dict:
    c = parse_config(raw, "qwen3")
    if getattr(c, "attention_bias", False):  # biases on q, k, v and o_proj
        raise PackError("Qwen3 checkpoints with attention_bias are not supported")
    return config_fields(c)


Q_NORM = TensorRow("self_attn.q_norm.weight", ("head_dim",), "vector", "attn_q_norm.weight")
K_NORM = TensorRow("self_attn.k_norm.weight", ("head_dim",), "vector", "attn_k_norm.weight")

LAYER = (ATTN_NORM, Q_WEIGHT, Q_NORM, K_WEIGHT, K_NORM, V_PROJ, O_PROJ, MLP_NORM, GATE_PROJ, UP_PROJ, DOWN_PROJ)


def qkv_with_head_norms(p: str) -> tuple[Op, ...]:
    """q_proj and k_proj write q_proj / k_proj; their per-head norms write q and k."""
    return (Op("linear", ("xn",), "q_proj", p + Q_WEIGHT.name, "q_proj"),
            Op("rmsnorm", ("q_proj",), "q", p + Q_NORM.name, "q_norm"),
            Op("linear", ("xn",), "k_proj", p + K_WEIGHT.name, "k_proj"),
            Op("rmsnorm", ("k_proj",), "k", p + K_NORM.name, "k_norm"),
            Op("linear", ("xn",), "v", p + V_PROJ.name, "v_proj"))


def graph(c: ModelConfig) -> Graph:
    return decoder_graph(c, qkv_with_head_norms, (Activation("q_proj", c.q_size), Activation("k_proj", c.kv_size)))


QWEN3 = llama_like("qwen3", {"qwen3": "Qwen3ForCausalLM"}, {"qwen3": "Qwen3ForCausalLM"}, resolve, LAYER, graph)
