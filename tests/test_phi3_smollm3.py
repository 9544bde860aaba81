"""Phi3ForCausalLM and SmolLM3ForCausalLM end to end, on tiny random checkpoints built from
transformers' own classes (tests/checkpoints.py, TINY_PHI3: Phi-3-mini's shape; Phi-4-mini's
partial rotary with LongRoPE and its cos/sin attention factor; SmolLM3 with a layer
without RoPE), and the refusals of what no definition supports:

- the tensor table is the checkpoint's (fused qkv_proj and gate_up_proj), the config is
  resolved, llama.cpp's GGUF names map onto the table;
- the numpy reference of an f32 bundle against transformers' logits (prefill, then decode
  steps on both KV caches) and 32 greedy tokens against transformers' generate;
- the plan on wgpu-py (lavapipe), f32 and f16 kernels, against the reference, row views
  of the fused matrices split into blocks included;
- the Wasm backend in Node and the WebGPU backend in Deno run these bundles in
  tests/test_wasm_plan.py and tests/test_runtime_deno.py (their phi3 / smollm3 cases).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from checkpoints import TINY_PHI3
from conftest import hf_stepwise_logits
from gpu_executor import GpuExecutor
from packager.compile import compile_artifacts
from packager.errors import PackError
from packager.models import config_from_manifest, definition, resolve_config
from packager.plan import build_plan
from packager.reference import ReferenceModel
from plan_cases import case_calls, rel
from test_plan_gpu import DECODE_STEPS, F16_TOL, F32_TOL, compare, gpu_run, manifest_of, prompts, reference_run

HF_TOL = 1e-4  # f32 bundle, numpy reference vs transformers: measured 7e-7 .. 1.6e-6
HF = {"phi3": "Phi3ForCausalLM", "phi3-longrope": "Phi3ForCausalLM", "phi3-window": "Phi3ForCausalLM",
      "smollm3": "SmolLM3ForCausalLM"}


def raw_config(tiny_llama, variant: str) -> dict:
    return json.loads((tiny_llama(variant) / "config.json").read_text())


# ---------------------------------------------------------------------------------------
# definitions: config, tensor table, GGUF names


@pytest.mark.parametrize("variant", list(TINY_PHI3))
def test_tensor_table_is_the_checkpoints(tiny_llama, variant):
    from safetensors import safe_open

    c = resolve_config(raw_config(tiny_llama, variant))
    assert c.hf_architecture == HF[variant] and definition(HF[variant]).name == c.architecture
    with safe_open(tiny_llama(variant) / "model.safetensors", "np") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    assert {t.name: t.shape for t in definition(HF[variant]).tensors(c)} == shapes


def test_phi3_config(tiny_llama):
    c = resolve_config(raw_config(tiny_llama, "phi3-longrope"))
    r = c.rope
    assert (r.type, r.rotary_dim(c.head_dim), r.original_max_position_embeddings) == ("longrope", 12, 4096)
    assert r.short_factor == (1.0, 1.1, 1.3, 1.6, 2.2, 3.0) and r.long_factor[-1] == 16.0
    assert r.attention_scaling == pytest.approx((1 + np.log(4) / np.log(4096)) ** 0.5)
    assert c.context_window == 4096 and c.sliding_window == 0
    # the Hub's config.json form (Phi-3.5 / Phi-4-mini: rope_scaling of type "longrope")
    hub = {k: v for k, v in raw_config(tiny_llama, "phi3-longrope").items() if k != "rope_parameters"}
    scaling = {"type": "longrope", "short_factor": list(r.short_factor), "long_factor": list(r.long_factor)}
    assert resolve_config({**hub, "rope_theta": 10000.0, "rope_scaling": scaling}).rope == r
    plain = resolve_config(raw_config(tiny_llama, "phi3"))
    assert plain.rope.type == "default" and plain.rope.rotary_dim(16) == 16
    assert plain.sliding_window == 0 and plain.layer_types == ()  # 256: the whole context, never a window
    # the manifest's form reads back to the same config
    manifest = {"model": {"hf_architecture": c.hf_architecture, "config": c.to_json()},
                "memory": {"context_window": c.context_window}}
    assert config_from_manifest(json.loads(json.dumps(manifest))) == c


def test_phi3_contexts(tiny_llama):
    """Past a LongRoPE model's original length transformers switches to long_factor, which
    a bundle does not do: refused. A sliding window shorter than the context makes every
    layer a sliding one (ring caches, docs/plan.md)."""
    raw = raw_config(tiny_llama, "phi3-longrope")
    assert resolve_config(raw, 4096).context_window == 4096
    with pytest.raises(PackError, match=r"LongRoPE .* --context-window 4096 or less"):
        resolve_config(raw, 4097)
    rp = raw["rope_parameters"]
    same = {**raw, "rope_parameters": {**rp, "long_factor": rp["short_factor"]}}
    assert resolve_config(same, 8192).context_window == 8192  # one table for every length: exact
    mini_4k = {**raw_config(tiny_llama, "phi3"), "sliding_window": 2047, "max_position_embeddings": 4096}  # 4k's
    c = resolve_config(mini_4k)
    assert c.context_window == 4096 and c.sliding_window == 2047 and c.layer_types == ("sliding_attention",) * 2
    g = definition("phi3").graph(c)
    assert [op.window for ops in g.layers for op in ops if op.kind == "attention"] == [2047, 2047]


def test_smollm3_nope_layers(tiny_llama):
    raw = raw_config(tiny_llama, "smollm3")
    c = resolve_config(raw)
    assert c.nope_layers == (1,)  # no_rope_layer_interval 2: every second layer
    g = definition("smollm3").graph(c)
    assert [sum(op.kind == "rope" for op in ops) for ops in g.layers] == [1, 0]
    explicit = resolve_config({**raw, "no_rope_layers": [0, 1]})
    assert explicit.nope_layers == (0,)
    with pytest.raises(PackError, match="no_rope_layers"):
        resolve_config({**raw, "no_rope_layers": [1, 2]})
    with pytest.raises(PackError, match="attention_bias"):
        resolve_config({**raw, "attention_bias": True})


def test_phi3_graph_reads_views_of_the_fused_matrices(tiny_llama):
    c = resolve_config(raw_config(tiny_llama, "phi3-longrope"))
    ops = definition("phi3").graph(c).layers[0]
    views = {op.out: (op.weight.rsplit(".", 2)[-2], op.rows) for op in ops if op.rows}
    Q, KV, FF = c.q_size, c.kv_size, c.intermediate_size
    assert views == {"q": ("qkv_proj", (0, Q)), "k": ("qkv_proj", (Q, Q + KV)), "v": ("qkv_proj", (Q + KV, Q + 2 * KV)),
                     "gate": ("gate_up_proj", (0, FF)), "up": ("gate_up_proj", (FF, 2 * FF))}


def test_gguf_names():
    phi3, smollm3 = definition("phi3"), definition("smollm3")
    name, row = phi3.from_gguf("blk.3.attn_qkv.weight")
    assert name == "model.layers.3.self_attn.qkv_proj.weight" and row.gguf_rope_heads == "" and row.role == "sensitive"
    assert phi3.from_gguf("blk.0.ffn_up.weight")[0] == "model.layers.0.mlp.gate_up_proj.weight"  # gate and up
    assert phi3.from_gguf("blk.0.ffn_gate.weight") is None and phi3.from_gguf("output.weight")[0] == "lm_head.weight"
    assert phi3.from_gguf("rope_factors_long.weight") is None  # LongRoPE's factors: configuration
    assert dict(phi3.gguf_architectures) == {"phi3": "Phi3ForCausalLM"}
    name, row = smollm3.from_gguf("blk.1.attn_q.weight")
    assert name == "model.layers.1.self_attn.q_proj.weight" and row.gguf_rope_heads == "num_attention_heads"
    assert dict(smollm3.gguf_architectures) == {"smollm3": "SmolLM3ForCausalLM"}


# ---------------------------------------------------------------------------------------
# refusals: one line naming the unsupported thing


def llama_raw(tiny_llama, **extra) -> dict:
    return {**raw_config(tiny_llama, "gqa"), **extra}


REFUSALS = {
    "mixture of experts (count)": (dict(num_local_experts=8), r"mixture of experts \(num_local_experts=8\)"),
    "mixture of experts (qwen)": (dict(num_experts=4), r"mixture of experts \(num_experts=4\)"),
    "mixture of experts (architecture)": (dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe"),
                                          "Qwen3MoeForCausalLM is a mixture of experts"),
    "vision tower": (dict(vision_config={"hidden_size": 32}), r"vision or audio tower \(vision_config\)"),
    "pre-quantized": (dict(quantization_config={"quant_method": "awq", "bits": 4}), "quant_method 'awq'"),
    "yarn": (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}),
             r"rope type 'yarn' is not supported; supported: default, linear, llama3, longrope"),
    "dynamic": (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rope type 'dynamic' is not supported"),
    "partial rotary in Llama": (dict(rope_scaling={"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}),
                                "partial_rotary_factor 0.5 is not supported by Llama"),
    "mlp bias": (dict(mlp_bias=True), "mlp_bias"),
    "gelu": (dict(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
}


@pytest.mark.parametrize("what", list(REFUSALS))
def test_refusals_name_the_thing(tiny_llama, what):
    extra, message = REFUSALS[what]
    with pytest.raises(PackError, match=message) as e:
        resolve_config(llama_raw(tiny_llama, **extra))
    assert "\n" not in str(e.value)


def test_phi3_and_smollm3_refusals(tiny_llama):
    phi3 = raw_config(tiny_llama, "phi3-longrope")
    with pytest.raises(PackError, match="hidden_act 'gelu_new' is not supported"):
        resolve_config({**phi3, "hidden_act": "gelu_new"})
    with pytest.raises(PackError, match="short_factor field must have length 6"):  # (transformers' check)
        resolve_config({**phi3, "rope_parameters": {**phi3["rope_parameters"], "short_factor": [1.0] * 5}})
    with pytest.raises(PackError, match="rotary dimensions"):  # 9 of 16: odd
        resolve_config({**phi3, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                                    "partial_rotary_factor": 0.5625}})
    with pytest.raises(PackError, match="mixture of experts"):
        resolve_config({**phi3, "architectures": ["PhimoeForCausalLM"], "model_type": "phimoe"})
    smol = raw_config(tiny_llama, "smollm3")
    with pytest.raises(PackError, match="rope type 'yarn' is not supported"):
        resolve_config({**smol, "rope_scaling": {"rope_type": "yarn", "factor": 2.0,
                                                 "original_max_position_embeddings": 128}})
    with pytest.raises(PackError, match="mlp_bias"):
        resolve_config({**smol, "mlp_bias": True})


# ---------------------------------------------------------------------------------------
# the numpy reference against transformers


@pytest.mark.parametrize("variant", list(TINY_PHI3))
def test_f32_logits_and_greedy_match_transformers(variant, tiny_llama, packaged_tiny):
    import torch
    from transformers import AutoModelForCausalLM

    src = tiny_llama(variant)
    ref = ReferenceModel(packaged_tiny(variant, "f32"))
    assert ref.config.hf_architecture == HF[variant]
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    prompt, tokens = rng.integers(3, 320, size=23).tolist(), rng.integers(3, 320, size=8).tolist()
    want = hf_stepwise_logits(hf, prompt, tokens)
    errs = [rel(ref.prefill(prompt), want[0])] + [rel(ref.decode(t), w) for t, w in zip(tokens, want[1:])]
    assert max(errs) < HF_TOL, errs
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                           eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert ref.greedy(prompt, 32) == want
    if variant == "phi3-window":  # the window (16 keys) matters here: without it the logits are far off
        c = ref.config
        ref.graph = definition(c.architecture).graph(type(c)(**{**c.__dict__, "sliding_window": 0}))
        ref.reset()
        with torch.no_grad():
            assert rel(ref.prefill(prompt)[-1], hf(torch.tensor([prompt])).logits[0, -1].numpy()) > 100 * HF_TOL
    print(f"{variant} reference vs transformers: max rel err {max(errs):.2e}, 32 greedy tokens equal")


@pytest.mark.parametrize("variant", ["phi3-longrope", "smollm3"])
def test_q4f16_greedy_equals_transformers_on_the_dequantized_weights(variant, tiny_llama, packaged_tiny):
    """A q4f16 bundle computes what transformers computes with its weights: the bundle's
    tensors are the checkpoint's (fused ones included), dequantized into the HF model."""
    import torch
    from transformers import AutoModelForCausalLM

    ref = ReferenceModel(packaged_tiny(variant, "q4f16", quantizer="rtn"))
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama(variant), dtype=torch.float32).eval()
    w = "model.layers.0.mlp.down_proj.weight"
    assert np.max(np.abs(hf.state_dict()[w].numpy() - ref.w[w])) > 1e-3  # 4-bit weights, not the checkpoint's
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v) for k, v in ref.w.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # (tied to the token table)
    assert torch.equal(hf.get_output_embeddings().weight, torch.from_numpy(ref.w["model.embed_tokens.weight"]))
    prompt = np.random.default_rng(1).integers(3, 320, size=19).tolist()
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                           eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert ref.greedy(prompt, 32) == want


