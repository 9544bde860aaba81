"""The plan's optional "verify" entry (speculative decoding's batched check, docs/plan.md): a
prefill run whose head computes the logits of every token. Its structure (the layers exactly
prefill's, the other entries unchanged), and its rows of logits on wgpu-py and on the runtime's
Wasm backend (Node) against the numpy reference's logits at every position, with the head
split into row blocks, Gemma's final soft-cap and ring-buffer caches; and the KV rows it
wrote serving a decode step after a rollback into them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import require_node
from gpu_executor import GpuExecutor
from packager.compile import compile_artifacts
from packager.errors import PackError
from packager.kernel_table import TEMPLATES
from packager.plan import build_plan
from packager.reference import ReferenceModel
from plan_cases import RING, rel
from test_kernels import cpu_argmax
from test_plan_gpu import F16_TOL, F32_TOL
from test_wasm_plan import DRIVER, INT16_X_FORMATS, INT16_X_TOL, RUNTIME, TOL

# case id -> (tiny variant, weight format, package_model keywords, re-plan keywords or None)
CASES = {
    "gqa-q4f32": ("gqa", "q4f32", {}, None),
    # every weight in row blocks, the head too (each block writes its columns of every row)
    "untied-q4f16-split": ("untied", "q4f16", {}, {"max_binding_size": 4096, "prefill_chunk": 8,
                                                    "context_window": 64}),
    # the final logit soft-cap over every row; sliding-window layers in ring buffers
    "gemma2-f32-ring": ("gemma2", "f32", RING["package"], None),
}
PROMPT, ACCEPTED = 23, 3  # the prompt crosses Gemma 2's window (16)


def case(packaged_tiny, cid):
    """(bundle, manifest, plan, files or None): files are a re-planned case's plan and kernels."""
    variant, quant, package, replan = CASES[cid]
    bundle = packaged_tiny(variant, quant, quantizer="rtn", **package)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if replan is None:
        return bundle, manifest, json.loads((bundle / "plan.json").read_text()), None
    files, _ = compile_artifacts(manifest, validate=False, **replan)
    return bundle, manifest, json.loads(files["plan.json"]), files


def calls_of(plan, vocab):
    """A prompt, then as many drafts as the verify entry takes, then one token decoded after
    ACCEPTED of them were accepted (a rollback into the verified rows)."""
    rng = np.random.default_rng(7)
    prompt = rng.integers(3, vocab, PROMPT).tolist()
    drafts = rng.integers(3, vocab, plan["entries"]["verify"]["max_seq_len"]).tolist()
    return prompt, drafts, int(rng.integers(3, vocab))


def reference(bundle, prompt, drafts, token):
    """The reference's logits of every draft (one prefill after the prompt), and of `token`
    decoded after the prompt and the first ACCEPTED drafts."""
    ref = ReferenceModel(bundle)
    ref.prefill(prompt)
    rows = ref.prefill(drafts)
    ref.reset()
    ref.prefill(prompt + drafts[:ACCEPTED])
    return rows, ref.decode(token)


def head_dispatches(entry):
    return [d for d in entry["dispatches"] if any(b in ("x_last", "logits", "x_last_rows", "logits_rows")
                                                  for _, b in d["bindings"])]


# ---------------------------------------------------------------------------------------
# structure (no GPU)


