"""The chat page in headless Chromium (Debian's, driven by playwright-core from
runtime_js/node_modules): `llmpack serve` on a free loopback port serves a real bundle
(a tiny random Llama packaged by package_model) and web_demo/; web_demo/test/chat_page.mjs
picks the model, loads it, asks two questions, stops a third answer, recovers from a
(simulated) GPU device loss with Reload model, asks again greedily with speculative
decoding switched on, and takes screenshots into
test-artifacts/web_demo/ at 1280x800 and 390x844.

The page runs the runtime's own choice of backend ("auto"): Wasm here, where Chromium's
only WebGPU adapter is SwiftShader (a software renderer), and says why; the backend select
then loads the model again on WebGPU; a page whose browser has no WebGPU runs Wasm too.
The random-weight model answers gibberish, so the test checks the shape of the
conversation (streaming, stop, KV cache reuse), not the words.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import require, require_node
from packager.serve import create_app
from test_registry_helpers import ROOT
from test_serve import running

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT = ROOT / "runtime_js" / "node_modules" / "playwright-core"
DRIVER = ROOT / "web_demo" / "test" / "chat_page.mjs"
ARTIFACTS = ROOT / "test-artifacts" / "web_demo"



@pytest.fixture(autouse=True, scope="module")  # module: before the module's other fixtures
def components():
    require_node()
    require("chromium", Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}")

MAX_TOKENS = 40


def tokens_in(meta: str) -> int:
    """The token count of an answer's meta line ("17 tokens · 110.5 tokens/s · stopped")."""
    return int(re.match(r"(\d+) tokens", meta).group(1))


@pytest.fixture(scope="module")
def bundle(tiny_llama, tmp_path_factory):
    from packager.bundle import package_model

    out = tmp_path_factory.mktemp("demo") / "bundles" / "tiny-chat"
    package_model(tiny_llama("gqa"), out, quant="q4f32", shard_size=16 << 10)  # several shards
    return out


