"""Prompt-lookup speculative decoding with SmolLM2 q4f32 on the Wasm backend in Node:
greedy answers to three prompts (fix the typos in a paragraph, repeat a list with a
change, an open-ended one) and a seeded temperature-1 answer are those of plain decoding,
and drafts are accepted. Runs runtime_js/test/speculative-backends.test.ts on the bundle
($LLMPACK_SPECULATIVE_BUNDLE); `npm test` runs the same file on the tiny random Llama on
Wasm and WebGPU. (WebGPU on SwiftShader decodes SmolLM2 at under one token per second:
too slow for a test; runtime_js/bench/speculative.mjs measures it.)
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import require_node

RUNTIME = os.path.join(os.path.dirname(__file__), "..", "runtime_js")


@pytest.mark.slow
def test_smollm2_speculative_equals_plain_on_wasm(smollm2_bundle):
    require_node()
    node = shutil.which("node")
    bundle = smollm2_bundle("q4f32")
    subprocess.run([node, "build.mjs"], cwd=RUNTIME, check=True, capture_output=True, timeout=300)
    env = dict(os.environ, LLMPACK_SPECULATIVE_BUNDLE=str(bundle), LLMPACK_SPECULATIVE_BACKENDS="wasm")
    r = subprocess.run([node, "--test", "--test-reporter=tap", "dist/test/speculative-backends.test.js"], cwd=RUNTIME,
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    # the four speculative tests and the Wasm backend's "no verifyArgmax" check, none skipped
    assert "# pass 5" in r.stdout and "# skipped 0" in r.stdout, r.stdout[-3000:]
