"""`llmpack package` on tiny random Llama checkpoints: logits against transformers,
shard rules, atomic output, and one clear error per kind of bad input."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_contract.manifest import load
from checkpoints import TINY_VARIANTS
from conftest import hf_stepwise_logits
from packager.bundle import package_model
from packager.reference import ReferenceModel
from packager.shards import read_tensor_bytes

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "packager.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("variant", list(TINY_VARIANTS))
def test_f32_logits_match_transformers(variant, tiny_llama, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    src = tiny_llama(variant)
    package_model(src, tmp_path / "b", quant="f32")
    model = load(tmp_path / "b").data["model"]
    assert model["hf_architecture"] == json.loads((src / "config.json").read_text())["architectures"][0]
    assert model["hf_architecture"] == ("MistralForCausalLM" if variant == "mistral" else "LlamaForCausalLM")
    rope = TINY_VARIANTS[variant].get("rope_scaling", {}).get("rope_type", "default")
    assert model["config"]["rope"]["type"] == rope
    ref = ReferenceModel(tmp_path / "b")
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    prompt, tokens = rng.integers(0, 320, size=23).tolist(), rng.integers(0, 320, size=16).tolist()
    want = hf_stepwise_logits(hf, prompt, tokens)
    assert rel_err(ref.prefill(prompt), want[0]) < 1e-4
    for tok, w in zip(tokens, want[1:]):
        assert rel_err(ref.decode(tok), w) < 1e-4


def test_manifest_records(tiny_llama, tmp_path):
    summary = package_model(tiny_llama("untied"), tmp_path / "b", quant="q2f16", shard_size=8192)
    m = load(tmp_path / "b").data
    fmts = {t["name"]: t["format"] for t in m["tensors"]}
    assert fmts["model.embed_tokens.weight"] == "q4f16" and fmts["lm_head.weight"] == "q8f16"
    assert fmts["model.layers.0.mlp.up_proj.weight"] == "q2f16"
    assert fmts["model.layers.0.mlp.down_proj.weight"] == "q4f16"  # sensitive: kept at 4 bits
    assert fmts["model.layers.1.self_attn.v_proj.weight"] == "q4f16"
    assert fmts["model.layers.1.self_attn.k_proj.weight"] == "q2f16"
    assert fmts["model.norm.weight"] == "f32"
    assert m["model"]["config"]["num_key_value_heads"] == 1 and not m["model"]["config"]["tie_word_embeddings"]
    assert m["tokenizer"]["chat_template"].startswith("{% for m in messages %}")
    assert m["generation"]["eos_token_ids"] == [2]
    assert summary["shards"] == len(m["shards"]) > 1
    # every shard is named by its hash and holds what the manifest says
    import hashlib
    for s in m["shards"]:
        data = (tmp_path / "b" / s["file"]).read_bytes()
        assert len(data) == s["bytes"] <= 8192
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and s["file"] == f"shards/{s['sha256']}.bin"
    for f in m["files"]:
        assert hashlib.sha256((tmp_path / "b" / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    # records are 256-aligned, never overlap, and a tensor spans shards only if larger than one
    seen = set()
    for t in m["tensors"]:
        assert t["offset"] % 256 == 0 and all(p["offset"] % 256 == 0 for p in t["parts"])
        if t["bytes"] <= 8192:
            assert t["offset"] + t["bytes"] <= m["shards"][t["shard"]]["bytes"]
        else:
            assert t["offset"] == 0
        key = (t["shard"], t["offset"])
        assert key not in seen
        seen.add(key)


def test_tensor_spanning_shards(tiny_llama, tmp_path):
    package_model(tiny_llama("plain"), tmp_path / "small", quant="f32", shard_size=4096)
    package_model(tiny_llama("plain"), tmp_path / "big", quant="f32")
    small, big = load(tmp_path / "small").data, load(tmp_path / "big").data
    embed = small["tensors"][0]
    assert embed["bytes"] > 4096 and len(big["shards"]) == 1
    for a, b in zip(small["tensors"], big["tensors"]):
        assert read_tensor_bytes(tmp_path / "small", small["shards"], a) == \
            read_tensor_bytes(tmp_path / "big", big["shards"], b)


def test_identical_output_is_deterministic(tiny_llama, tmp_path):
    package_model(tiny_llama("gqa"), tmp_path / "a", quant="q4f16", shard_size=16384)
    package_model(tiny_llama("gqa"), tmp_path / "b", quant="q4f16", shard_size=16384)
    a, b = load(tmp_path / "a").data, load(tmp_path / "b").data
    assert a["shards"] == b["shards"]  # same content, same names: dedupes across versions


def test_cli_json_and_force(tiny_llama, tmp_path):
    out = tmp_path / "bundle"
    r = run_cli("package", tiny_llama("gqa"), "--out", out, "--quant", "q4f32", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["quant"] == "q4f32" and summary["tensors"] == 20 and summary["peak_rss_bytes"] > 0
    before = (out / "manifest.json").read_text()
    r = run_cli("package", tiny_llama("gqa"), "--out", out, "--quant", "f16")
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert (out / "manifest.json").read_text() == before  # untouched
    r = run_cli("package", tiny_llama("gqa"), "--out", out, "--quant", "f16", "--force", "--json")
    assert r.returncode == 0, r.stderr
    assert load(out).data["quantization"]["scheme"] == "f16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp dirs left behind


def test_force_refuses_non_bundle_directory(tiny_llama, tmp_path):
    victim = tmp_path / "docs"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    r = run_cli("package", tiny_llama("gqa"), "--out", victim, "--force")
    assert r.returncode == 1 and "not a bundle" in r.stderr
    assert (victim / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------
# bad input: one line, exit 1, no traceback, nothing at DIR


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _rewrite_tensors(ck_dir, edit):
    from safetensors.numpy import load_file, save_file
    path = ck_dir / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _missing_config(d):
    (d / "config.json").unlink()


def _bad_json(d):
    (d / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": ')


def _unsupported_arch(d):
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))


def _missing_tensor(d):
    _rewrite_tensors(d, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))


def _wrong_shape(d):
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))


def _nan_weights(d):
    def edit(t):
        t["model.layers.0.self_attn.v_proj.weight"][3, 5] = np.nan
    _rewrite_tensors(d, edit)


def _garbage_safetensors(d):
    (d / "model.safetensors").write_bytes(b"this is not a safetensors file at all" * 10)


def _truncated_safetensors(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


BAD_CHECKPOINTS = {
    "missing config": (_missing_config, "config.json not found"),
    "malformed config": (_bad_json, "config.json is not valid JSON"),
    "unsupported architecture": (_unsupported_arch,
                                 "unsupported architecture 'GPT2LMHeadModel'; supported: LlamaForCausalLM"),
    "missing tensor": (_missing_tensor, "tensor model.layers.1.mlp.up_proj.weight is missing"),
    "wrong shape": (_wrong_shape, "has shape [128, 64], expected [96, 64]"),
    "non-finite weights": (_nan_weights, "model.layers.0.self_attn.v_proj.weight has 1 non-finite"),
    "unreadable safetensors": (_garbage_safetensors, "not a readable safetensors file"),
    "truncated safetensors": (_truncated_safetensors, "truncated"),
}


def assert_clean_failure(r, message, out):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint(case, tiny_llama, tmp_path):
    edit, message = BAD_CHECKPOINTS[case]
    src = _copy(tiny_llama("gqa"), tmp_path / "ck")
    edit(src)
    out = tmp_path / "out" / "bundle"
    (tmp_path / "out").mkdir()
    assert_clean_failure(run_cli("package", src, "--out", out, "--quant", "q4f16"), message, out)


def test_unknown_quant(tiny_llama, tmp_path):
    out = tmp_path / "bundle"
    assert_clean_failure(run_cli("package", tiny_llama("gqa"), "--out", out, "--quant", "q5k"),
                         "unknown --quant 'q5k'; choose one of: q4f16", out)


def test_bad_context_window(tiny_llama, tmp_path):
    out = tmp_path / "bundle"
    assert_clean_failure(run_cli("package", tiny_llama("gqa"), "--out", out, "--context-window", "8"),
                         "--context-window 8 must be between 16 and the model's max_position_embeddings (256)", out)


def test_missing_source(tmp_path):
    out = tmp_path / "bundle"
    assert_clean_failure(run_cli("package", tmp_path / "nope", "--out", out), "does not exist", out)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_bad_gguf(damage, smollm2_path, tmp_path):
    bad = tmp_path / "model.gguf"
    with open(smollm2_path, "rb") as f:
        head = f.read(4 << 20)
    bad.write_bytes(head if damage == "truncated" else b"GGUF" + os.urandom(4096))
    out = tmp_path / "bundle"
    assert_clean_failure(run_cli("package", bad, "--out", out), "not a readable GGUF file", out)


def test_sharded_bf16_checkpoint(tmp_path):
    """Many safetensors files with an index, stored in bf16 as most Hub models are."""
    import torch
    from safetensors.torch import load_file

    from checkpoints import build_tiny_checkpoint
    src = build_tiny_checkpoint(tmp_path / "ck", "gqa", dtype="bfloat16", max_shard_size="40KB")
    files = sorted(src.glob("*.safetensors"))
    assert len(files) > 1 and (src / "model.safetensors.index.json").exists()
    package_model(src, tmp_path / "b", quant="f32")
    ref = ReferenceModel(tmp_path / "b")
    expected = {}
    for f in files:
        expected.update({k: v.to(torch.float32).numpy() for k, v in load_file(f).items()})
    for name, w in ref.w.items():
        assert np.array_equal(w, expected[name]), name


def test_config_resolved_and_plan_built_once(tiny_llama, tmp_path, monkeypatch):
    """Packaging resolves the config once and builds the plan once: the Wasm build takes
    the kernel constants from the plan."""
    from transformers import AutoConfig

    import packager.plan as plan_mod

    calls = {"config": 0, "plan": 0}
    for_model, build = AutoConfig.for_model, plan_mod._Builder.build

    def count_config(*a, **kw):
        calls["config"] += 1
        return for_model(*a, **kw)

    def count_plan(self):
        calls["plan"] += 1
        return build(self)

    monkeypatch.setattr(AutoConfig, "for_model", count_config)
    monkeypatch.setattr(plan_mod._Builder, "build", count_plan)
    package_model(tiny_llama("gqa"), tmp_path / "b", quant="q4f16", quantizer="rtn")
    assert calls == {"config": 1, "plan": 1}


def test_wasm_build_from_the_bundle_alone(tiny_llama, tmp_path):
    """`python -m packager.wasm_build BUNDLE` rebuilds the Wasm kernels from the bundle's
    files (plan.json carries the kernel constants): the same bytes as packaging wrote."""
    from packager.wasm_build import FILES, TABLE_FILE

    bundle = tmp_path / "b"
    package_model(tiny_llama("llama3"), bundle, quant="q4f16", quantizer="rtn")
    paths = [*FILES.values(), TABLE_FILE]
    before = {p: (bundle / p).read_bytes() for p in paths}
    manifest_before = load(bundle).data
    for p in paths:
        (bundle / p).unlink()
    r = subprocess.run([sys.executable, "-m", "packager.wasm_build", str(bundle)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "LLMPACK_WASM_CACHE": ""})
    assert r.returncode == 0, r.stderr
    assert {p: (bundle / p).read_bytes() for p in paths} == before
    after = load(bundle).data
    assert sorted(f["path"] for f in after["files"]) == sorted(f["path"] for f in manifest_before["files"])
