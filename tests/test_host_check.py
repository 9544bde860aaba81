"""Both servers answer only to their own Host names: a DNS-rebinding page (evil.example
resolving to 127.0.0.1) gets 421, and the URLs the JSON APIs build name this server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bundle_contract.http import HostCheck, host_check, served_host_names
from model_registry.registry import Registry
from model_registry.server import create_app as registry_app
from packager.serve import create_app as serve_app
from test_registry_helpers import make_bundle


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundles" / "model-a", "model-a", (1,))


def web_dirs(tmp_path):
    (tmp_path / "web").mkdir(exist_ok=True)
    (tmp_path / "web" / "index.html").write_text("<!doctype html>")
    (tmp_path / "dist").mkdir(exist_ok=True)
    (tmp_path / "dist" / "llmpack.js").write_text("export {};")
    return {"runtime_dist": tmp_path / "dist", "web_dir": tmp_path / "web"}


def test_served_host_names():
    assert served_host_names("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert served_host_names("::1") == {"127.0.0.1", "localhost", "::1"}
    assert served_host_names("0.0.0.0", ["Models.Example.org"]) == {"0.0.0.0", "127.0.0.1", "localhost", "::1",
                                                                      "models.example.org"}
    assert served_host_names("192.168.1.5") == {"192.168.1.5"}


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8000", True), ("localhost:8000", True), ("LOCALHOST", True), ("[::1]:8000", True),
    ("evil.example:8000", False), ("evil.example", False), ("localhost.evil.example", False),
    ("127.0.0.1.nip.io:8000", False), ("10.0.0.7:8000", False), ("127.0.0.1:8000/x", False),
    ("127.0.0.1 evil", False), ("", False),
])
def test_llmpack_serve_answers_only_its_own_names(tmp_path, bundle, host, ok):
    app = host_check(serve_app([bundle.parent], **web_dirs(tmp_path)), "127.0.0.1")
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        for path in ("/api/models", "/models/model-a/manifest.json", "/"):
            r = c.get(path, headers={"Host": host})
            assert r.status_code == (200 if ok else 421), (path, r.status_code)
            if not ok:
                assert "--allowed-host" in r.json()["detail"] and b"model-a" not in r.content
        if ok:
            url = c.get("/api/models", headers={"Host": host}).json()["models"][0]["url"]
            assert url == f"http://{host.lower()}/models/model-a/"


def test_allowed_host_and_wildcard_bind(tmp_path, bundle):
    app = serve_app([bundle.parent], **web_dirs(tmp_path))
    with TestClient(host_check(app, "127.0.0.1", ["models.example.org"])) as c:
        assert c.get("/api/models", headers={"Host": "models.example.org"}).status_code == 200
        assert c.get("/api/models", headers={"Host": "other.example.org"}).status_code == 421
    # on a wildcard address any of the machine's addresses may carry a request; names still may not
    with TestClient(host_check(app, "0.0.0.0")) as c:
        assert c.get("/api/models", headers={"Host": "192.168.1.5:8000"}).status_code == 200
        assert c.get("/api/models", headers={"Host": "[fe80::1]:8000"}).status_code == 200
        assert c.get("/api/models", headers={"Host": "evil.example:8000"}).status_code == 421
    assert not HostCheck(app, {"127.0.0.1"}).accepts("192.168.1.5")


def test_registry_serve_answers_only_its_own_names(tmp_path, bundle):
    reg = Registry(str(tmp_path / "registry"))
    reg.publish(bundle)
    with TestClient(host_check(registry_app(reg), "127.0.0.1")) as c:
        for path in ("/models", "/index.json", "/models/model-a/1/manifest.json"):
            assert c.get(path, headers={"Host": "evil.example:8765"}).status_code == 421, path
        r = c.get("/models", headers={"Host": "localhost:8765"})
        assert r.status_code == 200 and r.json()["models"][0]["base_url"] == "http://localhost:8765/models/model-a/1/"
