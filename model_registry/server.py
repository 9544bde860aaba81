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
`Range` requests (206/416), `ETag`/`If-None-Match` and CORS for cross-origin pages.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import mimetypes
import re
import socket
import sys
import threading
import time
from typing import Iterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .bundles import CHUNK, MANIFEST, Manifest
from .errors import RegistryError
from .naming import is_valid_id, is_valid_version
from .registry import INDEX_FORMAT, INDEX_NAME, INDEX_VERSION, Registry, version_dir, versions_newest_first

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_SHARD_FILE = re.compile(r"([0-9a-f]{64})\.bin")
_MEDIA_TYPES = {
    ".json": "application/json",
    ".bin": "application/octet-stream",
    ".wasm": "application/wasm",  # required by WebAssembly.instantiateStreaming
    ".wgsl": "text/wgsl; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".jinja": "text/plain; charset=utf-8",
    ".model": "application/octet-stream",
}


def media_type(path: str) -> str:
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot > path.rfind("/") else ""
    return _MEDIA_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """A single `bytes=` range -> (first, last) inclusive; "unsatisfiable"; or None to
    ignore the header and send the whole file (multiple ranges, malformed headers)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.groups()
    if first == "":
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


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
                "base_url": url, "manifest_url": url + MANIFEST}

    def send_file(request: Request, rel: str, etag: str | None, cache: str) -> Response:
        size = reg.store.size(rel)
        if size is None:
            raise HTTPException(404, f"{rel} is missing from the registry; run `llmpack registry verify`")
        headers = {"Accept-Ranges": "bytes", "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
        if etag:
            headers["ETag"] = f'"{etag}"'
            tags = [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]
            if "*" in tags or headers["ETag"] in tags:
                return Response(status_code=304, headers=headers)
        start, length, status = 0, size, 200
        header = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if header and (if_range is None or (etag and if_range.strip() == headers["ETag"])):
            r = parse_range(header, size)
            if r == "unsatisfiable":
                return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
            if r is not None:
                start, length, status = r[0], r[1] - r[0] + 1, 206
                headers["Content-Range"] = f"bytes {r[0]}-{r[1]}/{size}"
        headers["Content-Length"] = str(length)
        mtype = media_type(rel)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=mtype)
        return StreamingResponse(_read_range(reg, rel, start, length), status_code=status, headers=headers,
                                 media_type=mtype)

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
        if path == MANIFEST:
            return send_file(request, version_dir(model_id, version) + MANIFEST, entry["manifest_sha256"],
                             REVALIDATE)
        m = manifest_of(model_id, version, entry)
        if path.startswith("shards/"):
            match = _SHARD_FILE.fullmatch(path[len("shards/"):])
            if match and any(b.sha256 == match.group(1) for b in m.shards):
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


def _read_range(reg: Registry, rel: str, start: int, length: int) -> Iterator[bytes]:
    with reg.store.open_read(rel) as f:
        f.seek(start)
        left = length
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break  # the file shrank under us; the client's hash check will say so
            left -= len(chunk)
            yield chunk


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise RegistryError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise RegistryError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(registry: str, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Run the app with uvicorn until interrupted."""
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
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    server.run(sockets=[sock])
