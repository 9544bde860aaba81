"""Qwen2 (Qwen2, Qwen2.5): the Llama block with biases on the q, k and v projections.

Specification: transformers' models/qwen2/modeling_qwen2.py. q_proj, k_proj and v_proj
are nn.Linear(bias=True) (o_proj and the MLP have none); everything else is Llama's.
Sliding-window attention (use_sliding_window, off in the released models) is refused
when a layer would use it. llama.cpp (GGUF architecture "qwen2") keeps the q/k rows in
Hugging Face's order (its RoPE for qwen2 is the rotate_half one).
"""

from __future__ import annotations

from dataclasses import replace

from .base import Graph, ModelConfig, Op, TensorRow
from .llama import (
    ATTN_NORM,
    DOWN_PROJ,
    GATE_PROJ,
    K_PROJ,
    KV,
    MLP_NORM,
    O_PROJ,
    Q_PROJ,
    UP_PROJ,
    V_PROJ,
    Q,
    config_fields,
    decoder_graph,
    llama_like,
    parse_config,
)


def resolve(raw: dict) -> dict:
    return config_fields(parse_config(raw, "qwen2"))


# llama.cpp does not permute the q/k rows of qwen2 (no gguf_rope_heads)
Q_WEIGHT = replace(Q_PROJ, gguf_rope_heads="")
K_WEIGHT = replace(K_PROJ, gguf_rope_heads="")
Q_BIAS = TensorRow("self_attn.q_proj.bias", (Q,), "vector", "attn_q.bias")
K_BIAS = TensorRow("self_attn.k_proj.bias", (KV,), "vector", "attn_k.bias")
V_BIAS = TensorRow("self_attn.v_proj.bias", (KV,), "vector", "attn_v.bias")

LAYER = (ATTN_NORM, Q_WEIGHT, Q_BIAS, K_WEIGHT, K_BIAS, V_PROJ, V_BIAS, O_PROJ, MLP_NORM, GATE_PROJ, UP_PROJ,
         DOWN_PROJ)


def qkv_with_biases(p: str) -> tuple[Op, ...]:
    return (Op("linear", ("xn",), "q", p + Q_WEIGHT.name, "q_proj"),
            Op("bias_add", ("q",), "q", p + Q_BIAS.name, "q_proj bias"),
            Op("linear", ("xn",), "k", p + K_WEIGHT.name, "k_proj"),
            Op("bias_add", ("k",), "k", p + K_BIAS.name, "k_proj bias"),
            Op("linear", ("xn",), "v", p + V_PROJ.name, "v_proj"),
            Op("bias_add", ("v",), "v", p + V_BIAS.name, "v_proj bias"))


def graph(c: ModelConfig) -> Graph:
    return decoder_graph(c, qkv_with_biases)


QWEN2 = llama_like("qwen2", {"qwen2": "Qwen2ForCausalLM"}, {"qwen2": "Qwen2ForCausalLM"}, resolve, LAYER, graph)
