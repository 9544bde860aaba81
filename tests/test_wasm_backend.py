"""SmolLM2 q4f32 on the runtime's Wasm backend, in Node and in headless Chromium: greedy
tokens equal the numpy reference executor's (packager.reference).

This test makes the case (the bundle with its Wasm kernels, prompt ids, reference
tokens) and runs runtime_js/test/wasm.test.ts on it (`node --test`, after building the
runtime with esbuild); the JS test does the Node (1 and 2 worker threads) and Chromium
(cross-origin isolated with 2 threads, plain page with 1) runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import require_node
from packager.reference import ReferenceModel

RUNTIME = os.path.join(os.path.dirname(__file__), "..", "runtime_js")
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
NEW_TOKENS = 24


@pytest.mark.slow
def test_smollm2_greedy_on_wasm_matches_reference(smollm2_bundle, tmp_path):
    require_node()
    node = shutil.which("node")
    bundle = smollm2_bundle("q4f32")  # `llmpack package` builds the Wasm kernels into every bundle
    assert (bundle / "kernels" / "llmpack.wasm.json").is_file()

    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(bundle / "tokenizer.json")).encode(PROMPT, add_special_tokens=False).ids
    expected = ReferenceModel(bundle, verify=False).greedy(ids, NEW_TOKENS)
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"bundle": str(bundle), "prompt": PROMPT, "prompt_ids": ids, "new_tokens": NEW_TOKENS,
                                "expected": expected}))

    subprocess.run([node, "build.mjs"], cwd=RUNTIME, check=True, capture_output=True, timeout=300)
    env = dict(os.environ, LLMPACK_WASM_CASE=str(case))
    r = subprocess.run([node, "--test", "--test-reporter=tap", "dist/test/wasm.test.js"], cwd=RUNTIME, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    if os.path.exists(os.environ.get("CHROMIUM", "/usr/bin/chromium")):
        assert "# SKIP" not in r.stdout, r.stdout[-3000:]  # Node and Chromium both ran
