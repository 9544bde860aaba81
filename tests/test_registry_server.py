"""`llmpack registry serve`: the JSON API, file serving (Range, caching, MIME types),
path confinement; in-process with TestClient, and once through a real uvicorn server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

import test_registry_helpers
from bundle_contract.errors import UserError
from bundle_contract.http import IMMUTABLE, bind, parse_range
from model_registry.errors import RegistryError
from model_registry.registry import Registry
from model_registry.server import create_app
from test_registry_helpers import REQUIREMENTS, ROOT, make_bundle

registry_url = test_registry_helpers.registry_url  # the fixture, used by this module's tests

WGSL = b"@compute @workgroup_size(64) fn main() {}\n"
WASM = b"\x00asm\x01\x00\x00\x00"


@pytest.fixture
def served(registry_url, tmp_path):
    """(client, bundle a, bundle b) for a registry holding a@1 (with kernels) and b@1, b@2."""
    reg = Registry(registry_url)
    a = make_bundle(tmp_path / "a", "model-a", (1, 2),
                    extra_files={"kernels/matmul.wgsl": WGSL, "kernels/cpu.wasm": WASM},
                    requirements=REQUIREMENTS)
    b1 = make_bundle(tmp_path / "b1", "model-b", (2, 3))
    b2 = make_bundle(tmp_path / "b2", "model-b", (3, 4))
    for bundle in (a, b1, b2):
        reg.publish(bundle)
    with TestClient(create_app(reg, index_ttl=0)) as client:
        yield client, a, b2


def load_by_id(client, model_id: str) -> dict[str, bytes]:
    """What the JS runtime does: resolve an id to a version, then fetch the manifest and
    everything it lists relative to the version's base_url."""
    info = client.get(f"/models/{model_id}").json()
    version = next(v for v in info["versions"] if v["version"] == info["latest"])
    base = version["base_url"]
    manifest_raw = client.get(version["manifest_url"]).content
    manifest = json.loads(manifest_raw)
    got = {"manifest.json": manifest_raw}
    for entry in manifest["shards"] + [{"file": f["path"]} for f in manifest["files"]]:
        r = client.get(base + entry["file"])
        assert r.status_code == 200, (entry, r.text)
        got[entry["file"]] = r.content
    return got


def test_models_api(served):
    client, a, _ = served
    r = client.get("/models")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    models = {m["id"]: m for m in r.json()["models"]}
    assert set(models) == {"model-a", "model-b"}
    assert models["model-b"]["latest"] == "2" and models["model-b"]["versions"] == ["2", "1"]
    assert models["model-a"]["requirements"] == REQUIREMENTS
    assert models["model-a"]["base_url"] == "http://testserver/models/model-a/1/"

    detail = client.get("/models/model-b").json()
    assert detail["id"] == "model-b" and detail["latest"] == "2"
    assert [v["version"] for v in detail["versions"]] == ["2", "1"]
    v2 = detail["versions"][0]
    assert v2["latest"] is True and v2["manifest_url"] == "http://testserver/models/model-b/2/manifest.json"
    for key in ("manifest_sha256", "quantization", "total_bytes", "memory_estimate_bytes", "requirements",
                "architecture", "license", "source", "created", "published"):
        assert key in v2
    assert client.get("/models/model-b/1").json()["latest"] is False

    assert client.get("/models/nope").status_code == 404
    assert client.get("/models/nope").json()["detail"] == "unknown model id 'nope'"
    assert client.get("/models/model-b/9").status_code == 404
    assert client.get("/models/Bad%20Id").status_code == 404


