"""`llmpack registry serve`: a read-only HTTP view of a registry (FastAPI).

JSON API (what the JS runtime and the demo call):

    GET /models                      every model: id, latest version, summary, URLs
    GET /models/{id}                 one model: all versions, newest first, each with base_url
    GET /models/{id}/{version}       one version

Files, under the same paths as in storage, so a client written against a static host
works against this server unchanged:

    GET /index.json
    GET /shards/<sha256>.bin                         content-addressed: cached forever
    GET /models/{id}/{version}/manifest.json         and every file the manifest lists
    GET /models/{id}/{version}/shards/<sha256>.bin   the shared shard, so that a
                                                     version's base_url resolves the
                                                     manifest's "shards/<hash>.bin" paths

Only the index, the listed files of indexed versions and well-formed shard names are
served: request paths are matched against those lists, never joined onto a file-system
path, so nothing outside the registry can be reached. Files support HEAD, single-range
`Range` requests (206/416), `ETag`/`If-None-Match` (bundle_contract/http.py, shared with
`llmpack serve`) and CORS for cross-origin pages.
"""

from __future__ import annotations

import collections
import hashlib
import re
import sys
import threading
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from bundle_contract.http import IMMUTABLE, REVALIDATE, bind, file_response, host_check, is_loopback
from bundle_contract.manifest import MANIFEST_NAME, Manifest

from .errors import RegistryError
from .naming import is_valid_id, is_valid_version
from .registry import INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, Registry, version_dir, versions_newest_first

_SHARD_FILE = re.compile(r"([0-9a-f]{64})\.bin")


