"""The default GPU path in JavaScript: the runtime's WebGPU backend (runtime_js, built
module) in Deno, whose WebGPU is wgpu and finds lavapipe with `shader-f16`, so the
backend picks the f16 kernels the way it does on a real GPU (Node's Dawn and Chromium
run on SwiftShader here, which has no shader-f16: f32 kernels only).

One Deno process (runtime_js/test/e2e/webgpu_logits.mjs) loads a tiny random Llama in
every weight format (and a tiny Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3 and SmolLM3), makes
the calls (a prompt, a second prompt after it, decode steps on given tokens) and then greedy
decode steps on its own argmax, and writes every call's logits; the assertions and the
oracle (the numpy reference executor) live here. Bundles of compute f16 also run their f32
kernels (forced), so every format's two paths are measured against the same reference.
SmolLM2-135M-Instruct q4f16 generates a few tokens the same way, then once more through
the engine API (createEngine, engine.generate).

Without Deno, a Deno adapter or its shader-f16 these tests fail (conftest.require),
unless LLMPACK_ALLOW_MISSING names deno / f16.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import record_device, require
from packager.reference import ReferenceModel
from plan_cases import CASES as WEIGHT_FORMAT_CASES
from plan_cases import RING, case_calls, packaged_case, rel

RUNTIME = Path(__file__).resolve().parent.parent / "runtime_js"
DRIVER = RUNTIME / "test" / "e2e" / "webgpu_logits.mjs"
DENO = RUNTIME / "node_modules" / ".bin" / "deno"
PROMPT_LEN, SECOND_PROMPT, DECODE_STEPS, GREEDY_STEPS = 37, 21, 8, 16

# max |js - ref| / max |ref| of the logits over all calls and formats. Measured on
# lavapipe: f32 kernels 1.3e-6 .. 3.0e-6 -> 3e-5 (10x); f16 kernels (activations and KV
# cache stored as f16) 2.7e-3 .. 4.6e-3 -> 1e-2 (2.2x: f16 rounding is the error, the
# same on every run; a wider margin would pass a kernel that also accumulated in f16)
TOL = {"f32": 3e-5, "f16": 1e-2}

# every weight format (tests/plan_cases.py), plus Mistral, linear RoPE scaling and Qwen
CASES = {**WEIGHT_FORMAT_CASES,
         "mistral-q4f16": ("mistral", "q4f16", {}),  # MistralForCausalLM
         "linear-q3f16": ("linear", "q3f16", {}),  # linear RoPE scaling
         "qwen2-q4f16": ("qwen2", "q4f16", {}),  # Qwen2ForCausalLM: q/k/v biases
         "qwen3-q4f16": ("qwen3", "q4f16", {}),  # Qwen3ForCausalLM: per-head q/k norms, head_dim 32
         "phi3-longrope-q4f16": ("phi3-longrope", "q4f16", {}),  # Phi3ForCausalLM: views, partial LongRoPE
         "smollm3-q4f16": ("smollm3", "q4f16", {}),  # SmolLM3ForCausalLM: a layer without RoPE
         # Gemma 3 (q/k norms, two RoPEs) and Gemma 2 (soft-caps): sliding-window rings that wrap
         "gemma3-q4f16-ring": ("gemma3", "q4f16", RING), "gemma2-q8f16-ring": ("gemma2", "q8f16", RING)}
F32_ONLY = ("q4f32", "f32")  # formats whose bundles carry f32 kernels only
RUNS = [(cid, kv) for cid, (_, quant, _) in CASES.items() for kv in (("f32",) if quant in F32_ONLY else ("f16", "f32"))]


def deno_env() -> dict:
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    env["DENO_NO_UPDATE_CHECK"] = "1"
    return env


def run_deno(jobs: list[dict], tmp: Path, timeout: float = 600) -> dict:
    """Runs the driver once for all jobs; returns its report with each job's logits."""
    require("deno", DENO.exists(), f"{DENO} missing: npm ci in runtime_js")
    require("npm-modules", (RUNTIME / "dist" / "llmpack.js").is_file(), "runtime not built: npm run build")
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"jobs": jobs}))
    t0 = time.monotonic()
    r = subprocess.run([str(DENO), "run", "--allow-all", "--unstable-webgpu", str(DRIVER), str(spec)], cwd=RUNTIME,
                       env=deno_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-6000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    report["wall_s"] = round(time.monotonic() - t0, 1)
    adapter = report["adapter"]
    require("deno", adapter is not None, "Deno's WebGPU finds no adapter (lavapipe: mesa-vulkan-drivers)")
    require("f16", "shader-f16" in adapter["features"], f"Deno's adapter {adapter['description']} lacks shader-f16")
    for job, out in zip(jobs, report["jobs"]):
        if "error" not in out:
            n = len(job["calls"]) + job.get("greedy", 0)
            out["logits"] = np.fromfile(job["out"], np.float32).reshape(n, -1)
    record_device(report["runtime"], f"wgpu {adapter['description']} (f16)")
    return report


@pytest.fixture(scope="module")
def deno_runs(packaged_tiny, tmp_path_factory):
    """{(case id, variant): (bundle, job, result)}: every case on the f16 kernels (where
    the bundle has them; picked by the backend) and on the f32 ones, in one Deno process."""
    tmp = tmp_path_factory.mktemp("deno")
    keys, jobs, bundles = [], [], {}
    for cid, (variant, quant, replan) in CASES.items():
        bundle, manifest, plan, plan_file = packaged_case(packaged_tiny, cid, variant, quant, replan, tmp)
        bundles[cid] = bundle
        vocab = manifest["model"]["config"]["vocab_size"]
        assert plan["variant_order"] == (["f32"] if quant in F32_ONLY else ["f16", "f32"])
        calls = case_calls(vocab, PROMPT_LEN, SECOND_PROMPT, DECODE_STEPS)
        for kv in plan["variant_order"]:
            keys.append((cid, kv))
            # the f16 variant is the backend's own choice ("auto"); the f32 one forced
            choice = "auto" if kv == plan["variant_order"][0] else kv
            jobs.append({"bundle": str(bundle), "variant": choice, "calls": calls, "greedy": GREEDY_STEPS,
                         "out": str(tmp / f"{cid}.{kv}.f32"), **({"plan": str(plan_file)} if plan_file else {})})
    report = run_deno(jobs, tmp)
    print(f"deno: {report['runtime']} on {report['adapter']['description']}, {len(jobs)} runs, {report['wall_s']} s")
    return {key: (bundles[key[0]], job, out) for key, job, out in zip(keys, jobs, report["jobs"])}


def check_against_reference(bundle: Path, calls: list, greedy: list[int], logits: np.ndarray, tol: float):
    """The logits of every call within `tol` of the reference's, and the greedy tokens equal
    the reference's argmax wherever its top-2 gap exceeds twice the allowed absolute error
    (only a closer race may flip). The reference follows the JS tokens. Returns the max error
    and how many greedy tokens were compared."""
    ref = ReferenceModel(bundle)
    errs, flips, compared = [], [], 0
    entry, tokens, past = calls[-1]
    end = past + (len(tokens) if entry == "prefill" else 1)  # past_len after the calls
    steps = [*map(tuple, calls), *(("decode", t, end + j) for j, t in enumerate(greedy))]
    assert len(logits) == len(steps)
    for i, ((entry, tokens, past), got) in enumerate(zip(steps, logits)):
        assert ref.past_len == past
        want = ref.prefill(tokens)[-1] if entry == "prefill" else ref.decode(tokens)
        errs.append(rel(got, want))
        if i + 1 >= len(calls) and i + 1 < len(steps):  # logits that chose a greedy token
            top2 = np.sort(want)[-2:]
            if top2[1] - top2[0] > 2 * tol * np.max(np.abs(want)):
                compared += 1
                if greedy[i + 1 - len(calls)] != int(np.argmax(want)):
                    flips.append(i)
    assert max(errs) <= tol, f"max rel err {max(errs):.2e} > {tol} (per call: {[f'{e:.1e}' for e in errs]})"
    assert not flips, f"greedy token differs from the reference's at steps {flips} despite a clear top-2 gap"
    return max(errs), compared


@pytest.mark.parametrize("cid,kv", RUNS)
def test_webgpu_in_deno_matches_reference(deno_runs, cid, kv):
    bundle, job, out = deno_runs[(cid, kv)]
    assert "error" not in out, out["error"]
    assert out["variant"] == kv and out["label"] == f"WebGPU {kv}"  # f16: the backend's own choice
    err, compared = check_against_reference(bundle, job["calls"], out["tokens"], out["logits"], TOL[kv])
    assert compared >= GREEDY_STEPS // 2, "too few clear greedy steps to compare"
    print(f"{cid} {kv}: max rel err {err:.2e}, {compared}/{GREEDY_STEPS} greedy tokens compared, "
          f"load {out['load_ms']} ms, run {out['run_ms']} ms")


# ---------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct q4f16: the default bundle on the default (f16) path

SMOLLM2_PROMPT = ("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
SMOLLM2_TOKENS = 8  # lavapipe is a CPU: a few tokens
SMOLLM2_TOL = 1e-2  # f16 activations over 30 layers: measured 2.3e-3 (4x)


@pytest.mark.slow
def test_smollm2_q4f16_generates_in_deno_with_f16_kernels(smollm2_bundle, tmp_path, request):
    from tokenizers import Tokenizer

    from test_runtime_e2e import report

    bundle = smollm2_bundle("q4f16")
    ids = Tokenizer.from_file(str(bundle / "tokenizer.json")).encode(SMOLLM2_PROMPT).ids
    job = {"bundle": str(bundle), "calls": [["prefill", ids, 0]], "greedy": SMOLLM2_TOKENS, "out": str(tmp_path / "l"),
           "generate": {"prompt": SMOLLM2_PROMPT, "max_tokens": SMOLLM2_TOKENS}}
    result = run_deno([job], tmp_path)
    [out] = result["jobs"]
    assert "error" not in out, out["error"]
    assert out["variant"] == "f16"
    # the engine API (tokenizer, shard cache, sampler at temperature 0) gives the same text
    eos = set(json.loads((bundle / "manifest.json").read_text())["generation"]["eos_token_ids"])
    tokens = out["tokens"][: next((i for i, t in enumerate(out["tokens"]) if t in eos), SMOLLM2_TOKENS)]
    gen = out["generated"]
    assert gen["backend"] == "WebGPU f16"
    assert gen["text"] == Tokenizer.from_file(str(bundle / "tokenizer.json")).decode(tokens), (gen, tokens)
    err, compared = check_against_reference(bundle, job["calls"], out["tokens"], out["logits"], SMOLLM2_TOL)
    report(request, f"SmolLM2 q4f16 in {result['runtime']} ({out['label']}, {out['adapter']}): "
                    f"max rel err {err:.1e}, {compared}/{SMOLLM2_TOKENS} tokens compared, tokens {out['tokens']}, "
                    f"load {out['load_ms'] / 1000:.1f} s, prefill {len(ids)} + {SMOLLM2_TOKENS} tokens "
                    f"{out['run_ms'] / 1000:.1f} s, engine.generate {gen['ms'] / 1000:.1f} s {gen['text']!r}, "
                    f"wall {result['wall_s']} s")
