"""The tiny bundles that whole-plan tests run on a JS backend (tests/test_wasm_plan.py on
Wasm in Node, tests/test_runtime_deno.py on WebGPU in Deno), and the calls they make."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from packager.plan import build_plan

# weights in row blocks, prefill in chunks of 8 (both prompts cross chunk boundaries,
# the second at an unaligned past_len)
SPLIT = {"max_binding_size": 8192, "prefill_chunk": 8, "context_window": 128}

# packaged with prefill chunks of 8 in a context of 128: the rings of the sliding-window layers
# (window 16, tests/checkpoints.py TINY_GEMMA) have 24 rows, which the calls wrap around (the
# ring's size is a kernel constant: a re-planned bundle would lack its Wasm kernels)
RING = {"package": {"prefill_chunk": 8, "context_window": 128}}

# case id -> (tiny variant, weight format, re-plan keywords): every weight format once
CASES = {
    "gqa-q4f32": ("gqa", "q4f32", {}),
    "llama3-q4f16": ("llama3", "q4f16", {}),
    "untied-q8f16": ("untied", "q8f16", {}),
    "plain-q3f16": ("plain", "q3f16", {}),
    "gqa-q2f16": ("gqa", "q2f16", {}),
    "gqa-f16": ("gqa", "f16", {}),
    "untied-f32": ("untied", "f32", {}),
    "untied-q4f16-split": ("untied", "q4f16", SPLIT),
}


def rel(a, b) -> float:
    """max |a - b| / max |b|, with a finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a))
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def case_calls(vocab: int, prompt_len: int, second_prompt: int, decode_steps: int) -> list:
    """[entry, tokens, past_len] per Backend call: two prompts, then decode steps."""
    rng = np.random.default_rng(0)
    first = rng.integers(3, vocab, prompt_len).tolist()
    second = rng.integers(3, vocab, second_prompt).tolist()
    calls = [["prefill", first, 0], ["prefill", second, prompt_len]]
    past = prompt_len + second_prompt
    calls += [["decode", int(rng.integers(3, vocab)), past + i] for i in range(decode_steps)]
    return calls


def packaged_case(packaged_tiny, cid: str, variant: str, quant: str, replan: dict, tmp: Path):
    """(bundle, manifest, plan, plan file or None) of a case. A re-planned case runs the
    same weights and kernels under another plan (other buffer limits), written to tmp for
    the driver to load instead of the bundle's; replan {"package": kw} packages the bundle
    with those package_model keywords instead."""
    package = replan.get("package", {})
    # plain rounding: the plan is what is tested
    bundle = packaged_tiny(variant, quant, quantizer="rtn", **package)
    manifest = json.loads((bundle / "manifest.json").read_text())
    plan = json.loads((bundle / "plan.json").read_text())
    if not replan or package:
        return bundle, manifest, plan, None
    plan, _ = build_plan(manifest, **replan)
    if "max_binding_size" in replan:
        assert any(name.count(":") == 2 for name in plan["buffers"]), "expected split weights"
    plan_file = tmp / f"{cid}.plan.json"
    plan_file.write_text(json.dumps(plan))
    return bundle, manifest, plan, plan_file
