"""Reading bundles (docs/bundle.md) as the registry needs them.

The registry does not interpret weights; it needs the manifest's shard and file lists
(what to store, where, with which hash) and the handful of fields that go into the
index. Validation here is exactly that much: enough to refuse something that is not a
bundle, or whose lists would make the registry write outside its folders.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import RegistryError

BUNDLE_FORMAT = "llmpack-bundle"
SUPPORTED_BUNDLE_VERSIONS = (1,)
MANIFEST = "manifest.json"
CHUNK = 1 << 20

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Blob:
    """One stored file of a bundle: `path` inside the bundle, its size and sha256."""

    path: str
    bytes: int
    sha256: str


@dataclass
class Manifest:
    data: dict
    raw: bytes
    sha256: str
    shards: list[Blob]  # unique by hash, in manifest order
    files: list[Blob]

    @property
    def total_bytes(self) -> int:
        """Bytes of the whole bundle: manifest, every listed file and every (unique) shard."""
        return len(self.raw) + sum(b.bytes for b in self.shards) + sum(b.bytes for b in self.files)


@dataclass
class LocalBundle:
    root: Path
    manifest: Manifest
    unlisted: list[str] = field(default_factory=list)  # files in the folder the manifest does not list


def shard_path(sha256: str) -> str:
    return f"shards/{sha256}.bin"


def is_safe_relpath(path: str) -> bool:
    """A plain relative POSIX path with conservative segments: no '..', no absolute, no '\\'."""
    if not isinstance(path, str) or not path or path.startswith("/") or len(path) > 400:
        return False
    parts = path.split("/")
    return all(_SEGMENT_RE.fullmatch(p) and p not in (".", "..") for p in parts)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Parse and check manifest bytes; `where` names the manifest in error messages."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistryError(f"{where} is not valid JSON ({e}); re-create the bundle with `llmpack package`") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise RegistryError(f"{where} is not an llmpack bundle manifest (no \"format\": \"{BUNDLE_FORMAT}\")")
    version = data.get("version")
    if version not in SUPPORTED_BUNDLE_VERSIONS:
        known = ", ".join(map(str, SUPPORTED_BUNDLE_VERSIONS))
        raise RegistryError(f"{where} has bundle format version {version!r}, this llmpack reads version {known}; "
                            "upgrade llmpack or re-package the model")
    model = data.get("model")
    if not isinstance(model, dict):
        raise RegistryError(f"{where} has no \"model\" object; re-create the bundle with `llmpack package`")

    shards: dict[str, Blob] = {}
    entries = data.get("shards")
    if not isinstance(entries, list):
        raise RegistryError(f"{where}: \"shards\" must be a list; re-create the bundle with `llmpack package`")
    for i, s in enumerate(entries):
        sha = s.get("sha256") if isinstance(s, dict) else None
        size = s.get("bytes") if isinstance(s, dict) else None
        if not (isinstance(sha, str) and _SHA_RE.fullmatch(sha)) or not _is_size(size):
            raise RegistryError(f"{where}: shards[{i}] needs a lowercase hex \"sha256\" and a \"bytes\" count")
        if s.get("file") != shard_path(sha):
            raise RegistryError(f"{where}: shards[{i}] is stored as {s.get('file')!r}, but a shard must be "
                                f"named by its hash ({shard_path(sha)!r})")
        if sha in shards and shards[sha].bytes != size:
            raise RegistryError(f"{where}: shard {sha} is listed twice with different sizes")
        shards.setdefault(sha, Blob(shard_path(sha), size, sha))

    files: list[Blob] = []
    seen: set[str] = set()
    entries = data.get("files", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{where}: \"files\" must be a list; re-create the bundle with `llmpack package`")
    for i, f in enumerate(entries):
        path = f.get("path") if isinstance(f, dict) else None
        sha = f.get("sha256") if isinstance(f, dict) else None
        size = f.get("bytes") if isinstance(f, dict) else None
        if not is_safe_relpath(path):
            raise RegistryError(f"{where}: files[{i}] has path {path!r}; file paths must be relative, "
                                "without '..', made of letters, digits and . _ + -")
        if path == MANIFEST or path.split("/")[0] == "shards":
            raise RegistryError(f"{where}: files[{i}] path {path!r} collides with the manifest or the shards folder")
        if path in seen:
            raise RegistryError(f"{where}: file {path!r} is listed twice")
        if not (isinstance(sha, str) and _SHA_RE.fullmatch(sha)) or not _is_size(size):
            raise RegistryError(f"{where}: files[{i}] ({path}) needs a lowercase hex \"sha256\" and a \"bytes\" count")
        seen.add(path)
        files.append(Blob(path, size, sha))
    return Manifest(data, raw, hashlib.sha256(raw).hexdigest(), list(shards.values()), files)


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_bundle(path: Path) -> LocalBundle:
    """Open a bundle folder and check its manifest (hashes are checked by `check_hashes`)."""
    root = Path(path)
    if not root.exists():
        raise RegistryError(f"bundle {root} does not exist; create it with `llmpack package SRC --out {root}`")
    if not root.is_dir():
        raise RegistryError(f"{root} is not a bundle folder (a bundle is a directory with manifest.json)")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise RegistryError(f"{root} is not a bundle: it has no manifest.json "
                            f"(create one with `llmpack package SRC --out {root}`)")
    manifest = parse_manifest(mpath.read_bytes(), str(mpath))
    listed = {MANIFEST} | {b.path for b in manifest.shards} | {b.path for b in manifest.files}
    unlisted = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and p.relative_to(root).as_posix() not in listed)
    return LocalBundle(root, manifest, unlisted)


def hash_stream(read: Callable[[int], bytes], on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """sha256 and length of everything `read` yields, in CHUNK pieces."""
    h = hashlib.sha256()
    n = 0
    while chunk := read(CHUNK):
        h.update(chunk)
        n += len(chunk)
        if on_bytes:
            on_bytes(len(chunk))
    return h.hexdigest(), n


def check_hashes(bundle: LocalBundle, blobs: Iterable[Blob], on_bytes: Callable[[int], None] | None = None) -> None:
    """Hash each blob's local file; raise on the first one missing, of the wrong size or content."""
    for blob in blobs:
        p = bundle.root / blob.path
        if not p.is_file():
            raise RegistryError(f"bundle {bundle.root} is incomplete: {blob.path} is listed in manifest.json "
                                "but missing; re-create the bundle with `llmpack package`")
        with open(p, "rb") as f:
            sha, size = hash_stream(f.read, on_bytes)
        if size != blob.bytes or sha != blob.sha256:
            what = f"has {size} bytes, manifest says {blob.bytes}" if size != blob.bytes else \
                f"has sha256 {sha[:16]}…, manifest says {blob.sha256[:16]}…"
            raise RegistryError(f"bundle {bundle.root} is corrupt: {blob.path} {what}; "
                                "re-create the bundle with `llmpack package`")


def index_fields(m: Manifest) -> dict:
    """The per-version facts the index records, drawn from a manifest (absent fields -> None)."""
    d = m.data
    model = d.get("model") or {}
    memory = d.get("memory") if isinstance(d.get("memory"), dict) else {}
    quant = d.get("quantization") if isinstance(d.get("quantization"), dict) else {}
    return {
        "bundle_version": d.get("version"),
        "name": model.get("name"),
        "architecture": model.get("architecture"),
        "hf_architecture": model.get("hf_architecture"),
        "parameters": model.get("parameters"),
        "license": model.get("license"),
        "source": model.get("source"),
        "quantization": {k: quant.get(k) for k in ("scheme", "compute", "bits_per_weight") if k in quant} or None,
        "total_bytes": m.total_bytes,
        "weights_bytes": memory.get("weights_bytes"),
        "memory_estimate_bytes": memory.get("estimate_bytes"),
        "context_window": memory.get("context_window"),
        "requirements": d.get("requirements"),
        "shard_count": len(m.shards),
        "created": d.get("created"),
        "generator": d.get("generator"),
    }