def test_chat_page(bundle, tmp_path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 2
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR") or str(tmp_path)}
    app = create_app([bundle.parent])  # the installed runtime and page (packager.web_assets)
    with running(app) as base:
        env["LLMPACK_DEMO_TEST"] = json.dumps({
            "url": f"{base}?seed=7", "modelId": "tiny-chat",  # seed: reproducible answers
            "chromium": CHROMIUM, "artifacts": str(ARTIFACTS), "maxTokens": MAX_TOKENS,
        })
        r = subprocess.run(["node", str(DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])

    print(f"chat page backend: {out['backend']} (badge {out['badge']!r}); screenshots in {ARTIFACTS}")
    assert out["backend"] == "wasm", out["backend"]
    # why: SwiftShader is a software renderer, passed over while Wasm runs
    assert re.search(r"^Wasm SIMD, \d threads?: webgpu: the WebGPU adapter \(.*swiftshader.*\) is a software renderer",
                     out["reason"], re.I), out["reason"]
    assert "software renderer" in out["badgeTitle"]
    assert out["isolated"] is True, "COOP/COEP should make the page cross-origin isolated"
    assert out["compat"]["notices"] == [
        'error: Your GPU lacks "timestamp-query"', "error: Your GPU's limits are too small for this model",
        "info: No 16-bit float shaders on this GPU", "warn: This model may not fit in memory"]
    assert out["compat"]["insecure"] == ["This page is not a secure context"]
    assert out["compat"]["errors"] == ["This browser cannot run the model", "A weight file could not be loaded",
                                       "The model could not be downloaded", "Not enough GPU memory"]
    assert "wasm: needs 5.00 GiB of Wasm memory" in out["compat"]["noBackend"]  # each backend's reason, shown
    assert out["loadState"] == "ready", out
    assert out["console"] == [], out["console"]
    # progress: MB and shard counts, up to the last shard
    shards = len(manifest["shards"])
    assert any(f"shard {shards} of {shards}" in p for p in out["progress"]), out["progress"]
    assert any(" MB" in p for p in out["progress"]), out["progress"]
    assert out["badge"].strip() and out["badge"] != "no model loaded"

    for turn in ("first", "second"):
        answer = out[turn]
        assert not answer["failed"], answer
        assert answer["distinctLengths"] >= 3, answer  # the answer grew over several DOM updates
        assert answer["finish"] in ("stop", "length") and "tokens/s" in answer["meta"], answer
        assert not answer["grewAfterEnd"]
        assert answer["text"].strip()
        assert tokens_in(answer["meta"]) <= MAX_TOKENS
    # multi-turn: the whole conversation goes through the chat template each turn, and the
    # second turn reuses the first turn's KV cache (the same conversation, extended)
    assert out["messages"][:4] == ["user", "assistant", "user", "assistant"]
    assert len(out["prefills"]) == 2 and out["prefills"][0]["pastLen"] == 0 and out["prefills"][1]["pastLen"] > 0

    stopped = out["stopped"]
    assert stopped["finish"] == "abort" and "stopped" in stopped["meta"], stopped
    assert not stopped["grewAfterEnd"]
    assert len(stopped["text"]) >= 12 and tokens_in(stopped["meta"]) < 2000  # stopped well before max tokens

    # a lost GPU device (simulated DeviceLostError): the turn fails with a notice and a Reload
    # model button (absent before), sending waits for it; engine.reload() gives a new backend
    assert out["reloadButtonBefore"] is False
    assert out["lost"]["failed"] and "The GPU stopped" in out["lost"]["meta"], out["lost"]
    assert "Reload model" in out["lostNotice"] and out["lostSendDisabled"] is True, out["lostNotice"]
    assert out["reloaded"] == {"state": "ready", "notice": False, "newBackend": True}, out["reloaded"]
    assert not out["afterReload"]["failed"] and out["afterReload"]["text"].strip(), out["afterReload"]

    # speculative decoding: off until switched on (then remembered); the same greedy answer
    # (the same question in a new chat), and the stats line says how many drafted tokens were accepted
    assert out["speculativeAtStart"] is False and out["speculativeRemembered"] is True
    spec, plain = out["speculative"], out["afterReload"]
    assert not spec["failed"] and (spec["text"], spec["finish"]) == (plain["text"], plain["finish"]), (spec, plain)
    assert tokens_in(spec["meta"]) == tokens_in(plain["meta"])
    drafts = re.search(r"(\d+)/(\d+) drafted tokens accepted|nothing to draft", spec["meta"])
    assert drafts and "draft" not in plain["meta"], (spec["meta"], plain["meta"])
    print(f"chat page, speculative decoding on: {spec['meta']!r}")
    assert drafts.group(1) is None or int(drafts.group(1)) <= int(drafts.group(2))
    assert out["speculativeHint"].startswith("The same answers, faster when they copy the prompt"), \
        out["speculativeHint"]  # (not "... cannot check drafts": the Wasm backend verifies them)

    assert out["phoneOverflow"] is False, "the page scrolls sideways at 390 px"
    assert out["panelOpenAfterLoad"] is False and out["panelOpens"] is True  # the phone's model panel
    assert out["plainLoad"] == "ready" and out["plainBackend"] == out["backend"]
    assert out["switchedLoad"] == "ready" and out["switchedBackend"] == "webgpu", out
    assert out["switchedReason"].startswith('WebGPU f32: "webgpu" was asked for'), out["switchedReason"]
    # without WebGPU the page says so, then runs the model on the CPU (Wasm)
    assert "This browser has no WebGPU" in out["noGpuBefore"]
    assert out["noGpuLoad"] == "ready" and out["noGpuBackend"] == "wasm", out["noGpuAfter"]
    names = {Path(p).name for p in out["screenshots"]}
    assert {"desktop-chat.png", "desktop-speculative.png", "phone-chat.png", "phone-panel.png",
            "phone-start.png"} <= names
    for p in out["screenshots"]:
        assert Path(p).stat().st_size > 10_000, p
