"""Gemma2ForCausalLM, Gemma3ForCausalLM and Mistral with a sliding window, end to end, on tiny
random checkpoints built from transformers' own classes (tests/checkpoints.py, TINY_GEMMA:
window 16, local and global layers mixed, Gemma 2's soft-caps, Gemma 3's q/k norms and two
RoPEs):

- the tensor table is the checkpoint's (norms stored as 1 + weight), the config is resolved
  (a real Gemma 3 config.json's legacy rope keys included; vision towers refused);
- the numpy reference of an f32 bundle against transformers' logits (a 23-token prompt,
  longer than the window, then decode steps) and 32 greedy tokens; a q4f16 bundle's greedy
  tokens against transformers run on the bundle's dequantized weights;
- the plan on wgpu-py (lavapipe), f32 and f16 kernels, against the reference, with a
  prefill chunk of 8 so that the sliding layers' ring buffers wrap around; Gemma 3 in the
  runtime's WebGPU backend on Node's Dawn (greedy tokens);
- Gemma 3's 262,144-token tied table: planned at 270M's shapes within a 128 MiB binding, and
  a tiny 262k-vocabulary model split into row blocks on wgpu.

The plan on the runtime's Wasm backend (Node) and WebGPU backend (Deno): the gemma cases of
tests/test_wasm_plan.py and tests/test_runtime_deno.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import hf_greedy, hf_stepwise_logits
from gpu_executor import GpuExecutor
from packager.compile import compile_artifacts
from packager.errors import PackError
from packager.models import definition, resolve_config
from packager.plan import build_plan
from packager.reference import ReferenceModel
from plan_cases import rel
from test_plan_gpu import DECODE_STEPS, F16_TOL, F32_TOL, compare, gpu_run, manifest_of, prompts, reference_run
from test_runtime_e2e import js_env  # noqa: F401  (the fixture: Node with a WebGPU adapter)

HF_TOL = 1e-4  # f32 bundle, numpy reference vs transformers: measured 3e-7 .. 1.8e-6
GREEDY = 32
# the plan with small prefill chunks: the sliding layers' caches are rings of 16 + 8 rows,
# which the test prompts (37 + 21 tokens, then decode steps) wrap around several times
RING = {"prefill_chunk": 8, "context_window": 128}


def raw_config(tiny_llama, variant: str) -> dict:
    return json.loads((tiny_llama(variant) / "config.json").read_text())


def hf_model(src):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()


# ---------------------------------------------------------------------------------------
# definitions: config, tensor table


@pytest.mark.parametrize("variant", ["gemma2", "gemma3", "gemma3-untied"])
def test_tensor_table_is_the_checkpoints(tiny_llama, variant):
    from safetensors import safe_open

    c = resolve_config(raw_config(tiny_llama, variant))
    hf = "Gemma2ForCausalLM" if variant == "gemma2" else "Gemma3ForCausalLM"
    assert c.hf_architecture == hf and definition(hf).name == c.architecture
    with safe_open(tiny_llama(variant) / "model.safetensors", "np") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    table = definition(hf).tensors(c)
    assert {t.name: t.shape for t in table} == shapes
    offsets = {t.name: t.hf_offset for t in table}
    for name, off in offsets.items():  # Gemma's (1 + weight) norms, and nothing else
        assert off == (1.0 if name.endswith("norm.weight") else 0.0), name


def test_config_resolved(tiny_llama):
    g2 = resolve_config(raw_config(tiny_llama, "gemma2"))
    assert g2.layer_types == ("sliding_attention", "full_attention", "sliding_attention")
    assert [g2.is_sliding(i) for i in range(3)] == [True, False, True] and g2.sliding_window == 16
    assert (g2.attn_logit_softcap, g2.final_logit_softcap) == (4.0, 6.0)
    assert g2.attention_scale == 24 ** -0.5 and g2.embed_scale == float(np.float32(8.0)) and g2.rope_local is None
    g3 = resolve_config(raw_config(tiny_llama, "gemma3"))
    assert (g3.head_dim, g3.q_size, g3.attn_logit_softcap, g3.final_logit_softcap) == (32, 128, 0.0, 0.0)
    assert g3.rope.type == "linear" and g3.rope.factor == 8.0 and g3.rope.theta == 1e6
    assert g3.rope_local.type == "default" and g3.rope_local.theta == 10000.0
    ops = definition("gemma3").graph(g3).layers
    ropes = [[op.rope for op in layer if op.kind == "rope"][0] for layer in ops]
    assert ropes == [g3.rope_local, g3.rope_local, None, g3.rope_local]  # None: the config's (global) RoPE
    windows = [[op.window for op in layer if op.kind == "attention"][0] for layer in ops]
    assert windows == [16, 16, 0, 16]


def test_real_gemma3_config_json(tiny_llama):
    """A config.json as google/gemma-3-270m ships it: legacy rope keys, sliding_window_pattern."""
    raw = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 262144,
           "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
           "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
           "query_pre_attn_scalar": 256, "sliding_window": 512, "rope_theta": 1000000.0,
           "rope_local_base_freq": 10000.0, "rope_scaling": None, "hidden_activation": "gelu_pytorch_tanh",
           "final_logit_softcapping": None, "attn_logit_softcapping": None, "_sliding_window_pattern": 6,
           "layer_types": ["sliding_attention"] * 5 + ["full_attention"] + ["sliding_attention"] * 5
           + ["full_attention"] + ["sliding_attention"] * 5 + ["full_attention"]}
    c = resolve_config(raw)
    assert (c.architecture, c.context_window, c.sliding_window, c.vocab_size) == ("gemma3", 4096, 512, 262144)
    assert (c.rope.theta, c.rope.type, c.rope_local.theta) == (1e6, "default", 10000.0)
    assert [i for i in range(18) if not c.is_sliding(i)] == [5, 11, 17]
    # Gemma 3 4B's text config: linear scaling of the global layers' RoPE only
    c = resolve_config({**raw, "rope_scaling": {"rope_type": "linear", "factor": 8.0}})
    assert (c.rope.type, c.rope.factor, c.rope_local.type) == ("linear", 8.0, "default")


def test_refused_with_one_line(tiny_llama):
    with pytest.raises(PackError, match="Gemma3ForConditionalGeneration is not supported: it has a vision tower"):
        resolve_config({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                        "text_config": {}, "vision_config": {}})
    with pytest.raises(PackError, match="vision tower"):
        resolve_config({"model_type": "gemma3", "vocab_size": 8})
    raw = raw_config(tiny_llama, "gemma2")
    with pytest.raises(PackError, match="hidden_activation 'silu' is not supported"):
        resolve_config({**raw, "hidden_activation": "silu"})
    with pytest.raises(PackError, match="use_bidirectional_attention"):
        resolve_config({**raw_config(tiny_llama, "gemma3"), "use_bidirectional_attention": True})


# ---------------------------------------------------------------------------------------
# the numpy reference against transformers


@pytest.mark.parametrize("variant", ["gemma2", "gemma3", "mistral-window"])  # (gemma3-untied: on wgpu and Wasm)
def test_f32_logits_and_greedy_match_transformers(variant, tiny_llama, packaged_tiny):
    import torch

    src = tiny_llama(variant)
    ref = ReferenceModel(packaged_tiny(variant, "f32"))
    hf = hf_model(src)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 320, size=23).tolist()  # longer than the window (16)
    tokens = rng.integers(0, 320, size=8).tolist()
    want = hf_stepwise_logits(hf, prompt, tokens)
    errs = [rel(ref.prefill(prompt), want[0])] + [rel(ref.decode(t), w) for t, w in zip(tokens, want[1:])]
    assert max(errs) < HF_TOL, errs
    assert ref.greedy(prompt, GREEDY) == hf_greedy(hf, prompt, GREEDY)
    # the sliding window matters here: without it the logits are far off
    c = ref.config
    ref.graph = definition(c.architecture).graph(type(c)(**{**c.__dict__, "sliding_window": 0}))
    ref.reset()
    assert rel(ref.prefill(prompt)[-1], hf(torch.tensor([prompt])).logits[0, -1].detach().numpy()) > 100 * HF_TOL
    print(f"{variant} reference vs transformers: max rel err {max(errs):.2e}, {GREEDY} greedy tokens equal")


@pytest.mark.parametrize("variant", ["gemma2", "gemma3"])
def test_q4f16_greedy_equals_transformers_on_dequantized_weights(variant, tiny_llama, packaged_tiny):
    import torch

    bundle = packaged_tiny(variant, "q4f16")
    ref = ReferenceModel(bundle)
    hf = hf_model(tiny_llama(variant))
    offsets = {t.name: t.hf_offset for t in definition(ref.config.architecture).tensors(ref.config)}
    state = {k: torch.from_numpy(np.ascontiguousarray(v - np.float32(offsets[k]))) for k, v in ref.w.items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    prompt = np.random.default_rng(1).integers(3, 320, size=20).tolist()
    assert ref.greedy(prompt, GREEDY) == hf_greedy(hf, prompt, GREEDY)


# ---------------------------------------------------------------------------------------
# the plan on wgpu-py (f32 and f16 kernels) against the reference


def test_plan_has_ring_caches_and_rewind_limit(packaged_tiny):
    manifest = manifest_of(packaged_tiny("gemma3", "f32"))
    # the bundle's own plan (context 256, chunk 128): rings of 144 rows; only the global
    # layer's K and V grow with the context
    assert manifest["memory"]["kv_cache_bytes_per_token"] == 2 * 64 * 4
    plan, _ = build_plan(manifest, **RING)
    # sliding layers 0, 1, 3: window + chunk rows; the global layer 2: the context window
    rows = {i: plan["buffers"][f"k_cache.{i}"]["elements"] // (2 * 32) for i in range(4)}
    assert rows == {0: 24, 1: 24, 2: 128, 3: 24}
    assert plan["kv_rewind_limit"] == 24 - 16 + 1
    templates = {k["template"] for k in plan["kernels"].values()}
    assert {"gelu_tanh_mul", "rope"} <= templates and "silu_mul" not in templates
    assert len([k for k in plan["kernels"].values() if k["template"] == "rope"]) == 2  # local and global RoPE
    # a window that covers the context: full caches, no limit
    plan, _ = build_plan(manifest, context_window=16)
    assert "kv_rewind_limit" not in plan
    # Gemma 2's caps: one attention kernel per kind of layer, the final softcap after lm_head
    plan, _ = build_plan(manifest_of(packaged_tiny("gemma2", "f32")))
    labels = [d["label"] for d in plan["entries"]["decode"]["dispatches"]]
    assert labels[-2:] == ["lm_head", "final logit softcap"]
    caps = {k["consts"]["SOFTCAP"] for k in plan["kernels"].values() if k["template"].startswith("attention_")
            and "SOFTCAP" in k["consts"]}
    assert caps == {4.0}


GPU_CASES = [("gemma2", "f32"), ("gemma2", "q4f16"), ("gemma3", "q4f16"), ("gemma3-untied", "q8f16"),
             ("mistral-window", "f32")]


@pytest.mark.parametrize("variant,quant", GPU_CASES)
def test_plan_on_gpu_matches_reference(packaged_tiny, variant, quant):
    bundle = packaged_tiny(variant, quant) if quant == "q4f16" else packaged_tiny(variant, quant, quantizer="rtn")
    ref = ReferenceModel(bundle)
    p1, p2 = prompts(ref.config.vocab_size)
    files, _ = compile_artifacts(manifest_of(bundle), validate=False, **RING)
    plan = json.loads(files["plan.json"])
    assert plan["kv_rewind_limit"] == 9
    ref.context_window = 128
    want, tokens = reference_run(ref, p1, p2, DECODE_STEPS)
    for kv in plan["variant_order"]:
        ex = GpuExecutor(bundle, files=files, variant=kv)
        err = compare(gpu_run(ex, p1, p2, tokens), want, F32_TOL if kv == "f32" else F16_TOL)
        print(f"{variant} {quant} wgpu {kv}: max rel err {err:.2e}")


# ---------------------------------------------------------------------------------------
# the 262,144-token table of Gemma 3, tied to the head, split under the binding limit

GEMMA3_270M = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 262144,
               "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 1, "head_dim": 256, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
               "query_pre_attn_scalar": 256, "sliding_window": 512, "rope_theta": 1000000.0,
               "rope_local_base_freq": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
               "layer_types": ["sliding_attention", "full_attention"]}


def synthetic_manifest(raw: dict, quant: str) -> dict:
    """The tensor index a bundle of config.json `raw` would have (no weights)."""
    from quantization.formats import PART_ALIGN
    from quantization.policy import choose_format, get_scheme

    config = resolve_config(raw)
    scheme, tensors = get_scheme(quant), []
    for t in definition(config.architecture).tensors(config):
        fmt = choose_format(scheme, t.shape, t.role)
        parts, pos = [], 0
        for spec in fmt.parts(t.shape if len(t.shape) == 2 else (1, t.shape[0])):
            pos += -pos % PART_ALIGN
            parts.append({"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape), "offset": pos,
                          "bytes": spec.nbytes})
            pos += spec.nbytes
        tensors.append({"name": t.name, "shape": list(t.shape), "format": fmt.name, "parts": parts, "bytes": pos})
    return {"tensors": tensors, "quantization": {"scheme": quant, "compute": scheme.compute}}, config


@pytest.mark.parametrize("quant", ["q4f16", "f16"])
def test_plan_for_gemma3_270m_shapes(quant):
    """Gemma 3 270M's shapes (2 of its 18 layers) within the default 128 MiB binding: the tied
    table is split into row blocks that the embedding gather and the logits both run over,
    every buffer fits, the logits are [262144] f32, and the kernels compile."""
    manifest, config = synthetic_manifest(GEMMA3_270M, quant)
    files, _ = compile_artifacts(manifest, config=config)  # naga compiles every kernel
    plan = json.loads(files["plan.json"])
    limit = 128 << 20
    assert plan["requirements"]["limits"]["maxStorageBufferBindingSize"] <= limit
    table = [b for b in plan["buffers"].values() if b.get("tensor") == "model.embed_tokens.weight"]
    blocks = sorted({b["offset"] for b in table if b["part"] == "qweight" or b["part"] == "weight"})
    assert len(blocks) >= 2 and all(b["bytes"] <= limit for b in table)
    for entry in ("prefill", "decode"):
        labels = [d["label"] for d in plan["entries"][entry]["dispatches"]]
        assert sum(label.startswith("embed rows") for label in labels) == len(blocks)
        assert sum(label.startswith("lm_head rows") for label in labels) == len(blocks)
    assert plan["buffers"]["logits"] == {"kind": "output", "dtype": "f32", "elements": 262144}
    assert plan["requirements"]["limits"]["maxComputeWorkgroupsPerDimension"] <= 65535
    # the sliding layer's ring: 512 + 128 rows; the global layer: 4096
    assert plan["buffers"]["k_cache.0"]["elements"] == 640 * 256 and plan["buffers"]["k_cache.1"]["elements"] == \
        4096 * 256 and plan["kv_rewind_limit"] == 129


BIG_VOCAB = {"max_binding_size": 4 << 20}  # the 262144 x 64 table (q8f16) in 4 MiB blocks: 4 of them


def test_262k_vocab_split_table_on_gpu(packaged_tiny):
    """A tiny Gemma 3 with the real 262,144-token vocabulary, its tied table split into row
    blocks: the gather and the logits of tokens from every block, read back whole, match the
    reference (f16 and f32 kernels)."""
    bundle = packaged_tiny("gemma3-vocab262k", "q4f16", quantizer="rtn", **BIG_VOCAB)
    plan = json.loads((bundle / "plan.json").read_text())
    assert len([n for n in plan["buffers"] if n.startswith("model.embed_tokens.weight:qweight:")]) == 4
    ref = ReferenceModel(bundle)
    rng = np.random.default_rng(3)
    p1, p2 = rng.integers(3, 262144, 37).tolist(), rng.integers(200000, 262144, 21).tolist()
    want, tokens = reference_run(ref, p1, p2, 4)
    for kv in plan["variant_order"]:
        err = compare(gpu_run(GpuExecutor(bundle, variant=kv), p1, p2, tokens), want,
                      F32_TOL if kv == "f32" else F16_TOL)
        print(f"262k vocab wgpu {kv}: max rel err {err:.2e}")


def test_gemma3_on_dawn_greedy_equals_reference(packaged_tiny, tmp_path, request):
    """The runtime's WebGPU backend in Node (Dawn; SwiftShader here: f32 kernels) greedy-decodes
    a tiny Gemma 3 whose sliding layers' rings (16 + 8 rows) wrap, as the reference does."""
    from test_runtime_e2e import run_drivers

    bundle = packaged_tiny("gemma3", "q4f32", quantizer="rtn", prefill_chunk=8, context_window=128)
    prompt = np.random.default_rng(7).integers(3, 320, 30).tolist()  # 4 prefill chunks, past the window
    expected = ReferenceModel(bundle).greedy(prompt, 16)
    env = request.getfixturevalue("js_env")
    [result] = run_drivers([("node", bundle, {"cases": [{"prompt_ids": prompt, "new_tokens": 16}]})], env, tmp_path)
    assert result["first"]["label"] == "WebGPU f32"
    assert result["first"]["cases"][0]["tokens"] == expected
