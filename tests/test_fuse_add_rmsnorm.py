"""The residual add fused with the next RMSNorm (packager.plan.fuse_add_rmsnorm; docs/plan.md,
"Fused dispatches"): the fused plan is the unfused one with every `add` + `rmsnorm` pair over
the same rows merged into one dispatch, in every architecture; and a fused bundle computes
the same logits as the unfused plan on wgpu-py (the kernels do the same f32 operations in the
same order: measured identical on lavapipe, f32 and f16 variants).

The kernels themselves: test_kernels.py / test_wasm_kernels.py (test_add_rmsnorm); the fused
plans against the numpy reference and transformers: test_plan_gpu.py, test_wasm_plan.py,
test_gemma.py, test_architectures.py (bundles are packaged with fusions on).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import packager.plan as plan_module
from checkpoints import tiny_hf_config
from packager.compile import kernel_files
from packager.plan import build_plan, fuse_add_rmsnorm
from plan_cases import rel
from test_gemma import synthetic_manifest

# one tiny config per architecture definition (and Mistral's sliding window)
ARCHITECTURES = ["gqa", "mistral-window", "qwen2", "qwen3", "phi3-longrope", "smollm3", "gemma2", "gemma3"]
FUSED = ("add_rmsnorm", "add_rmsnorm_inplace")


@pytest.fixture
def only_this_fusion(monkeypatch):
    """The plan with this fusion alone (others may fuse the neighbouring ops too)."""
    monkeypatch.setattr(plan_module, "FUSIONS", [fuse_add_rmsnorm])


def tiny_manifest(variant: str, quant: str = "q4f16"):
    config, model_cls = tiny_hf_config(variant)
    raw = {**config.to_dict(), "architectures": [model_cls.__name__]}
    return synthetic_manifest(raw, quant)


def merged(plain: list[dict], fused: list[dict], kernels: dict) -> int:
    """Walks the two dispatch lists side by side: every fused dispatch is an `add` and the
    `rmsnorm` of its x right after it, with their buffers; every other dispatch is the same.
    Returns the number of fused dispatches."""
    i = count = 0
    for d in fused:
        template = kernels[d["kernel"]]["template"]
        if template not in FUSED:
            assert d == plain[i]
            i += 1
            continue
        add, norm = plain[i], plain[i + 1]
        a, n = dict(add["bindings"]), dict(norm["bindings"])
        assert (kernels[add["kernel"]]["template"], kernels[norm["kernel"]]["template"]) == ("add", "rmsnorm")
        assert n[1] == a[1]  # the norm of the x the add wrote
        expect = {1: a[1], 2: a[2], 8: n[8]} | ({3: n[2]} if template == "add_rmsnorm" else {})
        assert (n[2] == a[2]) == (template == "add_rmsnorm_inplace")
        assert dict(d["bindings"]) == expect and d["uniforms"] == ["0"]
        assert d["workgroups"] == norm["workgroups"] and d["label"].startswith(add["label"] + " + ")
        k, nk = kernels[d["kernel"]]["consts"], kernels[norm["kernel"]]["consts"]
        assert (k["H"], k["EPS"]) == (nk["H"], nk["EPS"])
        i, count = i + 2, count + 1
    assert i == len(plain)
    return count


@pytest.mark.parametrize("variant", ARCHITECTURES)
def test_every_residual_add_fuses_with_the_next_norm(variant, only_this_fusion):
    manifest, config = tiny_manifest(variant)
    plain, _ = build_plan(manifest, config=config, fuse=False)
    fused, _ = build_plan(manifest, config=config)
    layers = config.num_hidden_layers
    for mode in ("prefill", "decode"):
        p, f = plain["entries"][mode]["dispatches"], fused["entries"][mode]["dispatches"]
        adds = sum(plain["kernels"][d["kernel"]]["template"] == "add" for d in p)
        assert adds == 2 * layers
        # every residual add is followed by a norm of x: the next in its layer, the next layer's
        # input norm, or the final norm; in prefill that one covers the last token only
        assert merged(p, f, fused["kernels"]) == adds - (mode == "prefill") == len(p) - len(f)
        labels = [d["label"] for d in f]
        assert "layer 0 residual + layer 1 input_layernorm" in labels
        norm = "pre_feedforward_layernorm" if variant.startswith("gemma") else "post_attention_layernorm"
        assert f"layer 0 residual + {norm}" in labels
        last = f"layer {layers - 1} residual"
        assert (last + " + final norm (last token)" in labels) == (mode == "decode")
        assert (last in labels) == (mode == "prefill")
    templates = {k["template"] for k in fused["kernels"].values()}
    # Gemma's norms in the layers write the xn they just added (add_rmsnorm's y would be its out);
    # its final norm writes x_last
    assert templates & set(FUSED) == ({*FUSED} if variant.startswith("gemma") else {"add_rmsnorm"})
    if variant in ("gqa", "gemma2"):  # naga compiles the fused kernels, both variants
        kernel_files(fused, [s for s in build_plan(manifest, config=config)[1] if s.template in FUSED])


@pytest.mark.parametrize("variant,quant,kv", [("gqa", "q4f16", "f32"), ("gemma2", "q4f16", "f16"),
                                              ("gemma3", "f32", "f32")])
def test_fused_plan_computes_what_the_unfused_plan_does(packaged_tiny, variant, quant, kv, only_this_fusion):
    """Prefill in two chunks, then decode steps: the logits of the plan with this fusion and of
    the unfused plan of one bundle on wgpu-py. Measured: identical (tolerance 1e-6; the other
    fusions may round less in the f16 variant)."""
    from conftest import require
    from gpu_executor import GpuExecutor, has_f16

    if kv == "f16":
        require("f16", has_f16(), "wgpu-py's adapter lacks shader-f16")
    bundle = packaged_tiny(variant, quant, quantizer="rtn", prefill_chunk=8, context_window=64)
    manifest = json.loads((bundle / "manifest.json").read_text())
    runs = []
    for fuse in (False, True):
        plan, kernels = build_plan(manifest, prefill_chunk=8, fuse=fuse)
        ex = GpuExecutor(bundle, files=kernel_files(plan, kernels, validate=False), variant=kv)
        prompt = np.random.default_rng(3).integers(3, manifest["model"]["config"]["vocab_size"], 13)
        logits = [ex.prefill(prompt)]
        for _ in range(3):
            logits.append(ex.decode(int(np.argmax(logits[-1]))))
        runs.append(np.stack(logits))
    plain, fused = runs
    assert rel(fused, plain) <= 1e-6
