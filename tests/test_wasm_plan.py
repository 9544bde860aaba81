"""The whole plan on the Wasm kernels (tests/wasm_executor.py, the runtime's memory
layout and program format on wasmtime) against the numpy reference executor, for tiny
random Llama checkpoints in every weight format, split weights included; and the
kernel table that packager.wasm_build derives from a plan.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from packager.plan import build_plan
from packager.reference import ReferenceModel
from packager.wasm_build import FILES, OPS, TABLE_FILE, build_wasm, kernel_table

pytest.importorskip("wasmtime")
from wasm_executor import WasmExecutor  # noqa: E402

TOL = 1e-4  # max |wasm - ref| / max |ref| of the logits (f32 throughout)
PROMPT_LEN, SECOND_CHUNK, DECODE_STEPS = 37, 21, 12


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a))
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture
def tiny_bundle(packaged_tiny):
    """The tiny models with plain rounding: fast to package, and the plan is what is tested."""
    return lambda variant, quant, **kw: packaged_tiny(variant, quant, quantizer="rtn", **kw)


CASES = [("gqa", "q4f32", {}), ("llama3", "q4f16", {}), ("untied", "q8f16", {}), ("plain", "q3f16", {}),
         ("gqa", "q2f16", {}), ("gqa", "f16", {}), ("untied", "f32", {}),
         # split weights (row blocks) and a small prefill chunk
         ("untied", "q4f16", {"max_binding_size": 8192, "prefill_chunk": 8, "context_window": 128})]


@pytest.mark.parametrize("variant,quant,kw", CASES, ids=[f"{v}-{q}{'-split' if k else ''}" for v, q, k in CASES])
def test_plan_on_wasm_matches_reference(tiny_bundle, variant, quant, kw):
    bundle = tiny_bundle(variant, quant)
    manifest = json.loads((bundle / "manifest.json").read_text())
    plan = json.loads((bundle / "plan.json").read_text())
    if kw:  # re-plan with a small chunk: the executor reads plan.json, so write a copy
        import shutil

        from packager.compile import compile_artifacts

        copy = bundle.parent / f"{bundle.name}-replan"
        if not copy.exists():
            shutil.copytree(bundle, copy)
        files, _ = compile_artifacts(manifest, validate=False, **kw)
        (copy / "plan.json").write_bytes(files["plan.json"])
        bundle, plan = copy, json.loads(files["plan.json"])
        assert any(name.count(":") == 2 for name in plan["buffers"]), "expected split weights"
    files = build_wasm(manifest, plan, threads=False)
    ex = WasmExecutor(bundle, files=files)
    ref = ReferenceModel(bundle)
    rng = np.random.default_rng(0)
    vocab = manifest["model"]["config"]["vocab_size"]
    prompt = rng.integers(3, vocab, PROMPT_LEN)
    assert rel(ex.prefill(prompt), ref.prefill(prompt)[-1]) <= TOL
    more = rng.integers(3, vocab, SECOND_CHUNK)  # a second chunk after cached tokens
    assert rel(ex.prefill(more), ref.prefill(more)[-1]) <= TOL
    for _ in range(DECODE_STEPS):
        tok = int(rng.integers(3, vocab))
        assert rel(ex.decode(tok), ref.decode(tok)) <= TOL


def test_kernel_table(tiny_bundle):
    bundle = tiny_bundle("llama3", "q4f16")
    manifest = json.loads((bundle / "manifest.json").read_text())
    plan = json.loads((bundle / "plan.json").read_text())
    table, formats, tables = kernel_table(manifest, plan)
    assert set(table["kernels"]) == set(plan["kernels"])
    assert sorted(formats) == ["q4f16", "q8f16"]  # matrices and the 8-bit head
    assert len(tables) == 1 and tables[0].dtype == np.float32
    for name, k in table["kernels"].items():
        op = OPS[k["op"]]
        assert op == ("matmul" if plan["kernels"][name]["template"] == "matvec" else plan["kernels"][name]["template"])
    files = build_wasm(manifest, plan)
    assert set(files) == {FILES["single"], FILES["threads"], TABLE_FILE}
    meta = json.loads(files[TABLE_FILE])
    assert meta["modules"]["threads"]["heap_base"] > 0 and meta["stack_bytes"] % 65536 == 0
    # the same kernels whatever the buffer limits (splits do not change kernel specs)
    plan2, _ = build_plan(manifest, max_binding_size=16384, context_window=128, prefill_chunk=8)
    assert any(name.count(":") == 2 for name in plan2["buffers"])
    assert kernel_table(manifest, plan2)[0]["kernels"].keys() <= table["kernels"].keys()
