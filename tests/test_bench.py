"""`llmpack bench` refuses bad arguments with one line and exit 1 before starting Node
(the benchmark itself runs on SmolLM2 in tests/test_runtime_e2e.py::test_bench_smollm2)."""

from __future__ import annotations

import pytest

from test_package import run_cli


@pytest.mark.parametrize("args, message", [
    (["--where", "firefox"], "--where must be one of node, chromium, not 'firefox'"),
    (["--backend", "cuda"], "--backend must be one of webgpu, wasm, not 'cuda'"),
    (["--runs", "0"], "--runs and --prompt-tokens must be at least 1"),
    (["--threads", "2"], "--threads applies to --backend wasm"),
    (["--backend", "wasm", "--threads", "0,2"], "--threads wants positive counts like 1,4, not '0,2'"),
    (["--backend", "wasm", "--threads", "two"], "--threads wants positive counts"),
])
def test_bad_arguments(tmp_path, args, message):
    (tmp_path / "manifest.json").write_text("{}")
    r = run_cli("bench", tmp_path, *args, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {message}")


def test_not_a_bundle(tmp_path):
    r = run_cli("bench", tmp_path / "missing", timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == f"error: {tmp_path / 'missing'} is not a bundle (no manifest.json)"