def create_app(registry: Registry | str, *, index_ttl: float = 1.0) -> FastAPI:
    """The read-only app for a registry. The index is re-read at most every `index_ttl`
    seconds, so models published while the server runs appear without a restart."""
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    reg.load_index()  # refuse to start on something that is not a registry
    app = FastAPI(title="llmpack registry", description=f"read-only view of {reg.url}",
                  docs_url=None, redoc_url=None)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD"],
                       allow_headers=["Range", "If-None-Match", "If-Range"],
                       expose_headers=["Content-Range", "Content-Length", "ETag", "Accept-Ranges"])
    guard = threading.Lock()
    cached: dict = {"index": None, "at": -1e9}
    manifests: collections.OrderedDict[str, Manifest] = collections.OrderedDict()

    def index() -> dict:
        with guard:
            if time.monotonic() - cached["at"] > index_ttl:
                try:
                    cached["index"] = reg.load_index()
                except RegistryError as e:
                    raise HTTPException(503, str(e)) from None
                cached["at"] = time.monotonic()
            return cached["index"]

    def version_of(model_id: str, version: str) -> dict:
        model = index()["models"].get(model_id) if is_valid_id(model_id) else None
        if model is None:
            raise HTTPException(404, f"unknown model id {model_id!r}")
        entry = model["versions"].get(version) if is_valid_version(version) else None
        if entry is None:
            raise HTTPException(404, f"model {model_id} has no version {version!r}")
        return entry

    def manifest_of(model_id: str, version: str, entry: dict) -> Manifest:
        key = entry["manifest_sha256"]
        with guard:
            if key in manifests:
                manifests.move_to_end(key)
                return manifests[key]
        try:
            m = reg.read_manifest(model_id, version, entry)
        except RegistryError as e:
            raise HTTPException(500, str(e)) from None
        with guard:
            manifests[key] = m
            while len(manifests) > 64:
                manifests.popitem(last=False)
        return m

    def version_json(base: str, model_id: str, version: str, entry: dict, latest: str) -> dict:
        url = f"{base}models/{model_id}/{version}/"
        return {"id": model_id, "version": version, "latest": version == latest, **entry,
                "base_url": url, "manifest_url": url + MANIFEST_NAME}

    def send_file(request: Request, rel: str, etag: str | None, cache: str) -> Response:
        size = reg.store.size(rel)
        if size is None:
            raise HTTPException(404, f"{rel} is missing from the registry; run `llmpack registry verify`")
        return file_response(request, rel, size, lambda: reg.store.open_read(rel), etag=etag, cache=cache)

    @app.get("/")
    def root(request: Request):
        base = str(request.base_url)
        return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "models_url": base + "models",
                "index_url": base + INDEX_NAME}

    @app.api_route("/index.json", methods=["GET", "HEAD"])
    def index_file(request: Request):
        try:
            raw = reg.store.read_bytes(INDEX_NAME)
        except FileNotFoundError:
            raise HTTPException(503, f"{reg.url} has no index.json") from None
        etag = f'"{hashlib.sha256(raw).hexdigest()}"'
        headers = {"Cache-Control": REVALIDATE, "ETag": etag}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers=headers)
        return Response(b"" if request.method == "HEAD" else raw, media_type="application/json",
                        headers={**headers, "Content-Length": str(len(raw))})

    @app.get("/models")
    def list_models(request: Request):
        base = str(request.base_url)
        out = []
        for model_id, model in index()["models"].items():
            latest = model["latest"]
            summary = version_json(base, model_id, latest, model["versions"][latest], latest)
            del summary["latest"]
            out.append({**summary, "latest": latest, "versions": [v for v, _ in versions_newest_first(model)],
                        "url": f"{base}models/{model_id}"})
        return JSONResponse({"models": out}, headers={"Cache-Control": REVALIDATE})

    @app.get("/models/{model_id}")
    def show_model(model_id: str, request: Request):
        model = index()["models"].get(model_id) if is_valid_id(model_id) else None
        if model is None:
            raise HTTPException(404, f"unknown model id {model_id!r}")
        base = str(request.base_url)
        versions = [version_json(base, model_id, v, e, model["latest"]) for v, e in versions_newest_first(model)]
        return JSONResponse({"id": model_id, "latest": model["latest"], "versions": versions},
                            headers={"Cache-Control": REVALIDATE})

    @app.get("/models/{model_id}/{version}")
    def show_version(model_id: str, version: str, request: Request):
        entry = version_of(model_id, version)
        latest = index()["models"][model_id]["latest"]
        return JSONResponse(version_json(str(request.base_url), model_id, version, entry, latest),
                            headers={"Cache-Control": REVALIDATE})

    @app.api_route("/models/{model_id}/{version}/{path:path}", methods=["GET", "HEAD"])
    def version_file(model_id: str, version: str, path: str, request: Request):
        entry = version_of(model_id, version)
        if path == MANIFEST_NAME:
            return send_file(request, version_dir(model_id, version) + MANIFEST_NAME, entry["manifest_sha256"],
                             REVALIDATE)
        m = manifest_of(model_id, version, entry)
        if path.startswith("shards/"):
            match = _SHARD_FILE.fullmatch(path[len("shards/"):])
            if match and any(b.sha256 == match.group(1) for b in m.unique_shards):
                return send_file(request, path, match.group(1), IMMUTABLE)
        for blob in m.files:
            if blob.path == path:
                # versions are immutable but may be removed and re-published: revalidate
                return send_file(request, version_dir(model_id, version) + path, blob.sha256, REVALIDATE)
        raise HTTPException(404, f"{model_id}@{version} has no file {path!r}")

    @app.api_route("/shards/{name}", methods=["GET", "HEAD"])
    def shard(name: str, request: Request):
        match = _SHARD_FILE.fullmatch(name)
        if not match:
            raise HTTPException(404, "shards are named <sha256>.bin")
        return send_file(request, f"shards/{name}", match.group(1), IMMUTABLE)

    return app


def serve(registry: str, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info",
          allowed_hosts: tuple[str, ...] | list[str] = ()) -> None:
    """Run the app with uvicorn until interrupted, answering only for the Host names of
    `host` and `allowed_hosts` (bundle_contract.http.HostCheck)."""
    import uvicorn

    app = create_app(registry)
    sock = bind(host, port)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"serving registry {registry} at http://{shown}:{real_port}/ (Ctrl+C to stop)\n")
    if not is_loopback(host):
        sys.stdout.write(f"warning: listening on {host}, not only this machine: anyone who can reach it can "
                         "read every model\n")
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(host_check(app, host, allowed_hosts), log_level=log_level))
    server.run(sockets=[sock])
