"""Qwen2ForCausalLM and Qwen3ForCausalLM end to end, on tiny random checkpoints built from
transformers' own classes (tests/checkpoints.py, TINY_QWEN: non-trivial q/k/v biases and
q/k norms; Qwen3 with a head_dim other than hidden / heads):

- the tensor table is the checkpoint's, the config is resolved (sliding windows refused
  only when a layer uses one), llama.cpp's GGUF names map onto the table;
- the numpy reference of an f32 bundle against transformers' logits (prefill, then
  decode steps on both KV caches);
- the plan on wgpu-py (lavapipe), f32 and f16 kernels, against the reference;
- the plan on the runtime's Wasm backend (one Node process for every case) against the
  reference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from checkpoints import TINY_QWEN
from conftest import hf_stepwise_logits
from gpu_executor import GpuExecutor
from packager.compile import compile_artifacts
from packager.errors import PackError
from packager.models import definition, resolve_config
from packager.reference import ReferenceModel
from plan_cases import rel
from test_plan_gpu import DECODE_STEPS, F16_TOL, F32_TOL, compare, gpu_run, manifest_of, prompts, reference_run

HF_TOL = 1e-4  # f32 bundle, numpy reference vs transformers: measured 4e-7 .. 8e-7


def raw_config(tiny_llama, variant: str) -> dict:
    return json.loads((tiny_llama(variant) / "config.json").read_text())


# ---------------------------------------------------------------------------------------
# definitions: config, tensor table, GGUF names


@pytest.mark.parametrize("variant", list(TINY_QWEN))
def test_tensor_table_is_the_checkpoints(tiny_llama, variant):
    from safetensors import safe_open

    c = resolve_config(raw_config(tiny_llama, variant))
    hf = "Qwen2ForCausalLM" if variant.startswith("qwen2") else "Qwen3ForCausalLM"
    assert c.hf_architecture == hf and definition(hf).name == c.architecture
    with safe_open(tiny_llama(variant) / "model.safetensors", "np") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    table = definition(hf).tensors(c)
    assert {t.name: t.shape for t in table} == shapes
    roles = {t.name: t.role for t in table}
    extra = ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"] if hf.startswith("Qwen2") \
        else ["self_attn.q_norm.weight", "self_attn.k_norm.weight"]
    assert all(roles[f"model.layers.1.{name}"] == "vector" for name in extra)  # kept f32 by every scheme


def test_qwen3_head_dim_is_explicit(tiny_llama):
    c = resolve_config(raw_config(tiny_llama, "qwen3"))
    assert (c.hidden_size, c.num_attention_heads, c.head_dim, c.q_size) == (64, 4, 32, 128)
    raw = {**raw_config(tiny_llama, "qwen3"), "attention_bias": True}
    with pytest.raises(PackError, match="attention_bias"):
        resolve_config(raw)


@pytest.mark.parametrize("variant", ["qwen2", "qwen3"])
def test_sliding_window_refused_only_when_used(tiny_llama, variant):
    raw = raw_config(tiny_llama, variant)
    del raw["layer_types"]  # (transformers derives it from the window settings, as for a Hub config.json)
    # what released Qwen2 configs carry: a window, switched off
    assert resolve_config({**raw, "sliding_window": 32, "use_sliding_window": False}).architecture == variant
    # switched on, but only for layers from max_window_layers on: none here (2 layers)
    on = {**raw, "sliding_window": 32, "use_sliding_window": True}
    assert resolve_config({**on, "max_window_layers": 2}).architecture == variant
    with pytest.raises(PackError, match="sliding-window attention"):
        resolve_config({**on, "max_window_layers": 1})


def test_gguf_names():
    qwen2, qwen3 = definition("qwen2"), definition("qwen3")
    name, row = qwen2.from_gguf("blk.2.attn_q.bias")
    assert name == "model.layers.2.self_attn.q_proj.bias" and row.role == "vector"
    name, row = qwen2.from_gguf("blk.0.attn_k.weight")
    assert name == "model.layers.0.self_attn.k_proj.weight" and row.gguf_rope_heads == ""  # not permuted
    assert qwen3.from_gguf("blk.1.attn_q_norm.weight")[0] == "model.layers.1.self_attn.q_norm.weight"
    assert qwen3.from_gguf("blk.1.attn_k_norm.weight")[0] == "model.layers.1.self_attn.k_norm.weight"
    assert qwen3.from_gguf("blk.1.attn_q.bias") is None and qwen2.from_gguf("output.weight")[0] == "lm_head.weight"
    assert dict(qwen2.gguf_architectures) == {"qwen2": "Qwen2ForCausalLM"}
    assert dict(qwen3.gguf_architectures) == {"qwen3": "Qwen3ForCausalLM"}


# ---------------------------------------------------------------------------------------
# the numpy reference against transformers


@pytest.mark.parametrize("variant", list(TINY_QWEN))
def test_f32_logits_match_transformers(variant, tiny_llama, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from packager.bundle import package_model

    src = tiny_llama(variant)
    package_model(src, tmp_path / "b", quant="f32")
    ref = ReferenceModel(tmp_path / "b")
    assert ref.config.hf_architecture == raw_config(tiny_llama, variant)["architectures"][0]
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    prompt, tokens = rng.integers(0, 320, size=23).tolist(), rng.integers(0, 320, size=8).tolist()
    want = hf_stepwise_logits(hf, prompt, tokens)
    errs = [rel(ref.prefill(prompt), want[0])] + [rel(ref.decode(t), w) for t, w in zip(tokens, want[1:])]
    assert max(errs) < HF_TOL, errs
    print(f"{variant} reference vs transformers: max rel err {max(errs):.2e}")


# ---------------------------------------------------------------------------------------
# the plan on wgpu-py (f32 and f16 kernels) against the reference

# the q4f16 bundles use the default quantizer (GPTQ: the calibrator runs these graphs), the
# others plain rounding (faster to package; the plan is what is tested)
GPU_CASES = [("qwen2", "q4f16"), ("qwen2", "f32"), ("qwen2-untied", "q8f16"),
             ("qwen3", "q4f16"), ("qwen3", "f32"), ("qwen3-untied", "q3f16")]


@pytest.mark.parametrize("variant,quant", GPU_CASES)
def test_plan_on_gpu_matches_reference(packaged_tiny, variant, quant):
    bundle = packaged_tiny(variant, quant) if quant == "q4f16" else packaged_tiny(variant, quant, quantizer="rtn")
    ref = ReferenceModel(bundle)
    p1, p2 = prompts(ref.config.vocab_size)
    want, tokens = reference_run(ref, p1, p2, DECODE_STEPS)
    files, _ = compile_artifacts(manifest_of(bundle), context_window=ref.context_window, validate=False)
    plan = json.loads(files["plan.json"])
    templates = {k["template"] for k in plan["kernels"].values()}
    assert ("bias_add" in templates) == variant.startswith("qwen2")  # prefill's; decode fuses the biases
    assert ("matvec_rope_bias" in templates) == ("matvec_bias" in templates) == variant.startswith("qwen2")
    assert any(k["template"] == "rmsnorm" and k["consts"]["IN"] == "act" for k in plan["kernels"].values()) == \
        variant.startswith("qwen3")
    for kv in plan["variant_order"]:
        ex = GpuExecutor(bundle, files=files, variant=kv)
        err = compare(gpu_run(ex, p1, p2, tokens), want, F32_TOL if kv == "f32" else F16_TOL)
        print(f"{variant} {quant} wgpu {kv}: max rel err {err:.2e}")

# The plan on the runtime's Wasm backend (Node) and WebGPU backend (Deno): the Qwen cases of
# tests/test_wasm_plan.py and tests/test_runtime_deno.py.