# ---------------------------------------------------------------------------------------
# the plan on wgpu-py (f32 and f16 kernels) against the reference

GPU_CASES = [("phi3-longrope", "q4f16"), ("phi3", "q8f16"), ("phi3-window", "q4f16"), ("smollm3", "q4f16")]


@pytest.mark.parametrize("variant,quant", GPU_CASES)
def test_plan_on_gpu_matches_reference(packaged_tiny, variant, quant):
    bundle = packaged_tiny(variant, quant, quantizer="rtn")
    ref = ReferenceModel(bundle)
    p1, p2 = prompts(ref.config.vocab_size)
    want, tokens = reference_run(ref, p1, p2, DECODE_STEPS)
    files, _ = compile_artifacts(manifest_of(bundle), context_window=ref.context_window, validate=False)
    plan = json.loads(files["plan.json"])
    ropes = [d for d in plan["entries"]["prefill"]["dispatches"] if plan["kernels"][d["kernel"]]["template"] == "rope"]
    assert len(ropes) == (1 if variant == "smollm3" else 2)  # SmolLM3's layer 1 has none
    for kv in plan["variant_order"]:
        ex = GpuExecutor(bundle, files=files, variant=kv)
        err = compare(gpu_run(ex, p1, p2, tokens), want, F32_TOL if kv == "f32" else F16_TOL)
        print(f"{variant} {quant} wgpu {kv}: max rel err {err:.2e}")


