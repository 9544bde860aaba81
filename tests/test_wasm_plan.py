"""The whole plan on the runtime's Wasm backend (runtime_js/src/wasm/, the built module in
Node) against the numpy reference executor, for tiny random Llama checkpoints in every
weight format, split weights and chunked prefill included; and the kernel table that
packager.wasm_build derives from a plan.

Every case goes through one Node process (runtime_js/test/e2e/wasm_logits.mjs): it loads
each bundle with the Wasm backend, makes the calls (a prompt, a second prompt after the
cached one, decode steps) and writes their logits; the assertions live here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import require_node
from packager.plan import build_plan
from packager.reference import ReferenceModel
from packager.wasm_build import FILES, OPS, TABLE_FILE, build_wasm, f32_bits, kernel_table
from plan_cases import CASES as WEIGHT_FORMAT_CASES
from plan_cases import RING, SPLIT, case_calls, packaged_case, rel

RUNTIME = Path(__file__).resolve().parent.parent / "runtime_js"
DRIVER = RUNTIME / "test" / "e2e" / "wasm_logits.mjs"
TOL = 1e-4  # max |wasm - ref| / max |ref| of the logits (f32 throughout)
# ... where a mat-vec reads x rounded to int16 per group of 32 (the q4f16, q4f32 and q8f16
# dots, llmpack.h; the 8-bit tied head is q8f16 in every quantized case): measured up to
# 1.9e-4 over these cases (1.2e-6 in the f32 and f16 ones)
INT16_X_TOL = 5e-4
INT16_X_FORMATS = ("q4f16", "q4f32", "q8f16")
PROMPT_LEN, SECOND_PROMPT, DECODE_STEPS = 37, 21, 12

# every weight format (tests/plan_cases.py), and the other architectures
CASES = {**WEIGHT_FORMAT_CASES,
         "qwen2-q4f16": ("qwen2", "q4f16", {}), "qwen2-f32": ("qwen2", "f32", {}),
         "qwen3-q4f16": ("qwen3", "q4f16", {}), "qwen3-f32": ("qwen3", "f32", {}),
         "qwen3-untied-q2f16": ("qwen3-untied", "q2f16", {}),
         "qwen2-untied-q4f16-split": ("qwen2-untied", "q4f16", SPLIT),
         # Phi-3 (row views of the fused matrices; Phi-4-mini's partial rotary LongRoPE) and
         # SmolLM3 (a layer without RoPE); 64 f32 rows of down_proj need 32768 bytes
         "phi3-longrope-q4f16": ("phi3-longrope", "q4f16", {}), "phi3-longrope-f32": ("phi3-longrope", "f32", {}),
         "smollm3-f32": ("smollm3", "f32", {}), "phi3-window-f32-ring": ("phi3-window", "f32", RING),
         "phi3-f32-split": ("phi3", "f32", {**SPLIT, "max_binding_size": 32768}),
         # Gemma 2 / 3 and Mistral with a sliding window, their ring-buffer caches wrapping
         "gemma2-f32-ring": ("gemma2", "f32", RING), "gemma3-q4f16-ring": ("gemma3", "q4f16", RING),
         "gemma3-untied-f32": ("gemma3-untied", "f32", {}), "mistral-window-f32-ring": ("mistral-window", "f32", RING),
         # the 262,144-token tied table in 4 row blocks: gather and logits over every block
         "gemma3-vocab262k-q4f16-split": ("gemma3-vocab262k", "q4f16", {"package": {"max_binding_size": 4 << 20}})}
THREADS = {"untied-q4f16-split": 2, "qwen2-untied-q4f16-split": 2, "phi3-f32-split": 2,  # threaded; 1 elsewhere
           "gemma3-q4f16-ring": 2}
# f32 bundles (ring plans) that greedy-decode GREEDY tokens after a prompt longer than the
# window: their argmax must be transformers' greedy tokens (fed back as decode calls)
GREEDY_CASES = {"gemma2-greedy": "gemma2", "gemma3-greedy": "gemma3", "mistral-window-greedy": "mistral-window"}
GREEDY, GREEDY_PROMPT = 32, 23


def hf_greedy_tokens(src: Path, prompt: list[int]) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    from conftest import hf_greedy

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    return hf_greedy(model, prompt, GREEDY)


@pytest.fixture(scope="module")
def wasm_runs(packaged_tiny, tiny_llama, tmp_path_factory):
    """{case id: (bundle, calls, logits per call, the driver's report)}: every case on the
    runtime's Wasm backend, in one Node process."""
    require_node(modules=False)
    if not (RUNTIME / "dist" / "llmpack.js").is_file():
        pytest.fail("the runtime is not built: run `npm run build` in runtime_js (scripts/setup.sh does)")
    tmp = tmp_path_factory.mktemp("wasm-plan")
    jobs, bundles = {}, {}
    for cid, (variant, quant, replan) in CASES.items():
        bundle, manifest, _, plan_file = packaged_case(packaged_tiny, cid, variant, quant, replan, tmp)
        bundles[cid] = bundle
        calls = case_calls(manifest["model"]["config"]["vocab_size"], PROMPT_LEN, SECOND_PROMPT, DECODE_STEPS)
        jobs[cid] = {"bundle": str(bundle), "threads": THREADS.get(cid, 1), "calls": calls,
                     "out": str(tmp / f"{cid}.f32"), **({"plan": str(plan_file)} if plan_file else {})}
    for cid, variant in GREEDY_CASES.items():
        bundle, manifest, _, plan_file = packaged_case(packaged_tiny, cid, variant, "f32", RING, tmp)
        prompt = np.random.default_rng(5).integers(3, 320, GREEDY_PROMPT).tolist()
        hf = hf_greedy_tokens(tiny_llama(variant), prompt)
        calls = [["prefill", prompt, 0]] + [["decode", t, GREEDY_PROMPT + i] for i, t in enumerate(hf[:-1])]
        bundles[cid] = (bundle, hf)
        jobs[cid] = {"bundle": str(bundle), "threads": 1, "calls": calls, "out": str(tmp / f"{cid}.f32")}
    (tmp / "spec.json").write_text(json.dumps({"jobs": list(jobs.values())}))
    r = subprocess.run(["node", str(DRIVER), str(tmp / "spec.json")], cwd=RUNTIME, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-6000:]
    reports = json.loads(r.stdout.strip().splitlines()[-1])
    out = {}
    for (cid, job), report in zip(jobs.items(), reports):
        calls = job["calls"]
        logits = None if "error" in report else np.fromfile(job["out"], np.float32).reshape(len(calls), -1)
        out[cid] = (bundles[cid], calls, logits, report)
    return out


@pytest.mark.parametrize("cid", CASES)
def test_plan_on_wasm_matches_reference(wasm_runs, cid):
    bundle, calls, logits, report = wasm_runs[cid]
    assert "error" not in report, report["error"]
    assert report["threads"] == THREADS.get(cid, 1) and report["label"].startswith("Wasm SIMD")
    if cid in ("qwen2-q4f16", "qwen2-f32"):  # decode's q/k/v with their biases fused: the Wasm ops ran them
        plan = json.loads((bundle / "plan.json").read_text())
        assert {"matvec_rope_bias", "matvec_bias"} <= {k["template"] for k in plan["kernels"].values()}
    ref = ReferenceModel(bundle)
    formats = {t["format"] for t in json.loads((bundle / "manifest.json").read_text())["tensors"]}
    tol = INT16_X_TOL if formats & set(INT16_X_FORMATS) else TOL
    for (entry, tokens, past), got in zip(calls, logits):
        assert ref.past_len == past
        want = ref.prefill(tokens)[-1] if entry == "prefill" else ref.decode(tokens)
        assert rel(got, want) <= tol, (entry, past, rel(got, want))


@pytest.mark.parametrize("cid", GREEDY_CASES)
def test_greedy_on_wasm_equals_transformers(wasm_runs, cid):
    (bundle, hf), calls, logits, report = wasm_runs[cid]
    assert "error" not in report, report["error"]
    assert [int(np.argmax(lg)) for lg in logits] == hf


def test_kernel_table(packaged_tiny):
    bundle = packaged_tiny("llama3", "q4f16", quantizer="rtn")
    manifest = json.loads((bundle / "manifest.json").read_text())
    plan = json.loads((bundle / "plan.json").read_text())
    table, formats, tables = kernel_table(manifest, plan)
    # every kernel but the WebGPU-only ones (the "argmax" and "topk" entries, which Wasm does not run)
    webgpu_only = {d["kernel"] for e in ("argmax", "topk") for d in plan["entries"][e]["dispatches"]}
    assert webgpu_only == {"argmax", "topk_partial.k64.e8", "topk_merge.k64"}
    assert set(table["kernels"]) == set(plan["kernels"]) - webgpu_only
    assert sorted(formats) == ["q4f16", "q8f16"]  # matrices and the 8-bit head
    assert len(tables) == 1 and tables[0].dtype == np.float32
    for name, k in table["kernels"].items():
        op = OPS[k["op"]]
        template = plan["kernels"][name]["template"]  # matvec and matvec_batch run as matmul
        assert op == ("matmul" if template in ("matvec", "matvec_batch") else template)
    files = build_wasm(manifest, plan)
    assert set(files) == {FILES["single"], FILES["threads"], TABLE_FILE}
    meta = json.loads(files[TABLE_FILE])
    assert meta["modules"]["threads"]["heap_base"] > 0 and meta["stack_bytes"] % 65536 == 0
    # rope's constants; a plan from before partial rotary and LongRoPE (no HALF, SCALE): whole heads, factor 1
    [(rname, rope)] = [(n, k) for n, k in plan["kernels"].items() if k["template"] == "rope"]
    hd = rope["consts"]["HD"]
    assert table["kernels"][rname]["consts"][:5] == [rope["consts"]["NH"], rope["consts"]["NKV"], hd, hd // 2,
                                                     f32_bits(1.0)]
    old = json.loads(json.dumps(plan))
    for key in ("HALF", "SCALE"):
        del old["kernels"][rname]["consts"][key]
    assert kernel_table(manifest, old)[0]["kernels"][rname] == table["kernels"][rname]
    # a plan from before sliding windows, soft-caps and scaled embeddings: the same calls
    old = json.loads(json.dumps(plan))
    for k in old["kernels"].values():
        for key in ("WINDOW", "SLOTS", "SOFTCAP", "CACHE") + (("SCALE",) if k["template"] == "embedding" else ()):
            k["consts"].pop(key, None)
    same = {n: k for n, k in kernel_table(manifest, old)[0]["kernels"].items() if not n.startswith("kv_append")}
    assert same == {n: k for n, k in table["kernels"].items() if not n.startswith("kv_append")}
    # the same kernels whatever the buffer limits (splits do not change kernel specs)
    plan2, _ = build_plan(manifest, max_binding_size=16384, context_window=128, prefill_chunk=8)
    assert any(name.count(":") == 2 for name in plan2["buffers"])
    assert kernel_table(manifest, plan2)[0]["kernels"].keys() <= table["kernels"].keys()