def test_runtime_can_load_a_model_by_id(served):
    client, a, _ = served
    got = load_by_id(client, "model-a")
    expected = {p.relative_to(a).as_posix(): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    assert got == expected
    # static-host style: the same paths straight from the registry root
    index = client.get("/index.json").json()
    path = index["models"]["model-a"]["versions"]["1"]["path"]
    manifest = client.get(f"/{path}manifest.json").json()
    assert client.get("/" + manifest["shards"][0]["file"]).content == expected[manifest["shards"][0]["file"]]


def test_file_headers_and_mime_types(served):
    client, a, _ = served
    manifest = json.loads((a / "manifest.json").read_text())
    shard = manifest["shards"][0]
    for url in (f"/{shard['file']}", f"/models/model-a/1/{shard['file']}"):
        r = client.get(url)
        assert r.status_code == 200
        assert r.headers["cache-control"] == IMMUTABLE == "public, max-age=31536000, immutable"
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["etag"] == f'"{shard["sha256"]}"'
        assert r.headers["accept-ranges"] == "bytes"
        assert int(r.headers["content-length"]) == shard["bytes"] == len(r.content)
        assert client.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    types = {"manifest.json": "application/json", "tokenizer.json": "application/json",
             "kernels/matmul.wgsl": "text/wgsl; charset=utf-8", "kernels/cpu.wasm": "application/wasm"}
    for path, mime in types.items():
        r = client.get(f"/models/model-a/1/{path}")
        assert r.status_code == 200 and r.headers["content-type"] == mime, path
        assert r.headers["cache-control"] == "no-cache"  # a version may be removed and re-published
        assert r.content == (a / path).read_bytes()
    r = client.head(f"/{shard['file']}")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) == shard["bytes"]
    r = client.get("/models", headers={"Origin": "http://localhost:5173"})
    assert r.headers["access-control-allow-origin"] == "*"