def test_split_views_of_fused_matrices(tmp_path):
    """Under a binding limit the row views of qkv_proj and gate_up_proj are split into row
    blocks: each block is the right byte range of the fused tensor, and the plan computes
    the same. (hidden 128: a view of 128 rows is twice the smallest block of down_proj.)"""
    from checkpoints import build_tiny_checkpoint
    from packager.bundle import package_model

    bundle = package_model(build_tiny_checkpoint(tmp_path / "ck", "phi3", hidden_size=128), tmp_path / "b",
                           quant="f32") and tmp_path / "b"
    m = manifest_of(bundle)
    kw = dict(context_window=128, prefill_chunk=8)
    limit = 64 * 128 * 4  # 64 f32 rows of 128 values
    plan, _ = build_plan(m, max_binding_size=limit, **kw)
    for name, views in (("self_attn.qkv_proj", [(0, 64), (64, 64), (128, 64), (192, 64)]),  # q: 2 blocks; k, v
                        ("mlp.gate_up_proj", [(0, 64), (64, 64), (128, 64), (192, 64)])):
        t = next(t for t in m["tensors"] if t["name"] == f"model.layers.1.{name}.weight")
        row_bytes = t["parts"][0]["bytes"] // t["shape"][0]
        blocks = [b for b in plan["buffers"].values() if b.get("tensor") == t["name"]]
        assert sorted((b["offset"] // row_bytes, b["bytes"] // row_bytes) for b in blocks) == views, name
    whole, _ = compile_artifacts(m, validate=False, **kw)
    split, _ = compile_artifacts(m, max_binding_size=limit, validate=False, **kw)
    assert "model.layers.0.mlp.gate_up_proj.weight[0..128]:weight:1" in json.loads(split["plan.json"])["buffers"]
    p1, p2 = prompts(m["model"]["config"]["vocab_size"], seed=2)
    a = gpu_run(GpuExecutor(bundle, files=whole, variant="f32"), p1, p2, [5, 9])
    b = gpu_run(GpuExecutor(bundle, files=split, variant="f32"), p1, p2, [5, 9])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------
# Phi-4-mini's shapes (2 of its 32 layers), from its config.json's form


def phi4_mini_config(layers: int = 2) -> dict:
    return {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "attention_bias": False, "mlp_bias": False,
            "hidden_act": "silu", "hidden_size": 3072, "intermediate_size": 8192, "num_attention_heads": 24,
            "num_hidden_layers": layers, "num_key_value_heads": 8, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": True, "vocab_size": 200064,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0 + 0.01 * i for i in range(48)],
                             "long_factor": [1.0 + 0.5 * i for i in range(48)]}}


@pytest.mark.parametrize("quant", ["q4f16", "f32"])
def test_plan_for_phi4_mini_shapes(quant):
    """The default context window (4096 = original_max_position_embeddings) is accepted, the
    rope kernel rotates 96 of 128 values with the attention factor, the fused matrices'
    views and the 200k-token tied table fit the default limits (split into row blocks)."""
    from test_plan_gpu import check_plan, synthetic_manifest

    c = resolve_config(phi4_mini_config())
    assert c.context_window == 4096 and c.rope.rotary_dim(c.head_dim) == 96 and c.head_dim == 128
    files, req = compile_artifacts(synthetic_manifest(c.to_json(), quant, "phi3"), context_window=None)
    plan = json.loads(files["plan.json"])
    check_plan(plan)
    [rope] = [k for k in plan["kernels"].values() if k["template"] == "rope"]
    assert rope["consts"]["HALF"] == 48 and rope["consts"]["SCALE"] == pytest.approx(1.1902380714238083)
    assert "rope.h24.kv8.d128.r96" in plan["kernels"]
    assert req["limits"]["maxStorageBufferBindingSize"] <= 128 << 20
    split = {b["tensor"] for n, b in plan["buffers"].items() if b["kind"] == "weight" and n.count(":") == 2}
    assert "model.embed_tokens.weight" in split
    views = [n for n in plan["buffers"] if "gate_up_proj.weight[" in n]
    assert views and all(n.startswith("model.layers.") for n in views)


# ---------------------------------------------------------------------------------------
# Phi-3 and Qwen3 on Dawn (Node's npm `webgpu`, SwiftShader here: f32 kernels), one Node
# process for both. About 40 s a model, most of it SwiftShader compiling the pipelines.
# (Gemma 3 on Dawn: tests/test_gemma.py; every architecture's kernels compiled by Dawn:
# tests/test_plan_gpu.py; the whole plans on WebGPU in Deno: tests/test_runtime_deno.py.)


# SwiftShader's f32 kernels measure 4.2e-4 here, as a tiny Llama does on the same path (7.4e-4;
# lavapipe: 3e-6): its transcendental functions are approximate. 3e-3: 4x the Llama's.
DAWN_TOL = 3e-3
DAWN_CASES = ("phi3-longrope", "qwen3")  # Phi-3: row views, partial LongRoPE; Qwen3: per-head q/k norms


def test_phi3_and_qwen3_on_dawn_in_node(packaged_tiny, tmp_path):
    import subprocess

    from test_runtime_deno import DRIVER, RUNTIME, check_against_reference
    from test_runtime_e2e import js_env as _js_env  # (the fixture's function: Node's adapter, checked)

    env = _js_env.__wrapped__()
    calls = case_calls(320, 37, 21, 4)
    jobs = [{"bundle": str(packaged_tiny(variant, "q4f16", quantizer="rtn")), "variant": "f32", "calls": calls,
             "greedy": 8, "out": str(tmp_path / f"{variant}.logits")} for variant in DAWN_CASES]
    (tmp_path / "spec.json").write_text(json.dumps({"jobs": jobs}))
    r = subprocess.run(["node", str(DRIVER), str(tmp_path / "spec.json")], cwd=RUNTIME, env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    outs = json.loads(r.stdout.strip().splitlines()[-1])["jobs"]
    for variant, job, out in zip(DAWN_CASES, jobs, outs):
        assert "error" not in out, f"{variant}: {out['error']}"
        assert out["label"] == "WebGPU f32"
        logits = np.fromfile(job["out"], np.float32).reshape(len(calls) + 8, -1)
        err, compared = check_against_reference(Path(job["bundle"]), calls, out["tokens"], logits, DAWN_TOL)
        assert compared >= 4, variant
        print(f"{variant} on Dawn ({out['adapter']}): max rel err {err:.2e}, load {out['load_ms']} ms")
