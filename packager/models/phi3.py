"""Phi-3 (Phi-3-mini 4k/128k, Phi-3.5-mini, Phi-4-mini): the Llama block with fused
projections, partial rotary embeddings and LongRoPE.

Specification: transformers' models/phi3/modeling_phi3.py.

- `self_attn.qkv_proj` is one matrix of q_size + 2 kv_size rows (q, then k, then v) and
  `mlp.gate_up_proj` one of 2 intermediate_size rows (gate, then up; the MLP is
  down(up * silu(gate))). The bundle stores them fused, as the checkpoint and llama.cpp's
  GGUF do (`attn_qkv`, and `ffn_up` holding gate and up), and the graph reads q, k, v,
  gate and up as row views of them (`Op.rows`: a weight buffer is a byte range of a part,
  docs/plan.md, so a view costs nothing and needs no kernel). Splitting at pack time
  would need a per-architecture transform between the checkpoint and the tensors, in
  the HF and GGUF readers both; views keep checkpoint -> tensors one to one. The fused
  matrix shares its input, so GPTQ's Hessian (of xn) is the same for all its rows.
  Its role is "sensitive" (v's rows are in it; llama.cpp's low-bit mixes likewise keep
  attn_qkv at the precision of attn_v).
- partial_rotary_factor (Phi-4-mini: 0.75) rotates the first int(head_dim * factor)
  values of each head; LongRoPE (rope_scaling type "longrope") divides the frequencies
  by short_factor and scales cos/sin by the attention factor: packager/rope.py, which
  also states the one table a bundle uses and the context windows it is exact for (at
  most original_max_position_embeddings).
- sliding_window: transformers masks keys more than sliding_window - 1 positions back
  in every layer (the mask Mistral uses). A window shorter than max_position_embeddings
  makes every layer a sliding one (ModelConfig.sliding_window, layer_types), run over
  ring-buffer KV caches (docs/plan.md, "Sliding-window layers"); checked against
  transformers with a window of 16 (tests/test_phi3_smollm3.py). Phi-3-mini-4k: 2047 of
  4096; Phi-3.5 / Phi-4-mini: 262144, longer than the model, never a window.

llama.cpp (GGUF architecture "phi3") keeps the q/k rows in Hugging Face's order (its phi3
RoPE is the rotate_half one) and stores LongRoPE's factor lists as the tensors
`rope_factors_long.weight` / `rope_factors_short.weight`, which packager/gguf_source.py
reads into config.json's rope_scaling: they are configuration, not weights of the bundle.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import PackError
from .base import LAYER_PREFIX, Graph, ModelConfig, Op, TensorRow
from .llama import (
    ATTN_NORM,
    DOWN_PROJ,
    GATE_PROJ,
    MLP_NORM,
    O_PROJ,
    UP_PROJ,
    H,
    config_fields,
    decoder_graph,
    llama_like,
    parse_config,
)


def resolve(raw: dict) -> dict:
    window = raw.get("sliding_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
        raise PackError(f"config.json: sliding_window must be a positive integer or null, not {str(window)[:40]}")
    from transformers.utils import logging as hf_logging

    # (parse_config's window check is Llama's; Phi-3's window is resolved below.) transformers
    # warns, for every LongRoPE config the Hub has, that it should give `factor` rather than
    # original_max_position_embeddings: not the user's to fix, so not shown
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        c = parse_config({**raw, "sliding_window": None}, "phi3")
    finally:
        hf_logging.set_verbosity(level)
    fields = config_fields(c, partial_rotary=True)
    rotary = fields["rope"].rotary_dim(fields["head_dim"])
    if rotary % 2 or rotary == 0:
        raise PackError(f"partial_rotary_factor {fields['rope'].partial_rotary_factor} gives {rotary} rotary "
                        f"dimensions of head_dim {fields['head_dim']}; they must be a positive even number")
    if window and window < fields["max_position_embeddings"]:  # (a longer one never applies)
        fields.update(sliding_window=window, layer_types=("sliding_attention",) * fields["num_hidden_layers"])
    return fields


QKV_PROJ = TensorRow("self_attn.qkv_proj.weight", ("qkv_size", H), "sensitive", "attn_qkv.weight")
GATE_UP_PROJ = TensorRow("mlp.gate_up_proj.weight", ("gate_up_size", H), "matrix", "ffn_up.weight")

LAYER = (ATTN_NORM, QKV_PROJ, O_PROJ, MLP_NORM, GATE_UP_PROJ, DOWN_PROJ)


def graph(c: ModelConfig) -> Graph:
    """Llama's graph with q, k, v read from qkv_proj's rows and gate, up from gate_up_proj's."""
    Q, KV, FF = c.q_size, c.kv_size, c.intermediate_size

    def qkv_views(p: str) -> tuple[Op, ...]:
        w = p + QKV_PROJ.name
        return (Op("linear", ("xn",), "q", w, "qkv_proj (q)", rows=(0, Q)),
                Op("linear", ("xn",), "k", w, "qkv_proj (k)", rows=(Q, Q + KV)),
                Op("linear", ("xn",), "v", w, "qkv_proj (v)", rows=(Q + KV, Q + 2 * KV)))

    g = decoder_graph(c, qkv_views)
    views = {GATE_PROJ.name: ("gate_up_proj (gate)", (0, FF)), UP_PROJ.name: ("gate_up_proj (up)", (FF, 2 * FF))}

    def fused_mlp(i: int, ops: tuple[Op, ...]) -> tuple[Op, ...]:
        p = LAYER_PREFIX.format(i)
        out = []
        for op in ops:
            name = op.weight[len(p):] if op.weight.startswith(p) else ""
            if name in views:
                label, rows = views[name]
                op = replace(op, weight=p + GATE_UP_PROJ.name, label=label, rows=rows)
            out.append(op)
        return tuple(out)

    return replace(g, layers=tuple(fused_mlp(i, ops) for i, ops in enumerate(g.layers)))


PHI3 = llama_like("phi3", {"phi3": "Phi3ForCausalLM"}, {"phi3": "Phi3ForCausalLM"}, resolve, LAYER, graph)