def test_verify_entry_structure(packaged_tiny):
    m = json.loads((packaged_tiny("untied", "q4f16", quantizer="rtn") / "manifest.json").read_text())
    vocab = m["model"]["config"]["vocab_size"]
    plan, _ = build_plan(m)
    verify, prefill = plan["entries"]["verify"], plan["entries"]["prefill"]
    assert verify["max_seq_len"] == 16 and plan["outputs"]["logits_rows"] == "logits_rows"
    assert plan["buffers"]["logits_rows"] == {"kind": "output", "dtype": "f32", "elements": 16 * vocab}
    # the layers are prefill's dispatches, but for the last residual add, which the final norm
    # takes in here (fuse_add_rmsnorm: it norms every row the add wrote), and the linear ops,
    # which run as matvec_batch (one workgroup per 16 rows, the tokens in passes of 8) instead
    # of matmul's 32-token tiles, same bindings and uniforms; the head runs over seq_len rows
    head = head_dispatches(verify)
    layers = verify["dispatches"][:len(verify["dispatches"]) - len(head)]
    prefill_layers = prefill["dispatches"][:len(prefill["dispatches"]) - len(head_dispatches(prefill))]
    assert len(layers) == len(prefill_layers) - 1 and prefill_layers[-1]["label"] == "layer 1 residual"
    batched = 0
    for v, p in zip(layers, prefill_layers):
        if v["kernel"].startswith("matvec_batch."):
            batched += 1
            assert p["kernel"] == v["kernel"].replace("matvec_batch.", "matmul.", 1)
            assert v["workgroups"] == [str(-(-int(v["uniforms"][2]) // 16)), "1", "1"]
            v, p = ({k: d[k] for k in ("label", "bindings", "uniforms")} for d in (v, p))
        assert v == p
    assert batched == 2 * 7  # q, k, v, o, gate, up, down in both layers
    norm, lm_head = head
    assert norm["label"] == "layer 1 residual + final norm (every token)"
    assert norm["workgroups"][0] == "seq_len" and norm["uniforms"] == ["0"]
    assert lm_head["kernel"].startswith("matvec_batch.") and lm_head["kernel"].endswith(".f32out")
    assert lm_head["bindings"][:2] == [[1, "x_last_rows"], [2, "logits_rows"]]
    # "verify_argmax": the argmax kernel over every row of logits_rows, one workgroup a row,
    # [id, f32 bits] per row into verify_tokens (u32, 2 words a row of the verify entry)
    va = plan["entries"]["verify_argmax"]
    assert va["max_seq_len"] == verify["max_seq_len"] and plan["outputs"]["verify_tokens"] == "verify_tokens"
    assert plan["buffers"]["verify_tokens"] == {"kind": "output", "dtype": "u32", "elements": 2 * 16}
    (d,) = va["dispatches"]
    assert d["kernel"] == "argmax" and plan["kernels"]["argmax"]["template"] == "argmax"
    assert d["bindings"] == [[1, "logits_rows"], [2, "verify_tokens"]]
    assert d["uniforms"] == [str(vocab)] and d["workgroups"] == ["1", "seq_len", "1"]
    # without the entry (verify_chunk=0) every other entry and buffer is the same
    old, _ = build_plan(m, verify_chunk=0)
    assert "verify" not in old["entries"] and "logits_rows" not in old["outputs"]
    assert "verify_argmax" not in old["entries"] and "verify_tokens" not in old["outputs"]
    assert {k: v for k, v in plan["entries"].items() if k not in ("verify", "verify_argmax")} == old["entries"]
    assert set(plan["buffers"]) - set(old["buffers"]) == {"logits_rows", "x_last_rows", "verify_tokens"}
    # at most the prefill chunk: by default min(16, prefill chunk)
    assert build_plan(m, prefill_chunk=8)[0]["entries"]["verify"]["max_seq_len"] == 8
    assert build_plan(m, prefill_chunk=8, verify_chunk=5)[0]["entries"]["verify"]["max_seq_len"] == 5
    with pytest.raises(PackError, match="verify chunk 9 must lie between 0"):
        build_plan(m, prefill_chunk=8, verify_chunk=9)
    # a split head: one matmul per row block, each writing its columns of every row
    split, _ = build_plan(m, max_binding_size=4096, prefill_chunk=8, context_window=64)
    blocks = [d for d in split["entries"]["verify"]["dispatches"] if d["label"].startswith("lm_head")]
    assert len(blocks) > 1 and all(d["bindings"][1] == [2, "logits_rows"] for d in blocks)
    assert sum(int(d["uniforms"][2]) for d in blocks) == vocab
    assert [int(d["uniforms"][1]) for d in blocks] == sorted(int(d["uniforms"][1]) for d in blocks)


def test_bundle_without_verify_gets_its_wasm_kernels(packaged_tiny, tmp_path):
    """A bundle whose plan lacks the entry (packaged before it, or with verify_chunk=0):
    `python -m packager.wasm_build` still builds its kernels, those of its entries only."""
    from packager.wasm_build import TABLE_FILE

    bundle = packaged_tiny("gqa", "q4f16", quantizer="rtn", verify_chunk=0)
    plan = json.loads((bundle / "plan.json").read_text())
    assert "verify" not in plan["entries"] and "logits_rows" not in plan["buffers"]
    r = subprocess.run([sys.executable, "-m", "packager.wasm_build", str(bundle)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    table = json.loads((bundle / TABLE_FILE).read_text())
    webgpu_only = {n for n, k in plan["kernels"].items() if TEMPLATES[k["template"]].wasm_op == "-"}
    assert "argmax" in webgpu_only and set(table["kernels"]) == set(plan["kernels"]) - webgpu_only
    assert not any(k.startswith("matmul.") and k.endswith(".f32out") for k in table["kernels"])


# ---------------------------------------------------------------------------------------
# wgpu-py


@pytest.mark.parametrize("cid", CASES)
def test_verify_on_wgpu_matches_reference(packaged_tiny, cid):
    bundle, manifest, plan, files = case(packaged_tiny, cid)
    prompt, drafts, token = calls_of(plan, manifest["model"]["config"]["vocab_size"])
    want_rows, want_next = reference(bundle, prompt, drafts, token)
    for variant in plan["variant_order"]:
        tol = F32_TOL if variant == "f32" else F16_TOL
        ex = GpuExecutor(bundle, files=files, variant=variant)
        ex.prefill(prompt)
        rows = ex.verify(drafts)
        assert rows.shape == want_rows.shape
        errs = [rel(got, want) for got, want in zip(rows, want_rows)]
        assert max(errs) <= tol, (variant, errs)
        # the "verify_argmax" entry on those rows: each row's greedy id, as the CPU sampler's argmax
        ex.run("verify_argmax", len(drafts), 0)
        ids = ex.read("verify_tokens").reshape(-1, 2)[:len(drafts), 0]
        assert ids.tolist() == [cpu_argmax(r) for r in rows], variant
        ex.past_len = PROMPT + ACCEPTED  # roll back into the verified rows
        assert rel(ex.decode(token), want_next) <= tol, variant


# ---------------------------------------------------------------------------------------
# the runtime's Wasm backend (Node)


def test_verify_on_wasm_matches_reference(packaged_tiny, tmp_path):
    require_node(modules=False)
    if not (RUNTIME / "dist" / "llmpack.js").is_file():
        pytest.fail("the runtime is not built: run `npm run build` in runtime_js (scripts/setup.sh does)")
    jobs, wants = [], []
    for cid in CASES:
        bundle, manifest, plan, files = case(packaged_tiny, cid)
        prompt, drafts, token = calls_of(plan, manifest["model"]["config"]["vocab_size"])
        wants.append(reference(bundle, prompt, drafts, token))
        job = {"bundle": str(bundle), "threads": 2 if "split" in cid else 1, "out": str(tmp_path / f"{cid}.f32"),
               "calls": [["prefill", prompt, 0], ["verify", drafts, PROMPT], ["decode", token, PROMPT + ACCEPTED]]}
        if files is not None:
            (tmp_path / f"{cid}.plan.json").write_bytes(files["plan.json"])
            job["plan"] = str(tmp_path / f"{cid}.plan.json")
        jobs.append(job)
    (tmp_path / "spec.json").write_text(json.dumps({"jobs": jobs}))
    r = subprocess.run(["node", str(DRIVER), str(tmp_path / "spec.json")], cwd=RUNTIME, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-6000:]
    reports = json.loads(r.stdout.strip().splitlines()[-1])
    for cid, job, report, (want_rows, want_next) in zip(CASES, jobs, reports, wants):
        assert "error" not in report, (cid, report["error"])
        tol = INT16_X_TOL if CASES[cid][1] in INT16_X_FORMATS else TOL
        vocab = want_next.shape[0]
        got = np.fromfile(job["out"], np.float32).reshape(-1, vocab)
        assert got.shape[0] == 1 + len(want_rows) + 1, cid
        errs = [rel(g, w) for g, w in zip(got[1:-1], want_rows)]
        assert max(errs) <= tol, (cid, errs)
        assert rel(got[-1], want_next) <= tol, cid
