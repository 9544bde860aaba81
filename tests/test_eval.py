"""`llmpack eval`: perplexity/KL agree with transformers; low-bit quantizers earn their keep."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_contract.manifest import load
from packager.evaluate import encode_text, run_eval
from quantization.quality import default_text, evaluate, log_softmax, token_windows

ROOT = Path(__file__).resolve().parent.parent
WINDOWS = 3  # of 256 tokens: enough to separate the formats, cheap enough for CI


def test_log_softmax_and_windows():
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert np.allclose(np.exp(log_softmax(x)).sum(), 1.0)
    assert token_windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert token_windows(list(range(10)), 4, max_windows=1) == [[0, 1, 2, 3]]
    assert len(default_text().split()) > 1500


def test_eval_cli_on_tiny_checkpoint(tiny_llama, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(default_text()[:4000])
    r = subprocess.run([sys.executable, "-m", "packager.cli", "eval", str(tiny_llama("gqa")), "--quant",
                        "q8f16,q4f16", "--text", str(text), "--window", "64", "--max-windows", "2", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {row["model"]: row for row in out["rows"]}
    assert list(rows) == ["f32", "q8f16", "q4f16"] and out["windows"] == 2
    assert rows["f32"]["kl"] == 0.0  # the f32 row is the reference itself (the KL test is below)
    assert 0 < rows["q8f16"]["kl"] < rows["q4f16"]["kl"]
    assert rows["q4f16"]["bits_per_weight"] < rows["q8f16"]["bits_per_weight"]


class TransformersLogits:
    """transformers' model behind the reference executor's reset()/prefill() (all logits)."""

    def __init__(self, src):
        import torch
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()

    def reset(self):
        pass

    def prefill(self, ids):
        import torch

        with torch.no_grad():
            return self.model(torch.tensor([ids])).logits[0].numpy()


# KL(transformers || f32 bundle) per token: measured 4.7e-13 (f32 rounding) -> 5e-12 (10x);
# q8f16's is 5.7e-4
F32_KL_MAX = 5e-12


def test_f32_kl_against_transformers(tiny_llama, packaged_tiny):
    """The f32 row's KL is 0 by construction (it is the reference); here the f32 bundle's
    numpy executor is measured against transformers itself, which could fail."""
    from packager.reference import ReferenceModel

    src = tiny_llama("gqa")
    hf = TransformersLogits(src)
    f32 = packaged_tiny("gqa", "f32")
    windows = token_windows(encode_text(f32, default_text()[:4000]), 64, 2)
    kl_f32 = evaluate(ReferenceModel(f32), windows, hf)["kl"]
    kl_q8 = evaluate(ReferenceModel(packaged_tiny("gqa", "q8f16", quantizer="rtn")), windows, hf)["kl"]
    assert abs(kl_f32) < F32_KL_MAX, kl_f32
    assert kl_q8 > 1e-5, kl_q8  # the measure sees an 8-bit quantization step


@pytest.mark.parametrize("args, message", [
    (["--text", "/nonexistent/file.txt"], "no such file"),
    (["--window", "100000"], "fewer than one window"),
])
def test_eval_bad_input(args, message, tiny_llama):
    r = subprocess.run([sys.executable, "-m", "packager.cli", "eval", str(tiny_llama("gqa")), "--quant", "f32", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_f32_perplexity_matches_transformers(smollm2_bundle, smollm2_hf):
    import torch

    bundle = smollm2_bundle("f32")
    ours = run_eval(bundle, quants=[], max_windows=WINDOWS)["rows"][0]["perplexity"]
    model, _ = smollm2_hf
    windows = token_windows(encode_text(bundle, default_text()), 256, WINDOWS)
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = model(torch.tensor([w])).logits[0, :-1].double()
            nll -= torch.log_softmax(logits, -1)[torch.arange(len(w) - 1), torch.tensor(w[1:])].sum().item()
            count += len(w) - 1
    theirs = float(np.exp(nll / count))
    assert abs(ours / theirs - 1) < 0.005, (ours, theirs)


@pytest.mark.slow
def test_low_bit_quality(smollm2_bundle):
    """q4f16 within 3% of f32; GPTQ q2f16 at most half the perplexity increase of
    round-to-nearest q2f16 with the same formats per tensor (so the same bits/weight)."""
    f32 = smollm2_bundle("f32")
    q4 = smollm2_bundle("q4f16")
    q2_rtn = smollm2_bundle("q2f16", quantizer="rtn")
    q2 = smollm2_bundle("q2f16")
    assert load(q2).quantization.quantizer == "gptq"
    bpw = [load(b).quantization.bits_per_weight for b in (q2, q2_rtn)]
    assert bpw[0] == bpw[1]
    ppl = {}
    for name, bundle in [("f32", f32), ("q4", q4), ("q2_rtn", q2_rtn), ("q2", q2)]:
        ppl[name] = run_eval(bundle, quants=[], max_windows=WINDOWS)["rows"][0]["perplexity"]
    print("perplexity:", ppl)
    assert ppl["q4"] / ppl["f32"] - 1 < 0.03
    assert (ppl["q2"] - ppl["f32"]) <= 0.5 * (ppl["q2_rtn"] - ppl["f32"])
