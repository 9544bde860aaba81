"""The chat page in headless Chromium (Debian's, driven by playwright-core from
runtime_js/node_modules): `llmpack serve` on a free loopback port serves a real bundle
(a tiny random Llama packaged by package_model) and web_demo/; web_demo/test/chat_page.mjs
picks the model, loads it, asks two questions, stops a third answer, and takes
screenshots into test-artifacts/web_demo/ at 1280x800 and 390x844.

The page runs the runtime's own backend when one is registered ("webgpu" or "wasm");
until the runtime has one, the driver registers a scripted stand-in in the page only.
The test says which one ran (a warning in pytest's summary when it was the stand-in).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from packager.serve import create_app, ensure_runtime
from test_registry_helpers import ROOT
from test_serve import running

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT = ROOT / "runtime_js" / "node_modules" / "playwright-core"
DRIVER = ROOT / "web_demo" / "test" / "chat_page.mjs"
ARTIFACTS = ROOT / "test-artifacts" / "web_demo"
REAL_BACKENDS = {"webgpu", "wasm"}

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not PLAYWRIGHT.exists(), reason="runtime_js/node_modules missing: run npm ci in runtime_js"),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]

REPLIES = [
    "The capital of France is Paris. It sits on the Seine.",
    "Rome is the capital of Italy.",
    "Once upon a time there was a tiny model that kept talking. " * 30,
]


@pytest.fixture(scope="module")
def bundle(tiny_llama, tmp_path_factory):
    from packager.bundle import package_model

    out = tmp_path_factory.mktemp("demo") / "bundles" / "tiny-chat"
    package_model(tiny_llama("gqa"), out, quant="q4f32", shard_size=16 << 10)  # several shards
    return out


def test_chat_page(bundle, tmp_path):
    from tokenizers import Tokenizer

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 2
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    replies = [tok.encode(r, add_special_tokens=False).ids for r in REPLIES]
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR") or str(tmp_path)}
    app = create_app([bundle.parent], runtime_dist=ensure_runtime(log=lambda _: None))
    with running(app) as base:
        env["LLMPACK_DEMO_TEST"] = json.dumps({
            "url": f"{base}?seed=7", "modelId": "tiny-chat", "replies": replies,  # seed: reproducible answers
            "eos": manifest["generation"]["eos_token_ids"][0], "vocab": manifest["model"]["config"]["vocab_size"],
            "chromium": CHROMIUM, "artifacts": str(ARTIFACTS),
        })
        r = subprocess.run(["node", str(DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])

    real = out["backend"] in REAL_BACKENDS
    print(f"chat page backend: {out['backend']} (badge {out['badge']!r}); screenshots in {ARTIFACTS}")
    if not real:
        warnings.warn(f"the chat page test ran with the scripted stand-in backend {out['backend']!r}: the runtime "
                      "registers no real backend yet")
    assert out["isolated"] is True, "COOP/COEP should make the page cross-origin isolated"
    assert out["compat"]["notices"] == [
        'error: Your GPU lacks "timestamp-query"', "error: Your GPU's limits are too small for this model",
        "info: No 16-bit float shaders on this GPU", "warn: This model may not fit in memory"]
    assert out["compat"]["insecure"] == ["This page is not a secure context"]
    assert out["compat"]["errors"] == ["This browser cannot run the model", "A weight file could not be loaded",
                                       "The model could not be downloaded", "Not enough GPU memory"]
    assert out["loadState"] == "ready", out
    assert out["console"] == [], out["console"]
    # progress: MB and shard counts, up to the last shard
    shards = len(manifest["shards"])
    assert any(f"shard {shards} of {shards}" in p for p in out["progress"]), out["progress"]
    assert any(" MB" in p for p in out["progress"]), out["progress"]
    assert out["badge"].strip() and out["badge"] != "no model loaded"

    for turn, expected in (("first", REPLIES[0]), ("second", REPLIES[1])):
        answer = out[turn]
        assert not answer["failed"], answer
        assert answer["distinctLengths"] >= 3, answer  # the answer grew over several DOM updates
        assert answer["finish"] in ("stop", "length") and "tokens/s" in answer["meta"], answer
        assert not answer["grewAfterEnd"]
        if not real:
            assert answer["text"] == expected and answer["finish"] == "stop"
        else:
            assert answer["text"].strip()
    # multi-turn: the whole conversation is sent each turn
    assert out["messages"][:4] == ["user", "assistant", "user", "assistant"]
    if not real:  # the second turn reused the first turn's KV cache: the same conversation, extended
        assert len(out["prefills"]) == 2 and out["prefills"][0]["pastLen"] == 0 and out["prefills"][1]["pastLen"] > 0

    stopped = out["stopped"]
    assert stopped["finish"] == "abort" and "stopped" in stopped["meta"], stopped
    assert not stopped["grewAfterEnd"]
    assert 12 <= len(stopped["text"]) < len(REPLIES[2]) if not real else len(stopped["text"]) >= 12

    assert out["phoneOverflow"] is False, "the page scrolls sideways at 390 px"
    assert out["panelOpenAfterLoad"] is False and out["panelOpens"] is True  # the phone's model panel
    # without the stand-in: a real backend loads, or the page says plainly why it cannot
    if real:
        assert out["plainLoad"] == "ready" and out["plainBackend"] == out["backend"]
    else:
        assert out["plainLoad"] == "error" and "cannot run the model" in out["plainNotices"], out["plainNotices"]
    assert "This browser has no WebGPU" in out["noGpuBefore"]
    if out["noGpuLoad"] == "error":
        assert "no WebGPU" in out["noGpuAfter"], out["noGpuAfter"]
    names = {Path(p).name for p in out["screenshots"]}
    assert {"desktop-chat.png", "phone-chat.png", "phone-panel.png", "phone-start.png"} <= names
    for p in out["screenshots"]:
        assert Path(p).stat().st_size > 10_000, p
