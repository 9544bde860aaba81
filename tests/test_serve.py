"""`llmpack serve` and `llmpack demo`: files (Range, MIME types, caching, isolation
headers), path confinement (every traversal variant, over raw HTTP through uvicorn),
/api/models (with local and HTTP registries), errors, and the real CLI as a subprocess."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from bundle_contract.errors import UserError
from bundle_contract.http import IMMUTABLE
from bundle_contract.manifest import ManifestError
from conftest import require
from packager.errors import PackError
from packager.serve import BundleSet, RegistrySource, bind, create_app, page_url, resolve_inside
from test_registry_helpers import REQUIREMENTS, ROOT, make_bundle

SECRET = b"TOP SECRET: outside every served root"
WGSL = b"@compute @workgroup_size(64) fn main() {}\n"
WASM = b"\x00asm\x01\x00\x00\x00"
ISOLATION = {"cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp"}


@pytest.fixture
def tree(tmp_path):
    """Served roots next to things that must stay unreachable:

    tmp/secret.txt, tmp/outside/secret.txt          never served
    tmp/bundles/model-a (kernels, symlinks out), tmp/bundles/model-b, tmp/solo (a bundle)
    tmp/web (index.html, app.js, style.css, a symlink out), tmp/dist (llmpack.js, .map)
    """
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    a = make_bundle(tmp_path / "bundles" / "model-a", "model-a", (1, 2),
                    extra_files={"kernels/matmul.wgsl": WGSL, "kernels/cpu.wasm": WASM, "plan.json": b"{}"},
                    requirements=REQUIREMENTS)
    make_bundle(tmp_path / "bundles" / "model-b", "model-b", (3,))
    make_bundle(tmp_path / "solo", "solo-model", (4,))
    (a / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (a / "linkdir").symlink_to(tmp_path / "outside")
    (a / "kernels" / "alias.wgsl").symlink_to(a / "kernels" / "matmul.wgsl")  # inside: fine
    (a / ".hidden").write_bytes(SECRET)
    (a / "%2e%2e").write_bytes(SECRET)  # a literal name that looks like an encoding: refused too
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>chat</title>")
    (web / "app.js").write_text("export {};\n")
    (web / "style.css").write_text("body{}\n")
    (web / "leak.txt").symlink_to(tmp_path / "secret.txt")
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "llmpack.js").write_text("export const createEngine = null;\n")
    (dist / "llmpack.js.map").write_text("{}")
    return tmp_path


def make_app(tree, **kw):
    return create_app([tree / "bundles", tree / "solo"], runtime_dist=tree / "dist", web_dir=tree / "web", **kw)


@pytest.fixture
def client(tree):
    with TestClient(make_app(tree)) as c:
        yield c


def shard_of(bundle: Path, i: int = 0) -> tuple[str, bytes]:
    rec = json.loads((bundle / "manifest.json").read_text())["shards"][i]
    return rec["file"], (bundle / rec["file"]).read_bytes()


# ------------------------------------------------------------------------ files


def test_mime_types_and_cache_headers(client, tree):
    a = tree / "bundles" / "model-a"
    shard, data = shard_of(a)
    expect = {
        f"/models/model-a/{shard}": ("application/octet-stream", IMMUTABLE),
        "/models/model-a/manifest.json": ("application/json", "no-cache"),
        "/models/model-a/tokenizer.json": ("application/json", "no-cache"),
        "/models/model-a/kernels/matmul.wgsl": ("text/wgsl; charset=utf-8", "no-cache"),
        "/models/model-a/kernels/cpu.wasm": ("application/wasm", "no-cache"),
        "/runtime/llmpack.js": ("text/javascript; charset=utf-8", "no-cache"),
        "/runtime/llmpack.js.map": ("application/json", "no-cache"),
        "/": ("text/html; charset=utf-8", "no-cache"),
        "/app.js": ("text/javascript; charset=utf-8", "no-cache"),
        "/style.css": ("text/css; charset=utf-8", "no-cache"),
    }
    for url, (mime, cache) in expect.items():
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-type"] == mime, url
        assert r.headers["cache-control"] == cache, url
        assert r.headers["x-content-type-options"] == "nosniff"
        assert {k: r.headers[k] for k in ISOLATION} == ISOLATION, url
    assert IMMUTABLE == "public, max-age=31536000, immutable"
    r = client.get(f"/models/model-a/{shard}")
    assert r.content == data and r.headers["etag"] == f'"{Path(shard).stem}"'
    assert client.get(f"/models/model-a/{shard}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert client.get("/models/model-a/kernels/alias.wgsl").content == WGSL  # symlink inside the root
    r = client.get("/models/model-a/manifest.json")
    assert client.get("/models/model-a/manifest.json", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert client.get("/models/solo/manifest.json").json()["model"]["name"] == "solo-model"
    # errors and the API carry the isolation headers too
    for url in ("/nope", "/api/models", "/models/unknown/manifest.json"):
        r = client.get(url)
        assert {k: r.headers[k] for k in ISOLATION} == ISOLATION, url


def test_range_requests(client, tree):
    shard, data = shard_of(tree / "bundles" / "model-a", 1)
    n = len(data)
    url = f"/models/model-a/{shard}"
    r = client.get(url, headers={"Range": "bytes=100-355"})
    assert r.status_code == 206 and r.content == data[100:356]
    assert r.headers["content-range"] == f"bytes 100-355/{n}" and r.headers["content-length"] == "256"
    assert r.headers["cache-control"] == IMMUTABLE
    r = client.get(url, headers={"Range": "bytes=-64"})  # suffix
    assert r.status_code == 206 and r.content == data[-64:]
    assert r.headers["content-range"] == f"bytes {n - 64}-{n - 1}/{n}"
    r = client.get(url, headers={"Range": "bytes=2000-"})  # open-ended
    assert r.status_code == 206 and r.content == data[2000:]
    r = client.get(url, headers={"Range": f"bytes={n}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{n}"
    r = client.get(url, headers={"Range": "bytes=0-1,4-5"})  # several ranges: the whole file
    assert r.status_code == 200 and r.content == data
    r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"something-else"'})
    assert r.status_code == 200 and r.content == data
    r = client.head(url, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == b"" and r.headers["content-length"] == "10"
    r = client.get("/models/model-a/tokenizer.json", headers={"Range": "bytes=0-0"})  # any file, not only shards
    assert r.status_code == 206 and r.content == b"{"


# ------------------------------------------------------------------ confinement


@contextlib.contextmanager
def running(app):
    """`app` under a real uvicorn on 127.0.0.1 and a free port, in a thread."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def raw_get(base: str, target: str, host: str = "x") -> tuple[int, bytes]:
    """(status, whole response) of `GET target` sent verbatim, as no HTTP client would."""
    address, port = re.match(r"http://([^:/]+):(\d+)/", base).groups()
    with socket.create_connection((address, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target.encode("latin-1") + f" HTTP/1.1\r\nHost: {host}\r\n".encode()
                     + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def traversal_targets(tree: Path) -> list[str]:
    secret = str(tree / "secret.txt")
    up = "../../"  # from tree/bundles/model-a to tree
    return [
        # plain, encoded, double-encoded and mixed-case "..", in the bundle, runtime and web roots
        f"/models/model-a/{up}secret.txt", "/models/model-a/%2e%2e/%2e%2e/secret.txt",
        "/models/model-a/%2E%2E/%2E%2E/secret.txt", "/models/model-a/.%2e/.%2e/secret.txt",
        "/models/model-a/%252e%252e/%252e%252e/secret.txt", "/models/model-a/%25252e%25252e/secret.txt",
        "/models/model-a/..%2f..%2fsecret.txt", "/models/model-a/..%252f..%252fsecret.txt",
        "/models/model-a/%2e%2e%2f%2e%2e%2fsecret.txt", "/models/model-a/kernels/../../../secret.txt",
        "/models/..%2f..%2fsecret.txt", "/models/%2e%2e/secret.txt", "/models/%2e%2e/%2e%2e/secret.txt",
        "/runtime/../secret.txt", "/runtime/..%2fsecret.txt", "/runtime/%2e%2e%2fsecret.txt",
        "/runtime/%252e%252e%252fsecret.txt", "/../secret.txt", "/%2e%2e/secret.txt", "/%252e%252e/secret.txt",
        "/..%2fsecret.txt",
        # backslashes, raw and encoded
        "/models/model-a/..\\..\\secret.txt", "/models/model-a/..%5c..%5csecret.txt",
        "/models/model-a/..%255c..%255csecret.txt", "/..%5csecret.txt",
        # absolute paths, raw and encoded
        f"/models/model-a/{secret}", f"/models/model-a/{quote(secret, safe='')}",
        f"/models/model-a//{secret.lstrip('/')}", f"/{secret}", f"/{quote(secret, safe='')}",
        f"/runtime/{quote(secret, safe='')}", "//etc/passwd", "/models/model-a/%2fetc%2fpasswd",
        "/models/model-a/C:%5csecret.txt",
        # symlinks and hidden files
        "/models/model-a/leak.txt", "/models/model-a/linkdir/secret.txt", "/leak.txt",
        "/models/model-a/.hidden", "/models/model-a/%252e%252e", "/models/model-a/./leak.txt",
        # NUL bytes
        "/models/model-a/manifest.json%00.txt", "/models/model-a/%00../../secret.txt",
    ]


def test_nothing_outside_the_roots_is_served(tree):
    with running(make_app(tree)) as base:
        assert raw_get(base, "/models/model-a/manifest.json")[0] == 200  # the server answers at all
        for target in traversal_targets(tree):
            status, data = raw_get(base, target)
            assert status in (400, 404), (target, status)
            assert SECRET not in data, target
            assert b"root:" not in data, target


@pytest.mark.parametrize("rel", [
    "../secret.txt", "a/../../secret.txt", "..", ".", "", "/etc/passwd", "kernels//matmul.wgsl",
    "..\\secret.txt", "%2e%2e/secret.txt", ".hidden", "leak.txt", "linkdir/secret.txt", "kernels",
    "kernels/matmul.wgsl\x00", "C:/x", "manifest.json/",
])
def test_resolve_inside_refuses(tree, rel):
    assert resolve_inside((tree / "bundles" / "model-a").resolve(), rel) is None


def test_resolve_inside_accepts(tree):
    root = (tree / "bundles" / "model-a").resolve()
    assert resolve_inside(root, "kernels/matmul.wgsl") == root / "kernels" / "matmul.wgsl"
    assert resolve_inside(root, "kernels/alias.wgsl") == root / "kernels" / "matmul.wgsl"


# ----------------------------------------------------------------------- models


def test_models_endpoint(client, tree):
    r = client.get("/api/models")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    body = r.json()
    assert body["errors"] == []
    models = {m["id"]: m for m in body["models"]}
    assert list(models) == ["model-a", "model-b", "solo"]
    a = models["model-a"]
    manifest = json.loads((tree / "bundles" / "model-a" / "manifest.json").read_text())
    on_disk = sum(p.stat().st_size for p in (tree / "bundles" / "model-a").rglob("*")
                  if p.is_file() and not p.is_symlink() and p.name not in (".hidden", "%2e%2e"))
    assert a["url"] == "http://testserver/models/model-a/"
    assert a["manifest_url"] == "http://testserver/models/model-a/manifest.json"
    assert a["name"] == "model-a" and a["source"] == "local"
    assert a["quantization"] == manifest["quantization"]
    assert a["bytes"] == on_disk and a["shard_count"] == 2
    assert a["memory_estimate_bytes"] == manifest["memory"]["estimate_bytes"]
    assert a["context_window"] == 128
    assert a["requirements"] == REQUIREMENTS
    assert models["model-b"]["requirements"] is None
    # every URL the page will use resolves
    for m in models.values():
        listed = client.get(m["manifest_url"]).json()
        for entry in listed["shards"] + [{"file": f["path"]} for f in listed["files"]]:
            assert client.get(m["url"] + entry["file"]).status_code == 200


def test_bundles_appear_and_broken_ones_are_reported(tree):
    bundles = BundleSet([tree / "bundles"], ttl=0)
    with TestClient(create_app(bundles, runtime_dist=tree / "dist", web_dir=tree / "web")) as c:
        assert [m["id"] for m in c.get("/api/models").json()["models"]] == ["model-a", "model-b"]
        make_bundle(tree / "bundles" / "Model C!", "model-c", (5,))
        (tree / "bundles" / "broken").mkdir()
        (tree / "bundles" / "broken" / "manifest.json").write_text("{not json")
        (tree / "bundles" / ".model-d.partial-x").mkdir()  # packaging in progress: ignored
        (tree / "bundles" / ".model-d.partial-x" / "manifest.json").write_text("{}")
        body = c.get("/api/models").json()
        assert [m["id"] for m in body["models"]] == ["model-c", "model-a", "model-b"]
        assert len(body["errors"]) == 1 and "broken" in body["errors"][0]
        assert c.get("/models/model-c/manifest.json").json()["model"]["name"] == "model-c"


MALFORMED = {  # each turns a valid manifest into one the contract refuses, naming the field
    "model is a string": (lambda m: m.update(model="x"), '"model" must be an object, not "x"'),
    "shards are numbers": (lambda m: m.update(shards=[1, 2]), '"shards[0]" must be an object, not 1'),
    "shard size is a string": (lambda m: m["shards"][0].update(bytes="12"),
                               '"shards[0].bytes" must be a whole number >= 0, not "12"'),
    "no memory": (lambda m: m.pop("memory"), '"memory" is missing'),
    "tensor past its shard": (lambda m: m["tensors"][0].update(offset=10**6), "runs past the last shard"),
    "requirements limit": (lambda m: m.update(requirements={"limits": {"maxBufferSize": [[]]}}),
                           '"requirements.limits.maxBufferSize" must be a whole number >= 0, not a list'),
}


@pytest.mark.parametrize("change, message", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_bundle_is_skipped_not_fatal(tree, change, message, caplog):
    """One bad manifest among good ones: /api/models lists the others and names the bad
    one under "errors"; the bad one is logged and served nowhere."""
    bad = make_bundle(tree / "bundles" / "bad", "bad", (9,))
    manifest = json.loads((bad / "manifest.json").read_text())
    change(manifest)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="packager.serve"), TestClient(make_app(tree)) as c:
        r = c.get("/api/models")
        assert r.status_code == 200
        body = r.json()
        assert [m["id"] for m in body["models"]] == ["model-a", "model-b", "solo"]
        assert len(body["errors"]) == 1 and message in body["errors"][0]
        assert c.get("/models/bad/manifest.json").status_code == 404
        c.get("/api/models")
    assert [r.getMessage() for r in caplog.records if message in r.getMessage()] == [f"skipped: {body['errors'][0]}"]


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"format": "llmpack-bundle", "version": 1, "hf_config": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ('{"format": "llmpack-bundle", "version": 1e999}', "bundle format version inf"),
    ('{"format": "llmpack-bundle", "version": ' + "9" * 5000 + "}", "is not valid JSON"),
    ("\xff\xfe{", "is not valid JSON"),
    ("[1, 2]", "not a JSON object"),
])
def test_unreadable_manifests_are_one_clear_error(tree, text, message):
    bad = make_bundle(tree / "bundles" / "bad", "bad", (9,))
    (bad / "manifest.json").write_bytes(text.encode("latin-1"))
    with TestClient(make_app(tree)) as c:
        body = c.get("/api/models").json()
        assert len(body["models"]) == 3 and len(body["errors"]) == 1 and message in body["errors"][0]
    with pytest.raises(ManifestError, match=re.escape(message)):
        BundleSet([bad])


