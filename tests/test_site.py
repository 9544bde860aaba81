"""`llmpack site`: a static folder with the bundles, the runtime, the chat page and its
model list, served by a plain static server (python -m http.server: no COOP/COEP, no
Range), where headless Chromium must generate the greedy text of the numpy reference.
Also the runtime version a bundle records (manifest "runtime") and its source hash."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from bundle_contract.manifest import load
from conftest import chat_ids, require, require_node
from packager.bundle import RUNTIME_MIN_VERSION
from packager.errors import PackError
from packager.site import HEADERS_FILE, SITE_MARKER, build_site
from static_host import static_server
from test_registry_helpers import ROOT, cli
from test_registry_helpers import bundle_files as files_of

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DRIVER = ROOT / "web_demo" / "test" / "site_page.mjs"


def test_runtime_version_recorded_and_known_to_the_runtime(packaged_tiny):
    bundle = packaged_tiny("gqa", "q4f32")
    assert json.loads((bundle / "manifest.json").read_text())["runtime"] == {"min_version": RUNTIME_MIN_VERSION}
    assert load(bundle).runtime_min_version == RUNTIME_MIN_VERSION
    version = json.loads((ROOT / "runtime_js" / "package.json").read_text())["version"]
    src = (ROOT / "runtime_js" / "src" / "version.ts").read_text()
    assert f'RUNTIME_VERSION = "{version}"' in src
    as_tuple = lambda v: tuple(map(int, v.split(".")))  # noqa: E731
    assert as_tuple(RUNTIME_MIN_VERSION) <= as_tuple(version), "bundles would need a runtime newer than ours"


def test_source_sha256_is_sha256sum_of_the_checkpoint_files(packaged_tiny, tiny_llama):
    ck = tiny_llama("gqa")
    source = load(packaged_tiny("gqa", "q4f32")).model.source
    names = sorted(p.name for p in ck.iterdir() if p.is_file() and (
        p.suffix in (".safetensors",) or p.name in ("config.json", "generation_config.json", "tokenizer.json",
                                                     "tokenizer_config.json", "model.safetensors.index.json",
                                                     "chat_template.jinja")))
    listing = "".join(f"{hashlib.sha256((ck / n).read_bytes()).hexdigest()}  {n}\n" for n in names)
    assert source.sha256 == hashlib.sha256(listing.encode()).hexdigest()


def test_site_folder(packaged_tiny, tmp_path):
    a, b = packaged_tiny("gqa", "q4f32"), packaged_tiny("gqa", "q8f16")
    out = tmp_path / "site"
    r = cli("site", out, a, b, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [m["id"] for m in summary["models"]] == [a.name, b.name]
    assert (out / "index.html").is_file() and (out / "app.js").is_file() and (out / "runtime" / "llmpack.js").is_file()
    assert not (out / "test").exists() and not (out / "runtime" / "test").exists()  # no test files
    # what the page loads: the runtime and the chunk it imports, not the build's Node-only files
    runtime = {p.name for p in (out / "runtime").iterdir()}
    assert {"llmpack.js", "llmpack.js.map", "xgrammar.js"} <= runtime and "api_host.js" not in runtime
    assert (out / "_headers").read_text() == HEADERS_FILE
    assert "Cross-Origin-Embedder-Policy: require-corp" in HEADERS_FILE
    assert json.loads((out / SITE_MARKER).read_text())["format"] == "llmpack-site"
    # each bundle byte for byte (its listed files, shards and manifest)
    for bundle in (a, b):
        assert files_of(out / "models" / bundle.name) == files_of(bundle)
    models = json.loads((out / "models.json").read_text())["models"]
    for m, bundle in zip(models, (a, b)):
        assert m["url"] == f"models/{bundle.name}/"  # relative: the site works at any path of any host
        assert m["card"]["format"] == load(bundle).quantization.scheme
        assert m["card"]["source"]["sha256"] == load(bundle).model.source.sha256
    # nothing absolute in what the page fetches
    app = (out / "app.js").read_text()
    assert '"/api/' not in app and '"/runtime/' not in app

    # a site is replaced by the next run; anything else is refused and left as it was
    assert cli("site", out, a).returncode == 0
    assert [m["id"] for m in json.loads((out / "models.json").read_text())["models"]] == [a.name]
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = cli("site", other, a)
    assert r.returncode == 1 and "is not an llmpack site" in r.stderr and r.stderr.count("\n") == 1
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    with pytest.raises(PackError, match="not a folder; to take it from a registry, pass --registry"):
        build_site(tmp_path / "x", ["some-model@1"])
    with pytest.raises(PackError, match="neither a bundle folder nor a registry id"):
        build_site(tmp_path / "x", ["Not An Id!"])


def test_site_is_atomic(packaged_tiny, tmp_path):
    """A bundle that fails its hashes stops the site: OUT stays the previous site, no temporary folder stays."""
    import shutil

    good = packaged_tiny("gqa", "q4f32")
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    shard = next((bad / "shards").iterdir())
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    out = tmp_path / "site"
    build_site(out, [str(good)])
    before = files_of(out)
    with pytest.raises(PackError, match="does not match its bundle's manifest.json"):
        build_site(out, [str(good), str(bad)])
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "site"]


def test_site_from_registry_ids(packaged_tiny, tmp_path):
    bundle = packaged_tiny("gqa", "q4f32")
    reg = tmp_path / "registry"
    assert cli("registry", "publish", bundle, "--to", reg, "--id", "tiny").returncode == 0
    out = tmp_path / "site"
    r = cli("site", out, "tiny", "--registry", reg)
    assert r.returncode == 0, r.stderr
    assert files_of(out / "models" / "tiny") == files_of(bundle)
    (m,) = json.loads((out / "models.json").read_text())["models"]
    assert (m["id"], m["version"], m["source"], m["url"]) == ("tiny", "1", "registry", "models/tiny/")
    assert m["card"]["source"]["sha256"] == load(bundle).model.source.sha256
    r = cli("site", tmp_path / "s2", "nope", "--registry", reg)
    assert r.returncode == 1 and "unknown model id 'nope'" in r.stderr
    assert not (tmp_path / "s2").exists()


@pytest.mark.slow
def test_site_on_a_plain_static_host_generates_the_reference_text(smollm2_bundle, smollm2_hf, packaged_tiny,
                                                                  tmp_path):
    """The default model's site under python -m http.server (no COOP/COEP: single-threaded
    Wasm) in Chromium: the chat page answers with the numpy reference's greedy tokens. A
    second bundle asks for a newer runtime than the site's: the page refuses it, naming both."""
    import shutil

    require_node()
    require("chromium", Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}")
    from packager.reference import ReferenceModel

    _, tok = smollm2_hf
    bundle = smollm2_bundle("q4f32", context_window=512)
    future = tmp_path / "future"
    shutil.copytree(packaged_tiny("gqa", "q4f32"), future)
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["runtime"] = {"min_version": "99.0.0"}
    (future / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "site"
    build_site(out, [str(bundle), str(future)])
    question, n = "What is the capital of France?", 8
    want = ReferenceModel(bundle).greedy(chat_ids(tok, [{"role": "user", "content": question}]), n)
    eos = set(load(bundle).generation.eos_token_ids)
    want = want[: next((i for i, t in enumerate(want) if t in eos), len(want))]
    env = {**os.environ, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR") or str(tmp_path)}
    artifacts = ROOT / "test-artifacts" / "site"
    artifacts.mkdir(parents=True, exist_ok=True)
    with static_server(tmp_path) as root:  # the site below the host's root: relative URLs must hold
        env["LLMPACK_SITE_TEST"] = json.dumps({
            "url": f"{root}site/", "modelId": bundle.name, "chromium": CHROMIUM, "question": question,
            "maxTokens": n, "screenshot": str(artifacts / "site-chat.png"), "futureModelId": "future"})
        r = subprocess.run(["node", str(DRIVER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"static site: backend {got['backend']}, isolated {got['isolated']}, answer {got['messages'][-1]!r}")
    assert got["isolated"] is False  # a plain host: no COOP/COEP
    assert got["loadState"] == "ready", got
    assert got["models"] == [{"id": bundle.name, "url": f"{root}site/models/{bundle.name}/"},
                             {"id": "future", "url": f"{root}site/models/future/"}]
    assert got["card"]["hidden"] is False
    assert got["card"]["fields"]["format"].startswith("q4f32")
    assert got["card"]["fields"]["source-sha256"] == load(bundle).model.source.sha256
    assert got["card"]["fields"]["license"] == "apache-2.0"
    assert got["messages"][-1]["role"] == "assistant"
    assert got["messages"][-1]["content"] == tok.decode(want), (got["messages"][-1], tok.decode(want))
    assert re.match(r"\d+ tokens", got["meta"][-1])
    assert got["failed"] == [], got
    # the only console error is the refused bundle's (the page logs the load failure)
    assert all("needs llmpack runtime 99.0.0" in line for line in got["console"]), got["console"]
    version = json.loads((ROOT / "runtime_js" / "package.json").read_text())["version"]
    assert got["futureState"] == "error"
    assert any("runtime is too old" in t and "needs llmpack runtime 99.0.0 or newer" in t
               and f"this runtime is {version}" in t for t in got["futureNotices"]), got["futureNotices"]


def test_dev_server_lists_models_json_with_cards(packaged_tiny, tmp_path):
    """`llmpack serve` answers the page's models.json (what a site holds as a file) like
    /api/models, with each bundle's card; quality.json from eval appears in it."""
    import shutil

    from fastapi.testclient import TestClient

    from bundle_contract.card import quality_record, write_quality
    from packager.serve import create_app

    bundle = tmp_path / "bundles" / "tiny"
    shutil.copytree(packaged_tiny("gqa", "q4f32"), bundle)
    m = load(bundle)
    write_quality(bundle, quality_record(m, {"perplexity": 12.5, "tokens": 64, "windows": 2}, text="t", window=32,
                                         reference=None))
    with TestClient(create_app([bundle.parent])) as c:
        listed = c.get("/models.json").json()
        assert listed == c.get("/api/models").json()
    (entry,) = listed["models"]
    assert entry["url"] == "http://testserver/models/tiny/"
    assert entry["card"]["quality"]["perplexity"] == 12.5 and entry["card"]["manifest_sha256"] == m.sha256
