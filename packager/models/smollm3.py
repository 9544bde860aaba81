"""SmolLM3: the Llama block in which some layers apply no rotary embedding (NoPE).

Specification: transformers' models/smollm3/modeling_smollm3.py and its config:
`no_rope_layers[i]` is 1 where layer i applies RoPE and 0 where it does not (default:
every no_rope_layer_interval-th layer, counting from 1, is a NoPE layer). A NoPE layer's
graph simply has no rope op; its keys go to the KV cache unrotated. Sliding windows
(use_sliding_window, only on NoPE layers) are refused when a layer would use one, and
attention / MLP biases are refused. llama.cpp's GGUF architecture "smollm3" names the
tensors as for Llama and, like its Llama conversion, permutes the q/k rows.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import PackError
from .base import Graph, ModelConfig
from .llama import LAYER, config_fields, decoder_graph, llama_like, parse_config


def resolve(raw: dict) -> dict:
    c = parse_config(raw, "smollm3")
    if getattr(c, "attention_bias", False) or getattr(c, "mlp_bias", False):
        raise PackError("SmolLM3 checkpoints with attention_bias / mlp_bias are not supported")
    uses_rope = list(c.no_rope_layers)
    if len(uses_rope) < c.num_hidden_layers or any(v not in (0, 1) for v in uses_rope):
        raise PackError(f"config.json: no_rope_layers must hold a 0 or 1 for each of the {c.num_hidden_layers} "
                        "layers (1: the layer applies RoPE)")
    nope = tuple(i for i in range(c.num_hidden_layers) if not uses_rope[i])
    return {**config_fields(c), "nope_layers": nope}


def graph(c: ModelConfig) -> Graph:
    g = decoder_graph(c)
    return replace(g, layers=tuple(tuple(op for op in ops if not (op.kind == "rope" and i in c.nope_layers))
                                   for i, ops in enumerate(g.layers)))


SMOLLM3 = llama_like("smollm3", {"smollm3": "SmolLM3ForCausalLM"}, {"smollm3": "SmolLM3ForCausalLM"}, resolve,
                     LAYER, graph)
