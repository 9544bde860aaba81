"""packager/models: the config resolved once, the tensor table and the graph of every
architecture definition, and the registry."""

from __future__ import annotations

import json

import pytest

from packager.errors import PackError
from packager.models import (
    ARCHITECTURES,
    DEFINITIONS,
    ModelConfig,
    config_from_manifest,
    definition,
    resolve_config,
    resolve_context_window,
)
from packager.models.base import OP_KINDS
from packager.models.llama import LLAMA


def tiny_config(tiny_llama, variant="gqa", **kw) -> ModelConfig:
    return resolve_config(json.loads((tiny_llama(variant) / "config.json").read_text()), **kw)


def test_resolve_config(tiny_llama):
    c = tiny_config(tiny_llama, "llama3")
    assert (c.architecture, c.hf_architecture) == ("llama", "LlamaForCausalLM")
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.q_size, c.kv_size) == (4, 2, 16, 64, 32)
    assert c.rope.type == "llama3" and c.rope.original_max_position_embeddings == 32
    assert c.context_window == 256  # min(max_position_embeddings, 4096)
    assert not tiny_config(tiny_llama, "untied").tie_word_embeddings and c.tie_word_embeddings
    with pytest.raises(AttributeError):
        c.hidden_size = 8  # frozen
    # the manifest's form round-trips; the context window is stored beside it
    manifest = {"model": {"hf_architecture": c.hf_architecture, "config": json.loads(json.dumps(c.to_json()))},
                "memory": {"context_window": 128}}
    back = config_from_manifest(manifest)
    assert back == ModelConfig(**{**c.__dict__, "context_window": 128})
    assert config_from_manifest(manifest, 64).context_window == 64
    assert "context_window" not in c.to_json() and "architecture" not in c.to_json()


def test_context_window_has_one_default_one_bound_one_message(tiny_llama, packaged_tiny):
    assert resolve_context_window(256, None) == 256 and resolve_context_window(100_000, None) == 4096
    assert resolve_context_window(256, 16) == 16 and resolve_context_window(256, 256) == 256
    message = "--context-window 8 must be between 16 and the model's max_position_embeddings (256)"
    for bad in (8, 257, 0):
        with pytest.raises(PackError, match="--context-window"):
            resolve_context_window(256, bad)
    with pytest.raises(PackError) as packaging:
        tiny_config(tiny_llama, context_window=8)
    from packager.plan import build_plan

    manifest = json.loads((packaged_tiny("gqa", "q4f32", quantizer="rtn") / "manifest.json").read_text())
    with pytest.raises(PackError) as planning:
        build_plan(manifest, context_window=8)
    assert str(packaging.value) == str(planning.value) == message


def test_registry():
    assert set(ARCHITECTURES) == {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                                  "Phi3ForCausalLM", "SmolLM3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"}
    assert definition("MistralForCausalLM") is definition("llama") is LLAMA
    assert definition("Qwen2ForCausalLM").name == "qwen2"
    assert definition("qwen3").hf_architectures == ("Qwen3ForCausalLM",)
    with pytest.raises(PackError, match="unsupported architecture 'GPT2LMHeadModel'; supported: LlamaForCausalLM"):
        definition("GPT2LMHeadModel")
    with pytest.raises(PackError, match="unsupported architecture 'gpt2'"):
        resolve_config({"model_type": "gpt2", "vocab_size": 8})


def test_mistral_sliding_window(tiny_llama):
    raw = json.loads((tiny_llama("gqa") / "config.json").read_text())
    raw.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None)
    c = resolve_config(raw)
    assert (c.architecture, c.hf_architecture) == ("llama", "MistralForCausalLM")
    assert c.sliding_window == 0 and not any(c.is_sliding(i) for i in range(c.num_hidden_layers))
    # a window shorter than the context: every layer slides (transformers' Mistral)
    c = resolve_config({**raw, "sliding_window": 32})
    assert c.sliding_window == 32 and all(c.is_sliding(i) for i in range(c.num_hidden_layers))
    assert all(op.window == 32 for ops in LLAMA.graph(c).layers for op in ops if op.kind == "attention")
    # one that covers max_position_embeddings (256) changes nothing
    assert resolve_config({**raw, "sliding_window": 256}).sliding_window == 0
    # Llama's own config has no window; Qwen's windows stay refused (tests/test_architectures.py)
    with pytest.raises(PackError, match="sliding_window"):  # (transformers refuses it first)
        resolve_config({**raw, "sliding_window": "32"})


@pytest.mark.parametrize("variant", ["gqa", "untied"])
def test_llama_tensor_table_is_the_checkpoints(tiny_llama, variant):
    from safetensors import safe_open

    c = tiny_config(tiny_llama, variant)
    with safe_open(tiny_llama(variant) / "model.safetensors", "np") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    table = LLAMA.tensors(c)
    assert {t.name: t.shape for t in table} == shapes
    roles = {t.name: t.role for t in table}
    assert roles["model.embed_tokens.weight"] == ("head" if c.tie_word_embeddings else "embedding")
    assert roles["model.layers.1.mlp.down_proj.weight"] == "sensitive" and roles["model.norm.weight"] == "vector"


def test_gguf_names():
    name, row = LLAMA.from_gguf("blk.3.attn_k.weight")
    assert name == "model.layers.3.self_attn.k_proj.weight" and row.gguf_rope_heads == "num_key_value_heads"
    assert LLAMA.from_gguf("output.weight")[0] == "lm_head.weight"
    assert LLAMA.from_gguf("blk.0.ffn_down.weight")[0] == "model.layers.0.mlp.down_proj.weight"
    assert LLAMA.from_gguf("rope_freqs.weight") is None and LLAMA.from_gguf("blk.x.attn_q.weight") is None


@pytest.mark.parametrize("d", DEFINITIONS, ids=lambda d: d.name)
@pytest.mark.parametrize("tied", [True, False])
def test_graph_reads_the_tensor_table(d, tied, tiny_llama):
    """Every op is in the plan's vocabulary, reads activations written before it and
    tensors of the table, and every tensor of the table is read by some op."""
    c = ModelConfig(**{**tiny_config(tiny_llama).__dict__, "tie_word_embeddings": tied})
    g = d.graph(c)
    tensors = {t.name for t in d.tensors(c)}
    written, read = {"tokens"}, set()
    for op in [*g.embed, *(op for layer in g.layers for op in layer), *g.head]:
        assert op.kind in OP_KINDS
        assert set(op.inputs) <= written, (op, written)
        written |= {op.out} if op.out else set()
        if op.weight:
            assert op.weight in tensors, op
            read.add(op.weight)
    assert read == tensors
    assert "logits" in written and {a.name for a in g.activations} == written - {"tokens", "logits"}
    assert len(g.layers) == c.num_hidden_layers


def test_plan_follows_the_graph(packaged_tiny):
    """The plan's dispatches are the graph's ops, in order (attention: the KV-cache append first),
    without fused lowerings (those: tests/test_fuse_*.py)."""
    from packager.plan import build_plan

    manifest = json.loads((packaged_tiny("gqa", "q4f32", quantizer="rtn") / "manifest.json").read_text())
    plan, _ = build_plan(manifest, fuse=False)
    g = LLAMA.graph(config_from_manifest(manifest))
    expected = [op.label for op in g.embed]
    for i, ops in enumerate(g.layers):
        for op in ops:
            expected += [f"layer {i} kv_append"] if op.kind == "attention" else []
            expected.append(f"layer {i} {op.label}")
    expected += [op.label for op in g.head]
    assert [d["label"] for d in plan["entries"]["prefill"]["dispatches"]] == expected
