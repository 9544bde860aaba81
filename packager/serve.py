"""`llmpack serve`: a local HTTP server for bundles, the JS runtime and the chat demo.

URL space (docs/serve.md):

    /<file>                  the chat demo (index.html, app.js, ...; packager.web_assets)
    /runtime/llmpack.js      the JS runtime, as built into the installed package
    /models/<id>/<file>      a bundle: manifest.json, tokenizer files, shards/<sha256>.bin, ...
    /api/models              the served models, and those of a registry (--registry)
    /models.json             the same list, where the chat page (and a static site) has it
    /registry/...            a local registry's HTTP API (--registry PATH)
    /v1/...                  with --api: the OpenAI-compatible API (packager.openai_api)

Every response carries COOP/COEP (cross-origin isolation, so that Wasm threads can use
SharedArrayBuffer). Content-addressed shards are cached forever; everything else is
revalidated. A request path is checked segment by segment and resolved (symlinks
included) before anything is read: only regular files inside a served root come back.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from bundle_contract.card import make_card, read_quality
from bundle_contract.http import IMMUTABLE, REVALIDATE, bind, host_check, is_loopback, local_file_response
from bundle_contract.manifest import MANIFEST_NAME, Manifest, ManifestError, load

from . import openai_api, web_assets
from .errors import PackError
from .node_api import NodeApiHost

log = logging.getLogger(__name__)

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
MODELS_JSON = "models.json"
_SHARD_PATH = re.compile(r"shards/([0-9a-f]{64})\.bin")
# refused in any path segment: a leading dot ("..", hidden files), backslashes, "%" (what
# is left of a double encoding), ":" (drive letters, streams), control characters
_UNSAFE_SEGMENT = re.compile(r"^\.|[\\%:\x00-\x1f\x7f]")


def resolve_inside(root: Path, rel: str) -> Path | None:
    """The regular file `rel` (a decoded URL path, "/"-separated) names inside `root` (an
    already resolved folder), or None. Refuses absolute paths, empty, dot-led, encoded or
    backslashed segments, and anything whose real path (symlinks followed) leaves root."""
    parts = rel.split("/")
    if not rel or any(not p or _UNSAFE_SEGMENT.search(p) for p in parts):
        return None
    try:
        real = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


# ---------------------------------------------------------------------------- bundles


@dataclass(frozen=True)
class Bundle:
    id: str
    path: Path  # resolved
    manifest: Manifest


# the fields of a manifest summary (or registry index entry) that /api/models lists
_LISTED = ("name", "architecture", "parameters", "license", "quantization", "shard_count", "weights_bytes",
           "memory_estimate_bytes", "context_window", "requirements", "created", "card")


def model_entry(summary: dict, model_id: str, url: str, source: str = "local", **extra) -> dict:
    """One model of /api/models (docs/serve.md) from a manifest's summary or a registry
    index entry (the same fields: Manifest.summary), loadable from `url`."""
    return {"id": model_id, **extra, "source": source, "url": url, "manifest_url": url + MANIFEST_NAME,
            **{k: summary.get(k) for k in _LISTED}, "name": summary.get("name") or model_id,
            "bytes": summary.get("total_bytes")}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "model"


class BundleSet:
    """The bundles under the paths given to `llmpack serve`: each path is a bundle folder
    or a folder of bundle folders. Folders of bundles are re-scanned at most every `ttl`
    seconds, so a bundle packaged into one while the server runs appears."""

    def __init__(self, paths: Sequence[Path | str], ttl: float = 1.0):
        if not paths:
            raise PackError("give at least one bundle folder or folder of bundles")
        self.roots: list[tuple[Path, bool]] = []  # (resolved folder, is a bundle itself)
        for given in paths:
            p = Path(given).expanduser()
            if not p.exists():
                raise PackError(f"{given} does not exist")
            if not p.is_dir():
                raise PackError(f"{given} is not a folder: give a bundle folder (with {MANIFEST_NAME}) "
                                "or a folder of bundle folders")
            is_bundle = (p / MANIFEST_NAME).exists()
            if is_bundle:
                load(p)  # a broken bundle named explicitly is an error, not a skip
            self.roots.append((p.resolve(), is_bundle))
        self.ttl = ttl
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], Manifest | ManifestError]] = {}
        self._bundles: dict[str, Bundle] = {}
        self._at = -1e9
        if not self.all():
            shown = ", ".join(str(p) for p in paths)
            raise PackError(f"no bundles in {shown}: a bundle is a folder with {MANIFEST_NAME}; "
                            "make one with `llmpack package --out DIR`")

    def all(self) -> list[Bundle]:
        with self._lock:
            if time.monotonic() - self._at > self.ttl:
                self._bundles = self._scan()
                self._at = time.monotonic()
            return list(self._bundles.values())

    def get(self, bundle_id: str) -> Bundle | None:
        return next((b for b in self.all() if b.id == bundle_id), None)

    def _scan(self) -> dict[str, Bundle]:
        found: dict[str, Bundle] = {}
        problems = []
        for root, is_bundle in self.roots:
            if is_bundle:
                folders = [root]
            else:
                try:
                    folders = sorted(c for c in root.iterdir()
                                     if not c.name.startswith(".") and (c / MANIFEST_NAME).is_file())
                except OSError as e:
                    problems.append(f"cannot list {root}: {e.strerror}")
                    continue
            for folder in folders:
                real = folder.resolve()
                manifest = self._load(real)
                if isinstance(manifest, ManifestError):
                    problems.append(str(manifest))
                    continue
                base = _slug(folder.name)
                bundle_id, n = base, 2
                while bundle_id in found:
                    bundle_id, n = f"{base}-{n}", n + 1
                found[bundle_id] = Bundle(bundle_id, real, manifest)
        for problem in problems:
            if problem not in self.problems:  # logged when it appears, not at every scan
                log.warning("skipped: %s", problem)
        self.problems = problems
        return found

    def _load(self, folder: Path) -> Manifest | ManifestError:
        """The folder's manifest, read again only when the file changed; the error instead
        when it is not one this llmpack reads."""
        try:
            st = (folder / MANIFEST_NAME).stat()
        except OSError:
            return ManifestError(f"{folder} is not a bundle: it has no {MANIFEST_NAME}")
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(folder)
        if hit is None or hit[0] != key:
            try:
                hit = (key, load(folder))
            except ManifestError as e:
                hit = (key, e.with_traceback(None))
            self._cache[folder] = hit
        return hit[1]


# --------------------------------------------------------------------------- registry


class RegistrySource:
    """The models of a registry, for /api/models: either a running `llmpack registry
    serve` (an http(s) URL; the page loads from it directly, it allows CORS), or a
    registry location (folder, fsspec URL) whose HTTP API this server mounts at
    /registry/."""

    PREFIX = "/registry"

    def __init__(self, location: str, ttl: float = 5.0):
        self.location = location
        self.ttl = ttl
        self.app = None
        self._cached: tuple[float, list[dict], str | None] | None = None
        self._lock = threading.Lock()
        if not re.match(r"https?://", location):
            from model_registry.errors import RegistryError
            from model_registry.registry import Registry
            from model_registry.server import create_app as registry_app

            try:
                self.registry = Registry(location)
                self.app = registry_app(self.registry)
            except RegistryError as e:
                raise PackError(f"--registry {location}: {e}") from None

    def models(self, base_url: str) -> tuple[list[dict], str | None]:
        """(model summaries, error text or None)."""
        if self.app is not None:
            from model_registry.errors import RegistryError

            try:
                return self._local(base_url), None
            except RegistryError as e:
                return [], f"registry {self.location}: {e}"
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1], self._cached[2]
        models, error = self._remote()
        with self._lock:
            self._cached = (time.monotonic(), models, error)
        return models, error

    def _local(self, base_url: str) -> list[dict]:
        out = []
        for model_id, model in self.registry.load_index()["models"].items():
            version = model["latest"]
            url = f"{base_url}{self.PREFIX.lstrip('/')}/models/{model_id}/{version}/"
            out.append(model_entry(model["versions"][version], model_id, url, "registry", version=version,
                                   registry=self.location,
                                   manifest_sha256=model["versions"][version].get("manifest_sha256")))
        return out

    def _remote(self) -> tuple[list[dict], str | None]:
        url = self.location.rstrip("/") + "/models"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                data = json.loads(r.read())
            return [model_entry(m, m["id"], m["base_url"], "registry", version=m.get("version"),
                                registry=self.location, manifest_sha256=m.get("manifest_sha256"))
                    for m in data["models"]], None
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            reason = getattr(e, "reason", None) or e
            return [], f"registry {self.location} is unreachable or not an llmpack registry ({reason})"


# -------------------------------------------------------------------------------- app


class _Site:
    """ASGI wrapper: adds COOP/COEP to every HTTP response, routes /registry/ to a
    mounted registry app (with root_path set, so that the URLs it builds include it) and
    /v1/ to the OpenAI-compatible API (with --api)."""

    def __init__(self, app, registry_app=None, api_app=None):
        self.app, self.registry_app, self.api_app = app, registry_app, api_app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in ISOLATION_HEADERS.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        app = self.app
        path = scope["path"]
        prefix = RegistrySource.PREFIX
        if self.registry_app is not None and (path == prefix or path.startswith(prefix + "/")):
            app, scope = self.registry_app, {**scope, "root_path": scope.get("root_path", "") + prefix}
        elif self.api_app is not None and (path == openai_api.PREFIX or path.startswith(openai_api.PREFIX + "/")):
            app = self.api_app

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.extra]}
            await send(message)

        await app(scope, receive, send_with_headers)


def create_app(paths: Sequence[Path | str] | BundleSet, *, registry: str | RegistrySource | None = None,
               runtime_dist: Path | None = None, web_dir: Path | None = None, api: NodeApiHost | None = None):
    """The ASGI app of `llmpack serve`. `runtime_dist` is the folder holding llmpack.js and
    `web_dir` the chat page's; both default to the installed ones (packager.web_assets).
    With `api` (a started NodeApiHost), /v1/ is the OpenAI-compatible API."""
    bundles = paths if isinstance(paths, BundleSet) else BundleSet(paths)
    source = RegistrySource(registry) if isinstance(registry, str) else registry
    runtime_root = (runtime_dist or web_assets.runtime_dir()).resolve()
    web_root = (web_dir or web_assets.demo_dir()).resolve()
    app = FastAPI(title="llmpack serve", docs_url=None, redoc_url=None, openapi_url=None)

    def send(request: Request, path: Path | None, **kw) -> Response:
        if path is None:
            raise HTTPException(404, "not found")
        try:
            return local_file_response(request, path, **kw)
        except OSError:
            raise HTTPException(404, "not found") from None

    @app.get("/api/models")
    @app.get("/" + MODELS_JSON)  # the chat page's list; a static site (`llmpack site`) has it as a file
    def api_models(request: Request):
        base = str(request.base_url)
        models = [model_entry({**b.manifest.summary(), "card": make_card(b.manifest, read_quality(b.path, b.manifest))},
                              b.id, f"{base}models/{b.id}/") for b in bundles.all()]
        errors = list(bundles.problems)
        if source is not None:
            listed, error = source.models(base)
            models += listed
            errors += [error] if error else []
        return JSONResponse({"models": models, "errors": errors}, headers={"Cache-Control": REVALIDATE})

    @app.api_route("/models/{bundle_id}/{path:path}", methods=["GET", "HEAD"])
    def bundle_file(bundle_id: str, path: str, request: Request):
        bundle = bundles.get(bundle_id)
        if bundle is None:
            raise HTTPException(404, f"no bundle {bundle_id!r} is served here; see /api/models")
        shard = _SHARD_PATH.fullmatch(path)
        if shard:  # the name is the content's sha256: cache forever
            return send(request, resolve_inside(bundle.path, path), etag=shard.group(1), cache=IMMUTABLE)
        return send(request, resolve_inside(bundle.path, path))

    @app.api_route("/runtime/{name}", methods=["GET", "HEAD"])
    def runtime_file(name: str, request: Request):
        found = resolve_inside(runtime_root, name)
        if found is None and name == "llmpack.js":
            raise HTTPException(404, f"the JS runtime is missing from this install: {web_assets.REINSTALL}")
        return send(request, found)

    @app.api_route("/{path:path}", methods=["GET", "HEAD"])
    def web_file(path: str, request: Request):
        if "/" in path:  # the page is the folder's top-level files (web_demo/test/ is not served)
            raise HTTPException(404, "not found")
        return send(request, resolve_inside(web_root, path or "index.html"))

    return _Site(app, source.app if source else None, openai_api.OpenAIApi(bundles, api) if api else None)


# ------------------------------------------------------------------------------ server


def page_url(host: str, port: int) -> str:
    """The URL to open: a wildcard address is reached through the loopback one."""
    shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def serve(paths: Sequence[Path | str], host: str = "127.0.0.1", port: int = 8000, *, registry: str | None = None,
          allowed_hosts: Sequence[str] = (), open_browser: bool = False, query: str = "", api: bool = False,
          speculative: bool = False, log_level: str = "warning", out: Callable[[str], None] = print) -> None:
    """Run `llmpack serve` until interrupted: checks the paths and the runtime, binds,
    prints the URL (first line) and the served models, then runs uvicorn. Requests are
    answered only for the Host names of `host` and `allowed_hosts` (bundle_contract.http.HostCheck).
    With `api`, the Node process that runs the models is started first (packager.node_api);
    `speculative` turns prompt-lookup speculative decoding on for its requests that do not say."""
    if speculative and not api:
        raise PackError("--speculative is for the OpenAI-compatible API: add --api (the chat page has a switch "
                        "of its own, under Generation)")
    bundles = BundleSet(paths)
    runtime = web_assets.runtime_dir()
    sock = bind(host, port)
    node = NodeApiHost(runtime / "api_host.js", speculative=speculative).start() if api else None
    try:
        app = create_app(bundles, registry=registry, runtime_dist=runtime, api=node)
        _run(app, sock, bundles, host, registry=registry, allowed_hosts=allowed_hosts, open_browser=open_browser,
             query=query, api=api, speculative=speculative, log_level=log_level, out=out)
    finally:
        if node is not None:
            node.close()


def _run(app, sock, bundles: BundleSet, host: str, *, registry, allowed_hosts, open_browser, query, api,
         speculative=False, log_level, out) -> None:
    """Prints the URLs and serves until interrupted."""
    import uvicorn

    url = page_url(host, sock.getsockname()[1])
    listed = bundles.all()
    out(f"serving {len(listed)} model{'s' if len(listed) != 1 else ''} and the chat demo at {url}{query} "
        "(Ctrl+C to stop)")
    for b in listed:
        out(f"  {b.id:<32} {url}models/{b.id}/  ({b.path})")
    if registry:
        out(f"  + the models of registry {registry}")
    if api:
        out(f"  OpenAI-compatible API: {url}v1/ (POST /v1/chat/completions, GET /v1/models; "
            "the models run in Node.js)")
        if speculative:
            out('  speculative decoding (prompt lookup) is on for every API request that does not say '
                '"speculative": false')
    if not is_loopback(host):
        out(f"warning: listening on {host}: other machines can reach this server and read every served file. "
            "Browsers enable WebGPU only on https:// or localhost pages: serve other machines through HTTPS.")
    sys.stdout.flush()
    if open_browser:
        import webbrowser
        threading.Timer(0.5, webbrowser.open, args=(url + query,)).start()
    app = host_check(app, host, allowed_hosts)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off"))
    server.run(sockets=[sock])

