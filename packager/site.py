"""`llmpack site`: a static folder holding bundles, the JS runtime and the chat page.

    OUT/
      index.html, app.js, ...     the chat page (packager.web_assets.demo_dir)
      runtime/llmpack.js          the JS runtime (and its source map)
      models/<id>/                each bundle: manifest.json, its listed files, its shards
      models.json                 the page's model list (what `llmpack serve` answers at /models.json)
      _headers                    COOP/COEP and shard caching, for hosts that read this file
      llmpack-site.json           marks the folder as a site, so that a later run may replace it

Every URL inside is relative, so the folder works from any static host, at any path.
The folder is assembled beside OUT and renamed into place when complete
(bundle_contract.atomic_dir): OUT is the new site, or what it was before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from bundle_contract.atomic_dir import swap_into_place
from bundle_contract.card import make_card, read_quality
from bundle_contract.errors import write_failure
from bundle_contract.manifest import CHUNK, MANIFEST_NAME, Blob, Manifest, ManifestError, load

from . import __version__, web_assets
from .errors import PackError
from .serve import MODELS_JSON, model_entry

SITE_MARKER = "llmpack-site.json"
SITE_FORMAT = "llmpack-site"

# Netlify and Cloudflare Pages read `_headers`; README.md ("Deploy") gives the same lines
# for nginx and Apache. COOP/COEP make the page cross-origin isolated (Wasm threads);
# without them the page runs single-threaded Wasm or WebGPU. Both hosts apply every
# matching rule (so no rule may set a header another sets), and Cloudflare allows one
# splat per path (hence the :id placeholder, which Netlify reads too). Shards are named by
# their sha256: cached forever; everything else keeps the host's default (revalidated).
HEADERS_FILE = """\
/*
  Cross-Origin-Opener-Policy: same-origin
  Cross-Origin-Embedder-Policy: require-corp
  X-Content-Type-Options: nosniff
/models/:id/shards/*
  Cache-Control: public, max-age=31536000, immutable
"""


_RELATIVE_JS = re.compile(r"""["']\./([A-Za-z0-9_.-]+\.js)["']""")


def runtime_files(root: Path) -> list[str]:
    """What a page loads of the built runtime: llmpack.js and the chunks it imports
    (`"./xgrammar.js"`, followed transitively), each with its source map when there is one.
    Other files of the build (the Node host of `llmpack serve --api`) stay out of a site."""
    todo, found = ["llmpack.js"], []
    while todo:
        name = todo.pop()
        if name in found or not (root / name).is_file():
            continue
        found.append(name)
        todo += _RELATIVE_JS.findall((root / name).read_text(encoding="utf-8", errors="replace"))
    return [f for name in found for f in (name, f"{name}.map") if (root / f).is_file()]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "model"


def _copy_verified(src: Path, dest: Path, blob: Blob) -> None:
    """Copy one listed file, hashing it on the way; PackError unless it is the manifest's."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, n = hashlib.sha256(), 0
    try:
        with open(src, "rb") as f, open(dest, "wb") as out:
            while n <= blob.bytes and (chunk := f.read(min(CHUNK, blob.bytes + 1 - n))):
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise PackError(f"{src} is listed in its bundle's {MANIFEST_NAME} but missing; package the model again") \
            from None
    if n != blob.bytes or h.hexdigest() != blob.sha256:
        raise PackError(f"{src} does not match its bundle's {MANIFEST_NAME} (size or sha256 differs); "
                        "package the model again")


def _copy_bundle(bundle: Path, manifest: Manifest, dest: Path) -> None:
    dest.mkdir(parents=True)
    for blob in (*manifest.files, *manifest.unique_shards):
        _copy_verified(bundle / blob.path, dest / blob.path, blob)
    (dest / MANIFEST_NAME).write_bytes(manifest.raw)


class _Models:
    """The models of a site being built: ids, and the entries of models.json."""

    def __init__(self) -> None:
        self.entries: list[dict] = []

    def new_id(self, name: str) -> str:
        taken = {e["id"] for e in self.entries}
        base = _slug(name)
        model_id, n = base, 2
        while model_id in taken:
            model_id, n = f"{base}-{n}", n + 1
        return model_id


def _site_entry(manifest: Manifest, model_id: str, card: dict, **extra) -> dict:
    """One model of models.json: `llmpack serve`'s /models.json entry with a relative URL."""
    return {**model_entry(manifest.summary(), model_id, f"models/{model_id}/", **extra), "card": card}


def check_out(out: Path) -> None:
    """Refuse an OUT that exists and is not a site (a bundle, a home folder, a file)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise PackError(f"{out} exists and is not a folder; choose another OUT")
    if (out / SITE_MARKER).is_file():
        return
    if any(out.iterdir()):
        raise PackError(f"{out} exists and is not an llmpack site (it has no {SITE_MARKER}); it is left as it is: "
                        "choose a new or empty folder for OUT")


def build_site(out: Path | str, sources: Sequence[str], *, registry: str | None = None) -> dict:
    """Write the static site OUT from bundle folders and registry ids (`ID[@VERSION]` of
    `registry`); return a summary. OUT is replaced only when it is a site already."""
    if not sources:
        raise PackError("name at least one bundle folder or registry id")
    out = Path(out).expanduser().absolute()
    check_out(out)
    runtime_root, page_root = web_assets.runtime_dir(), web_assets.demo_dir()
    plan = [_resolve(s, registry) for s in sources]

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise write_failure(e, out.parent, 0, creating=True, error=PackError) or e from None
    models = _Models()
    total = 0
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a site is meant to be served
        for page_file in sorted(page_root.iterdir()):
            if page_file.is_file() and not page_file.name.startswith("."):
                shutil.copyfile(page_file, tmp / page_file.name)
        (tmp / "runtime").mkdir()
        for name in runtime_files(runtime_root):
            shutil.copyfile(runtime_root / name, tmp / "runtime" / name)
        for kind, value in plan:
            if kind == "bundle":
                manifest = load(value)
                model_id = models.new_id(Path(value).resolve().name)
                _copy_bundle(Path(value), manifest, tmp / "models" / model_id)
                card = make_card(manifest, read_quality(value, manifest))
                models.entries.append(_site_entry(manifest, model_id, card))
            else:
                reg, spec = value
                mid, version, entry = reg.resolve(spec)
                model_id = models.new_id(mid)
                reg.pull(f"{mid}@{version}", tmp / "models" / model_id)
                manifest = load(tmp / "models" / model_id)
                card = entry.get("card") or make_card(manifest)  # versions published before cards have none
                models.entries.append(_site_entry(manifest, model_id, card, source="registry", version=version,
                                                  registry=reg.url, manifest_sha256=entry["manifest_sha256"]))
            total += manifest.total_bytes
        (tmp / MODELS_JSON).write_text(json.dumps({"models": models.entries, "errors": []}, indent=1) + "\n")
        (tmp / "_headers").write_text(HEADERS_FILE)
        (tmp / ".nojekyll").write_text("")  # GitHub Pages: serve the folder as it is
        (tmp / SITE_MARKER).write_text(json.dumps({"format": SITE_FORMAT, "version": 1,
                                                    "generator": f"llmpack {__version__}",
                                                    "models": [e["id"] for e in models.entries]}, indent=1) + "\n")
        for folder, _, files in os.walk(tmp):
            os.chmod(folder, 0o755)
            for f in files:
                os.chmod(os.path.join(folder, f), 0o644)
        check_out(out)  # still a site (or absent) after the copy: never replace something else
        swap_into_place(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        failure = write_failure(e, out.parent, total, error=PackError) if isinstance(e, OSError) else None
        if failure:
            raise failure from None
        raise
    return {"out": str(out), "models": [{"id": e["id"], "name": e["name"], "url": e["url"], "bytes": e["bytes"]}
                                        for e in models.entries], "total_bytes": total}


def _resolve(source: str, registry: str | None):
    """("bundle", folder) or ("registry", (Registry, spec)); PackError otherwise."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise PackError(f"{source} is a folder but not a bundle (it has no {MANIFEST_NAME}); make one with "
                            f"`llmpack package --out {source}`")
        try:
            load(path)
        except ManifestError as e:
            raise PackError(str(e)) from None
        return "bundle", path
    from model_registry.errors import RegistryError
    from model_registry.naming import parse_spec

    try:
        parse_spec(source)
    except RegistryError as e:
        raise PackError(f"{source} is neither a bundle folder nor a registry id (ID or ID@VERSION): {e}") from None
    if not registry:
        raise PackError(f"{source} is not a folder; to take it from a registry, pass --registry REGISTRY "
                        "(or set LLMPACK_REGISTRY)")
    from model_registry.registry import Registry

    reg = Registry(registry)
    reg.resolve(source)  # an unknown id fails here, before anything is written
    return "registry", (reg, source)