def test_range_requests(served):
    client, a, _ = served
    shard = json.loads((a / "manifest.json").read_text())["shards"][0]
    data = (a / shard["file"]).read_bytes()
    n = len(data)
    url = f"/{shard['file']}"
    r = client.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{n}" and r.headers["content-length"] == "100"
    r = client.get(url, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == data[1000:]
    r = client.get(url, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = client.get(url, headers={"Range": f"bytes=10-{n + 500}"})
    assert r.status_code == 206 and r.content == data[10:]
    r = client.get(url, headers={"Range": f"bytes={n}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{n}"
    r = client.get(url, headers={"Range": "bytes=0-1,5-6"})  # multiple ranges: whole file
    assert r.status_code == 200 and r.content == data
    r = client.get(url, headers={"Range": "bytes=5-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data
    r = client.get(url, headers={"Range": "bytes=5-9", "If-Range": f'"{shard["sha256"]}"'})
    assert r.status_code == 206 and r.content == data[5:10]
    r = client.get(url, headers={"Range": "bytes=" + "9" * 5000 + "-"})
    assert r.status_code == 416


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-0", 10, (0, 0)), ("bytes=9-", 10, (9, 9)), ("bytes=-20", 10, (0, 9)),
    ("bytes=10-", 10, "unsatisfiable"), ("bytes=-0", 10, "unsatisfiable"), ("bytes=5-2", 10, None),
    ("bytes=-", 10, None), ("items=0-1", 10, None), ("bytes=0-", 0, "unsatisfiable"),
    # numbers far past any size (Python refuses int() of 4300+ digits): clamped, never an error
    ("bytes=" + "9" * 5000 + "-", 10, "unsatisfiable"), ("bytes=2-" + "9" * 5000, 10, (2, 9)),
    ("bytes=-" + "9" * 5000, 10, (0, 9)), ("bytes=" + "0" * 5000 + "3-4", 10, (3, 4)),
    ("bytes=5-" + "0" * 5000 + "1", 10, None), ("bytes=١-٢", 10, None),  # non-ASCII digits: malformed
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("path", [
    "/models/model-a/1/../../../../../etc/passwd", "/models/model-a/1/%2e%2e/%2e%2e/index.json",
    "/models/model-a/1/shards/../../../../etc/passwd", "/shards/..%2findex.json", "/shards/index.json",
    "/models/model-a/1/not-listed.txt", "/models/model-a/1/shards/" + "0" * 64 + ".bin",
    "/models/model-a/1/", "/models/model-a/2/manifest.json", "/etc/passwd", "/models/model-a/1/%2Fetc%2Fpasswd",
    "/models/model-b/1/shards/{a_only_shard}",
])
def test_nothing_outside_the_registry_is_served(served, path):
    client, a, _ = served
    a_only = json.loads((a / "manifest.json").read_text())["shards"][0]["file"].split("/")[1]
    r = client.get(path.replace("{a_only_shard}", a_only))
    assert r.status_code == 404, (path, r.status_code)


def test_missing_blob_is_404_not_500(served, registry_url):
    client, a, _ = served
    shard = json.loads((a / "manifest.json").read_text())["shards"][0]["file"]
    Registry(registry_url).store.rm(shard)
    r = client.get(f"/models/model-a/1/{shard}")
    assert r.status_code == 404 and "llmpack registry verify" in r.json()["detail"]


def test_newly_published_models_appear(registry_url, tmp_path):
    reg = Registry(registry_url)
    reg.publish(make_bundle(tmp_path / "a", "first", (1,)))
    with TestClient(create_app(registry_url, index_ttl=0)) as client:
        assert [m["id"] for m in client.get("/models").json()["models"]] == ["first"]
        reg.publish(make_bundle(tmp_path / "b", "second", (2,)))
        assert [m["id"] for m in client.get("/models").json()["models"]] == ["first", "second"]


def test_serve_refuses_a_non_registry(tmp_path):
    with pytest.raises(RegistryError, match="no registry at"):
        create_app(str(tmp_path))


def test_real_server_on_loopback(tmp_path):
    """`llmpack registry serve` under uvicorn on 127.0.0.1 and a free port, fetched with httpx."""
    reg_dir = tmp_path / "registry"
    a = make_bundle(tmp_path / "a", "model-a", (1, 2))
    Registry(str(reg_dir)).publish(a)
    proc = subprocess.Popen([sys.executable, "-m", "packager.cli", "registry", "serve", str(reg_dir), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        seen = ""
        for _ in range(20):  # the URL line comes first, unless the interpreter warned about something
            line = proc.stdout.readline()
            seen += line
            match = re.search(r"at (http://127\.0\.0\.1:(\d+)/)", line)
            if match or not line:
                break
        assert match, seen
        base = match.group(1)
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(100):  # the socket listens before uvicorn's loop runs: retry briefly
                try:
                    r = client.get("/models")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            assert r.status_code == 200 and r.json()["models"][0]["base_url"] == f"{base}models/model-a/1/"
            manifest = client.get("/models/model-a/1/manifest.json").json()
            shard = manifest["shards"][1]
            data = (a / shard["file"]).read_bytes()
            r = client.get(f"/models/model-a/1/{shard['file']}", headers={"Range": "bytes=256-1023"})
            assert r.status_code == 206 and r.content == data[256:1024]
            assert r.headers["cache-control"] == IMMUTABLE
            r = client.get(f"/models/model-a/1/{shard['file']}")
            assert r.content == data
            assert client.get("/models", headers={"Host": "evil.example:80"}).status_code == 421  # DNS rebinding
        # clients normalize '..' away; send raw request lines to check the server does not follow them
        for raw in ("/models/model-a/1/../../../index.json", "/shards/../index.json",
                    "/models/model-a/1/%2e%2e/%2e%2e/%2e%2e/index.json", "/models/model-a/1/../../../../etc/passwd"):
            assert raw_status(base, raw) == 404, raw
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raw_status(base: str, path: str) -> int:
    """Status code of `GET path` sent verbatim over a socket."""
    import socket
    host, port = re.match(r"http://([^:/]+):(\d+)/", base).groups()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1])


def test_serve_port_in_use_is_a_clear_error(tmp_path):
    first = bind("127.0.0.1", 0)
    try:
        with pytest.raises(UserError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*pass another --port"):
            bind("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
