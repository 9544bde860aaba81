"""The registry with bundles written by the real packager (`llmpack package`) from a tiny
random Llama checkpoint: several shards per bundle, two quantizations of one model."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from model_registry.registry import Registry
from model_registry.server import create_app
from test_registry_helpers import bundle_files, cli


@pytest.fixture(scope="module")
def packaged(tiny_llama, tmp_path_factory):
    """Two real bundles of one checkpoint: q4f16 in 16 KiB shards and f32 in 64 KiB shards."""
    root = tmp_path_factory.mktemp("packaged")
    src = tiny_llama("gqa")
    for quant, size in (("q4f16", "16KiB"), ("f32", "64KiB")):
        r = cli("package", src, "--out", root / quant, "--quant", quant, "--shard-size", size, "--json")
        assert r.returncode == 0, r.stderr
    return root


def test_publish_and_pull_packaged_model(packaged, tmp_path):
    reg_url = str(tmp_path / "registry")
    q4, f32 = packaged / "q4f16", packaged / "f32"
    assert len(json.loads((q4 / "manifest.json").read_text())["shards"]) >= 3
    assert len(json.loads((f32 / "manifest.json").read_text())["shards"]) >= 3

    r = cli("registry", "publish", q4, "--to", reg_url, "--id", "tiny-llama", "--version", "q4f16", "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    r = cli("registry", "publish", f32, "--to", reg_url, "--id", "tiny-llama", "--version", "f32", "--json")
    assert r.returncode == 0, r.stderr

    reg = Registry(reg_url)
    entry = reg.load_index()["models"]["tiny-llama"]["versions"]["q4f16"]
    manifest = json.loads((q4 / "manifest.json").read_text())
    assert entry["quantization"]["scheme"] == "q4f16" and entry["architecture"] == "llama"
    assert entry["memory_estimate_bytes"] == manifest["memory"]["estimate_bytes"]
    assert entry["total_bytes"] == sum(len(b) for b in bundle_files(q4).values())
    assert first["uploaded_blobs"] == len(manifest["shards"])

    # the same model published again under another version uploads no shard
    again = reg.publish(q4, "tiny-llama", "q4f16-copy")
    assert again["status"] == "published" and again["uploaded_blobs"] == 0

    for version, bundle in (("q4f16", q4), ("f32", f32)):
        out = tmp_path / f"pulled-{version}"
        r = cli("registry", "pull", f"tiny-llama@{version}", "--out", out, "-r", reg_url)
        assert r.returncode == 0, r.stderr
        assert bundle_files(out) == bundle_files(bundle)
    assert reg.verify()["ok"]

    with TestClient(create_app(reg_url)) as client:
        info = client.get("/models/tiny-llama").json()
        assert info["latest"] == "q4f16-copy"
        base = info["versions"][0]["base_url"]
        served = json.loads(client.get(base + "manifest.json").content)
        for shard in served["shards"]:
            assert client.get(base + shard["file"]).content == (q4 / shard["file"]).read_bytes()