def test_huge_range_numbers_are_not_a_server_error(client, tree):
    name, data = shard_of(tree / "bundles" / "model-a")
    url = f"/models/model-a/{name}"
    assert client.get(url, headers={"Range": "bytes=" + "9" * 5000 + "-"}).status_code == 416
    r = client.get(url, headers={"Range": "bytes=0-" + "9" * 5000})
    assert r.status_code == 206 and r.content == data


def test_duplicate_folder_names_get_distinct_ids(tmp_path):
    make_bundle(tmp_path / "x" / "m", "first", (1,))
    make_bundle(tmp_path / "y" / "m", "second", (2,))
    with TestClient(create_app([tmp_path / "x", tmp_path / "y"], runtime_dist=tmp_path, web_dir=tmp_path)) as c:
        got = {m["id"]: m["name"] for m in c.get("/api/models").json()["models"]}
        assert got == {"m": "first", "m-2": "second"}
        assert c.get("/models/m-2/manifest.json").json()["model"]["name"] == "second"


def test_registry_models_local_and_http(tree):
    from model_registry.registry import Registry
    from model_registry.server import create_app as registry_app

    reg_dir = tree / "registry"
    Registry(str(reg_dir)).publish(make_bundle(tree / "pub", "published", (7, 8)))
    # a registry folder: its API is mounted at /registry/ and its models listed
    with TestClient(make_app(tree, registry=str(reg_dir))) as c:
        models = c.get("/api/models").json()["models"]
        m = next(m for m in models if m["source"] == "registry")
        assert m["id"] == "published" and m["version"] == "1" and m["registry"] == str(reg_dir)
        assert m["url"] == "http://testserver/registry/models/published/1/"
        assert m["shard_count"] == 2 and m["bytes"] > 0
        manifest = c.get(m["manifest_url"])
        assert manifest.status_code == 200 and manifest.headers["cross-origin-embedder-policy"] == "require-corp"
        assert hashlib.sha256(manifest.content).hexdigest() == m["manifest_sha256"]  # the page checks it
        shard = manifest.json()["shards"][0]
        r = c.get(m["url"] + shard["file"], headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.headers["cache-control"] == IMMUTABLE
        assert c.get("/registry/models/published").json()["versions"][0]["base_url"] == m["url"]
    # a running `llmpack registry serve`: listed from its /models; the page loads from it
    with running(registry_app(str(reg_dir))) as reg_url:
        with TestClient(make_app(tree, registry=reg_url)) as c:
            body = c.get("/api/models").json()
            m = next(m for m in body["models"] if m["source"] == "registry")
            assert m["url"] == f"{reg_url}models/published/1/" and body["errors"] == []
    # an unreachable one: the local models still list, with an error
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    with TestClient(make_app(tree, registry=RegistrySource(dead))) as c:
        body = c.get("/api/models").json()
        assert len(body["models"]) == 3 and "unreachable" in body["errors"][0]
    with pytest.raises(PackError, match="--registry"):
        make_app(tree, registry=str(tree / "solo"))


# ------------------------------------------------------------------ bad input


def test_bad_paths_are_one_line_errors(tree):
    with pytest.raises(PackError, match="does not exist"):
        BundleSet([tree / "missing"])
    with pytest.raises(PackError, match="is not a folder"):
        BundleSet([tree / "secret.txt"])
    with pytest.raises(PackError, match="no bundles in"):
        BundleSet([tree / "outside"])
    (tree / "outside" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(ManifestError, match="not an llmpack bundle manifest"):
        BundleSet([tree / "outside"])
    (tree / "outside" / "manifest.json").write_text('{"format": "llmpack-bundle", "version": 9}')
    with pytest.raises(ManifestError, match="bundle format version 9; this llmpack reads version 1"):
        BundleSet([tree / "outside"])
    (tree / "outside" / "manifest.json").write_text('{"format": "llmpack-bundle", "version": 1, "model": "x"}')
    with pytest.raises(ManifestError, match='"shards" is missing'):
        BundleSet([tree / "outside"])
    with pytest.raises(PackError, match="at least one"):
        BundleSet([])


def test_port_in_use_and_bad_host():
    first = bind("127.0.0.1", 0)
    try:
        with pytest.raises(UserError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*another --port"):
            bind("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
    with pytest.raises(UserError, match="cannot resolve --host"):
        bind("no-such-host.invalid", 0)
    for port in (-1, 65536, 99999):
        with pytest.raises(UserError, match=rf"--port {port} is not a TCP port"):
            bind("127.0.0.1", port)
    assert page_url("0.0.0.0", 80) == "http://127.0.0.1:80/" and page_url("::1", 8) == "http://[::1]:8/"


def test_non_loopback_host_warns(tree, monkeypatch):
    """--host 0.0.0.0 prints a warning and a loopback URL (nothing actually binds it here)."""
    import packager.serve as serve_mod

    loopback = bind("127.0.0.1", 0)
    monkeypatch.setattr(serve_mod, "bind", lambda host, port: loopback)
    monkeypatch.setattr(serve_mod.web_assets, "runtime_dir", lambda: tree / "dist")
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    lines = []
    try:
        serve_mod.serve([tree / "solo"], host="0.0.0.0", port=0, out=lines.append)
    finally:
        loopback.close()
    assert re.match(r"serving 1 model and the chat demo at http://127\.0\.0\.1:\d+/ ", lines[0])
    assert any(line.startswith("warning: listening on 0.0.0.0") and "HTTPS" in line for line in lines)
    lines.clear()
    loopback = bind("127.0.0.1", 0)
    monkeypatch.setattr(serve_mod, "bind", lambda host, port: loopback)
    try:
        serve_mod.serve([tree / "solo"], host="127.0.0.1", port=0, out=lines.append)
    finally:
        loopback.close()
    assert not any("warning" in line for line in lines)


def test_missing_web_assets_say_how_to_reinstall(tmp_path, monkeypatch):
    """An install without the built runtime or page: one clear error, and a 404 that says
    how to get it at request time."""
    import packager.web_assets as web_assets

    monkeypatch.setattr(web_assets, "WEB_DIR", tmp_path / "web")
    with pytest.raises(PackError, match=r"no built JS runtime .*reinstall llmpack"):
        web_assets.runtime_dir()
    with pytest.raises(PackError, match=r"no chat page .*reinstall llmpack"):
        web_assets.demo_dir()
    with TestClient(create_app([make_bundle(tmp_path / "b", "b", (1,))], runtime_dist=tmp_path / "none",
                               web_dir=tmp_path)) as c:
        r = c.get("/runtime/llmpack.js")
        assert r.status_code == 404 and "reinstall llmpack" in r.json()["detail"]


# ------------------------------------------------------------------------- demo


def test_demo_packages_once_then_reuses(tiny_llama, tmp_path):
    from packager.demo import demo_bundle, model_slug

    assert model_slug(Path("SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct"
    src = tiny_llama("gqa")
    logs = []
    out = demo_bundle("q4f32", tmp_path / "cache", src, log=logs.append)
    assert out == tmp_path / "cache" / "bundles" / f"{model_slug(src)}-q4f32"
    assert "packaging" in logs[0] and (out / "manifest.json").is_file()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert demo_bundle("q4f32", tmp_path / "cache", src, log=logs.append) == out
    assert logs[-1].startswith("using") and (out / "manifest.json").stat().st_mtime_ns == stamp
    shard = json.loads((out / "manifest.json").read_text())["shards"][0]["file"]
    (out / shard).unlink()  # an incomplete bundle is packaged again
    demo_bundle("q4f32", tmp_path / "cache", src, log=logs.append)
    assert "packaging" in logs[-2] and (out / shard).is_file()


# ------------------------------------------------------------------ real CLI


def start_cli(args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "packager.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    seen = ""
    for _ in range(50):  # the URL line comes after any build or packaging messages
        line = proc.stdout.readline()
        seen += line
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)(\S*)", line)
        if match or not line:
            break
    if not match:
        stop(proc)
        pytest.fail(f"no URL line from llmpack {' '.join(args)}:\n{seen}")
    return proc, match.group(1), match.group(2)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def get_when_up(client: httpx.Client, url: str) -> httpx.Response:
    for _ in range(100):  # the socket listens before uvicorn's loop runs: retry briefly
        try:
            return client.get(url)
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


def test_llmpack_serve_subprocess(tree):
    proc, base, _ = start_cli(["serve", str(tree / "bundles"), str(tree / "solo"), "--port", "0",
                               "--allowed-host", "models.example.org"])
    try:
        with httpx.Client(base_url=base, timeout=10) as c:
            models = get_when_up(c, "/api/models").json()["models"]
            assert [m["id"] for m in models] == ["model-a", "model-b", "solo"]
            r = c.get("/")
            assert r.status_code == 200 and "text/html" in r.headers["content-type"]
            assert r.headers["cross-origin-embedder-policy"] == "require-corp"
            assert (ROOT / "web_demo" / "index.html").read_text() == r.text
            r = c.get("/runtime/llmpack.js")
            assert r.status_code == 200 and r.headers["content-type"] == "text/javascript; charset=utf-8"
            assert "createEngine" in r.text
            shard, data = shard_of(tree / "bundles" / "model-a")
            r = c.get(f"{models[0]['url']}{shard}", headers={"Range": "bytes=10-"})
            assert r.status_code == 206 and r.content == data[10:] and r.headers["cache-control"] == IMMUTABLE
            # a DNS-rebinding page sends its own name as the Host (tests/test_host_check.py)
            r = c.get("/api/models", headers={"Host": "evil.example"})
            assert r.status_code == 421 and b"model-a" not in r.content
            r = c.get("/api/models", headers={"Host": "models.example.org"})
            assert r.json()["models"][0]["url"] == "http://models.example.org/models/model-a/"
        assert raw_get(base, "/models/model-a/../../secret.txt", host="127.0.0.1")[0] == 404
    finally:
        stop(proc)
    r = subprocess.run([sys.executable, "-m", "packager.cli", "serve", str(tree / "outside")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error: no bundles in") and r.stderr.count("\n") == 1


def test_llmpack_demo_subprocess_serves_a_cached_bundle(tree, tmp_path):
    """`llmpack demo --no-open` with a bundle already in the cache: no packaging, prints
    the URL (selecting the model), serves it."""
    from packager.checkpoint import default_source
    from packager.demo import model_slug

    try:
        name = f"{model_slug(default_source())}-q4f16"
    except PackError as e:
        require("smollm2", False, str(e))
        return
    cache = tmp_path / "cache"
    shutil.copytree(tree / "solo", cache / "bundles" / name)
    proc, base, query = start_cli(["demo", "--no-open", "--port", "0"], env={"LLMPACK_CACHE_DIR": str(cache)})
    try:
        assert query == f"?model={name}"
        with httpx.Client(base_url=base, timeout=10) as c:
            models = get_when_up(c, "/api/models").json()["models"]
            assert [m["id"] for m in models] == [name]
            assert c.get("/").status_code == 200
    finally:
        stop(proc)
