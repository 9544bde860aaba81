"""Runs the JavaScript runtime's own test suite (runtime_js: typecheck, esbuild build,
node:test), which compares the JS tokenizer against Python `tokenizers` on SmolLM2 and
exercises the loader against a faulty local HTTP server."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parent.parent / "runtime_js"


def test_runtime_js_suite():
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Node.js/npm not installed")
    env = dict(os.environ, PYTHON=sys.executable)  # the reference tokenizer data is made with this interpreter
    if not (RUNTIME / "node_modules" / ".package-lock.json").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=RUNTIME, check=True, env=env)
    proc = subprocess.run([npm, "test"], cwd=RUNTIME, env=env, capture_output=True, text=True, timeout=900)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
    assert proc.returncode == 0, f"npm test failed:\n{tail}"
    assert "# fail 0" in proc.stdout, tail
