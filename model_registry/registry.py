"""The registry: publish, list, show, pull, verify, remove and garbage-collect bundles.

Layout under the registry root (docs/registry.md has the full description):

    index.json                     every model id -> versions -> summary (atomically replaced)
    index.lock                     publisher lock (flock on local disks, lease object elsewhere)
    shards/<sha256>.bin            weight shards of all models, stored once by content
    models/<id>/<version>/         manifest.json and the bundle's listed files

The layout is also the URL space: a static file host or object store serving the
root serves the registry, and `llmpack registry serve` serves the same paths.

Write protocol (what makes concurrent and interrupted publishes safe):

1. hash every file of the bundle; refuse it before uploading anything if one is off;
2. upload the shards the registry lacks, without the lock (content-addressed files
   are the same whoever writes them, and each appears atomically);
3. under the lock: re-read the index, pick the version, re-upload any shard a
   concurrent `remove` collected meanwhile, write the version folder (manifest last),
   then replace index.json in one step.

A publish killed anywhere before that last step leaves index.json as it was; what it
did write (shards, a version folder the index does not name) is garbage that `gc` or
the next `remove` deletes, and that a re-publish overwrites.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from bundle_contract.atomic_dir import swap_into_place
from bundle_contract.card import make_card, read_quality
from bundle_contract.errors import write_failure
from bundle_contract.manifest import CHUNK, MANIFEST_NAME, Blob, Manifest, decode_json

from .bundles import LocalBundle, check_hashes, parse_manifest, read_bundle
from .errors import RegistryError
from .naming import check_id, check_version, id_from_name, is_valid_id, is_valid_version, parse_spec
from .progress import byte_progress
from .storage import LOCK_NAME, UMASK, HashMismatch, LeaseLock, Store, utc_now

INDEX_NAME = "index.json"
INDEX_FORMAT = "llmpack-registry"
INDEX_VERSION = 1
REGISTRY_ENTRIES = {INDEX_NAME, LOCK_NAME, "shards", "models"}
STALE_TEMP_S = 3600  # temporary files older than this are leftovers of killed writers

_SHARD_NAME = re.compile(r"([0-9a-f]{64})\.bin")


def version_dir(model_id: str, version: str) -> str:
    return f"models/{model_id}/{version}/"


def empty_index() -> dict:
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "generation": 0, "updated": None, "models": {}}


# the index entry fields commands read, and what each must be when present and not null
_WHOLE = "a whole number >= 0"
_ENTRY_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    **{k: (lambda v: isinstance(v, str), "a string") for k in (
        "path", "name", "architecture", "hf_architecture", "license", "created", "generator", "published")},
    **{k: (lambda v: type(v) is int and v >= 0, _WHOLE) for k in (
        "manifest_bytes", "bundle_version", "parameters", "total_bytes", "weights_bytes", "memory_estimate_bytes",
        "context_window", "shard_count")},
    **{k: (lambda v: isinstance(v, dict), "an object") for k in ("source", "quantization", "requirements", "card")},
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def parse_index(raw: bytes, where: str) -> dict:
    """Parse index.json and check the parts every command relies on: anything else is one
    RegistryError naming the damaged place."""
    restore = "restore it from a backup"
    index = decode_json(raw, where, "a registry index", restore, RegistryError)
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise RegistryError(f"{where} is not an llmpack registry index (no \"format\": \"{INDEX_FORMAT}\")")
    version = index.get("version")
    if type(version) is not int or not 1 <= version <= INDEX_VERSION:
        shown = version if type(version) is int and version.bit_length() < 64 else type(version).__name__
        raise RegistryError(f"{where} has index version {shown!r}; this llmpack reads version "
                            f"{INDEX_VERSION}: upgrade llmpack")
    generation = index.get("generation")
    if generation is not None and not (type(generation) is int and generation >= 0):
        raise RegistryError(f"{where} is damaged: \"generation\" is not {_WHOLE}; {restore}")
    models = index.get("models")
    if not isinstance(models, dict):
        raise RegistryError(f"{where} is damaged: \"models\" is not an object; {restore}")
    for model_id, model in models.items():
        versions = model.get("versions") if isinstance(model, dict) else None
        if not is_valid_id(model_id) or not isinstance(versions, dict) or not versions:
            raise RegistryError(f"{where} is damaged at model {model_id[:100]!r}; {restore}")
        for v, entry in versions.items():
            if not is_valid_version(v) or not isinstance(entry, dict) or \
                    not _SHA256.fullmatch(str(entry.get("manifest_sha256"))):
                raise RegistryError(f"{where} is damaged at {model_id}@{v[:64]}; {restore}")
            for key, (ok, words) in _ENTRY_FIELDS.items():
                if entry.get(key) is not None and not ok(entry[key]):
                    raise RegistryError(f"{where} is damaged at {model_id}@{v}: \"{key}\" is not {words}; {restore}")
        latest = model.get("latest")
        if not isinstance(latest, str) or latest not in versions:
            raise RegistryError(f"{where} is damaged: latest version of {model_id} is not one of its versions; "
                                f"{restore}")
    return index


def iter_versions(index: dict, model_id: str | None = None) -> Iterator[tuple[str, str, dict]]:
    for mid, model in index["models"].items():
        if model_id is None or mid == model_id:
            for v, entry in model["versions"].items():
                yield mid, v, entry


def versions_newest_first(model: dict) -> list[tuple[str, dict]]:
    """Versions in reverse publish order (the index keeps them in publish order)."""
    return list(reversed(list(model["versions"].items())))


class Registry:
    """A registry at a local path or fsspec URL."""

    def __init__(self, url: str):
        self.store = Store(url)
        self.url = self.store.url

    # -- reading -------------------------------------------------------------------

    def load_index(self, must_exist: bool = True) -> dict:
        try:
            raw = self.store.read_bytes(INDEX_NAME)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if must_exist:
                raise RegistryError(f"no registry at {self.url} (it has no index.json); create one with "
                                    f"`llmpack registry publish BUNDLE --to {self.url}`") from None
            return empty_index()
        return parse_index(raw, self.store.display(INDEX_NAME))

    def model(self, model_id: str, index: dict | None = None) -> dict:
        index = self.load_index() if index is None else index
        check_id(model_id)
        model = index["models"].get(model_id)
        if model is None:
            close = difflib.get_close_matches(model_id, list(index["models"]), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RegistryError(f"unknown model id {model_id!r} in registry {self.url}; {hint}"
                                f"`llmpack registry list -r {self.url}` shows the ids")
        return model

    def resolve(self, spec: str, index: dict | None = None) -> tuple[str, str, dict]:
        """`ID` or `ID@VERSION` -> (id, version, index entry); ID alone means its latest version."""
        index = self.load_index() if index is None else index
        model_id, version = parse_spec(spec)
        model = self.model(model_id, index)
        version = version or model["latest"]
        entry = model["versions"].get(version)
        if entry is None:
            have = ", ".join(v for v, _ in versions_newest_first(model))
            raise RegistryError(f"model {model_id} has no version {version!r} in registry {self.url}; "
                                f"it has: {have}")
        return model_id, version, entry

    def read_manifest(self, model_id: str, version: str, entry: dict) -> Manifest:
        """The stored manifest of a version, checked against the hash the index records."""
        rel = version_dir(model_id, version) + MANIFEST_NAME
        fix = "re-publish its bundle with --repair"
        size, listed = self.store.size(rel), entry.get("manifest_bytes")
        if size is None:
            raise RegistryError(f"{model_id}@{version} is damaged: {self.store.display(rel)} is missing "
                                f"(or is not a file); {fix}")
        if listed is not None and size != listed:  # never read a stored file far larger than the index says
            raise RegistryError(f"{model_id}@{version} is damaged: {self.store.display(rel)} has {size} bytes, "
                                f"the index says {listed}; {fix}")
        try:
            raw = self.store.read_bytes(rel)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise RegistryError(f"{model_id}@{version} is damaged: {self.store.display(rel)} is missing "
                                f"(or is not a file); {fix}") from None
        sha = hashlib.sha256(raw).hexdigest()
        if sha != entry["manifest_sha256"]:
            raise RegistryError(f"{model_id}@{version} is damaged: {self.store.display(rel)} has sha256 {sha[:16]}…, "
                                f"the index says {entry['manifest_sha256'][:16]}…; re-publish its bundle with --repair")
        return parse_manifest(raw, self.store.display(rel))

    # -- publish -------------------------------------------------------------------

    def publish(self, bundle_dir: Path | str, model_id: str | None = None, version: str | None = None, *,
                repair: bool = False, progress: bool = False) -> dict:
        """Publish a bundle folder as `model_id@version`; return a summary.

        Without `version`, the next free integer version ("1", "2", ...) is used, and a
        bundle whose manifest is already published under `model_id` is not published
        again. With `repair`, shards and files already in the registry are re-hashed and
        any corrupt one is replaced (otherwise only their presence and size are checked).
        """
        self.store.check_writable("publish")
        bundle = read_bundle(Path(bundle_dir))
        m = bundle.manifest
        if model_id is None:
            model_id = id_from_name(m.model.name)
            if model_id is None:
                raise RegistryError(f"{bundle.root / MANIFEST_NAME} suggests no usable model id "
                                    f"(model.name is {m.model.name!r}); pass --id ID")
        check_id(model_id)
        if version is not None:
            check_version(version)
        self._check_publish_target()

        existing = self._published_as(self.load_index(must_exist=False), model_id, version, m)
        if existing and not repair:
            return self._summary("unchanged", bundle, model_id, existing, 0, 0)

        total = sum(b.bytes for b in m.unique_shards) + sum(b.bytes for b in m.files)
        with byte_progress(progress, "checking bundle", total) as advance:
            check_hashes(bundle, [*m.unique_shards, *m.files], advance)
        try:
            return self._store_bundle(bundle, model_id, version, repair, progress)
        except OSError as e:  # a full disk or a read-only registry: the index is as it was
            name, root = str(e.filename or ""), self.store.root
            in_registry = self.store.is_local and bool(name) and (name.startswith(root) or root.startswith(name))
            failure = write_failure(e, self.url, total + len(m.raw), creating=in_registry, error=RegistryError)
            if failure:
                raise failure from None
            raise

    def _store_bundle(self, bundle: LocalBundle, model_id: str, version: str | None, repair: bool,
                      progress: bool) -> dict:
        """Steps 2 and 3 of the write protocol (module docstring): upload, then commit."""
        m = bundle.manifest
        uploaded, uploaded_bytes = self._upload_shards(bundle, deep=repair, progress=progress)

        with self.store.lock(f"publish {model_id}") as lease:
            index = self.load_index(must_exist=False)
            existing = self._published_as(index, model_id, version, m)
            # a `remove` may have collected shards this bundle shares since the upload above
            n, nbytes = self._upload_shards(bundle, deep=False, progress=False)
            uploaded, uploaded_bytes = uploaded + n, uploaded_bytes + nbytes
            if existing:
                n, nbytes = self._write_version(bundle, model_id, existing, fresh=False)
                status = "repaired" if uploaded or n else "unchanged"
                return self._summary(status, bundle, model_id, existing, uploaded + n, uploaded_bytes + nbytes)
            if version is None:
                version = _next_version(index["models"].get(model_id))
            self._write_version(bundle, model_id, version, fresh=True)
            new = copy.deepcopy(index)
            model = new["models"].setdefault(model_id, {"latest": version, "versions": {}})
            model["versions"][version] = {
                "path": version_dir(model_id, version),
                "manifest_sha256": m.sha256,
                "manifest_bytes": len(m.raw),
                **m.summary(),
                "published": utc_now(),
                "card": make_card(m, read_quality(bundle.root, m)),
            }
            model["latest"] = version
            self._commit(index, new, lease)
        return self._summary("published", bundle, model_id, version, uploaded, uploaded_bytes)

    def _summary(self, status: str, bundle: LocalBundle, model_id: str, version: str, uploaded: int,
                 uploaded_bytes: int) -> dict:
        m = bundle.manifest
        return {"status": status, "id": model_id, "version": version, "registry": self.url,
                "manifest_sha256": m.sha256, "shards": len(m.unique_shards), "files": len(m.files) + 1,
                "total_bytes": m.total_bytes, "uploaded_blobs": uploaded, "uploaded_bytes": uploaded_bytes,
                "unlisted_files": bundle.unlisted}

    def _check_publish_target(self) -> None:
        """Refuse to turn a folder that holds something else (a bundle, a home directory) into a registry."""
        if self.store.exists(INDEX_NAME):
            return
        names = {e["name"] for e in self.store.listdir("")}
        foreign = sorted(n for n in names if n not in REGISTRY_ENTRIES and not _is_temp_name(n))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
            raise RegistryError(f"{self.url} is not a registry (no index.json) and is not empty ({shown}); "
                                "publish to an empty or new folder, or to an existing registry")

    def _published_as(self, index: dict, model_id: str, version: str | None, m: Manifest) -> str | None:
        """The version under which this exact manifest is already published, if any.

        Raises if `version` is taken by different content: published versions are
        immutable, because clients and CDNs may have cached them.
        """
        model = index["models"].get(model_id)
        if model is None:
            return None
        if version is not None:
            entry = model["versions"].get(version)
            if entry is None:
                return None
            if entry["manifest_sha256"] == m.sha256:
                return version
            raise RegistryError(f"{model_id}@{version} is already published with other content; published "
                                f"versions never change: pick another --version, or first run "
                                f"`llmpack registry remove {model_id}@{version}`")
        for v, entry in versions_newest_first(model):
            if entry["manifest_sha256"] == m.sha256:
                return v
        return None

    def _needs_upload(self, rel: str, blob: Blob, deep: bool) -> bool:
        size = self.store.size(rel)
        if size != blob.bytes:
            return True
        return deep and self.store.hash_file(rel)[0] != blob.sha256

    def _upload_shards(self, bundle: LocalBundle, deep: bool, progress: bool) -> tuple[int, int]:
        """Upload the bundle's shards the registry lacks (or, with `deep`, holds corrupt)."""
        missing = [b for b in bundle.manifest.unique_shards if self._needs_upload(b.path, b, deep)]
        total = sum(b.bytes for b in missing)
        with byte_progress(progress, f"uploading {len(missing)} shards", total) as advance:
            for blob in missing:
                self._upload_file(bundle, blob, blob.path, advance)
        return len(missing), total

    def _upload_file(self, bundle: LocalBundle, blob: Blob, rel: str, advance=None) -> None:
        with open(bundle.root / blob.path, "rb") as src:
            try:
                self.store.upload(rel, src, blob.sha256, advance)
            except HashMismatch as e:
                raise RegistryError(f"{bundle.root / blob.path} changed while it was published (sha256 now "
                                    f"{e.sha256[:16]}…); the index was not changed, re-run the command") from None

    def _write_version(self, bundle: LocalBundle, model_id: str, version: str, fresh: bool) -> tuple[int, int]:
        """Write the version folder: listed files, then manifest.json. Called under the lock.

        `fresh`: the version is not in the index, so whatever its folder holds is left
        over from a killed publish and is replaced wholesale. Otherwise (repair) only
        files that are missing or differ are rewritten.
        """
        base = version_dir(model_id, version)
        if fresh:
            self.store.rm(base, recursive=True)
        m = bundle.manifest
        n = nbytes = 0
        for blob in m.files:
            if fresh or self._needs_upload(base + blob.path, blob, deep=True):
                self._upload_file(bundle, blob, base + blob.path)
                n, nbytes = n + 1, nbytes + blob.bytes
        manifest_blob = Blob(MANIFEST_NAME, len(m.raw), m.sha256)
        if fresh or self._needs_upload(base + MANIFEST_NAME, manifest_blob, deep=True):
            self.store.upload_bytes(base + MANIFEST_NAME, m.raw)
            n, nbytes = n + 1, nbytes + len(m.raw)
        return n, nbytes

    def _commit(self, old: dict, new: dict, lease: LeaseLock | None) -> None:
        """Replace index.json by `new` in one step (called under the lock)."""
        new["generation"] = int(old.get("generation") or 0) + 1
        new["updated"] = utc_now()
        if lease is not None:
            lease.check()
        self.store.write_atomic(INDEX_NAME, (json.dumps(new, indent=1) + "\n").encode())

    # -- pull ----------------------------------------------------------------------

    def pull(self, spec: str, out: Path | str, *, force: bool = False, progress: bool = False) -> dict:
        """Download `ID[@VERSION]` into the bundle folder `out`, checking every hash.

        The bundle is assembled in a temporary folder beside `out` and renamed into
        place only when complete and verified, so `out` never holds a partial bundle.
        """
        out = Path(out).expanduser().absolute()
        if out.exists() and not force:
            raise RegistryError(f"{out} already exists; pass --force to replace it, or choose another --out")
        if out.exists() and not out.is_dir():
            raise RegistryError(f"{out} exists and is not a folder; remove it or choose another --out")
        model_id, version, entry = self.resolve(spec)
        label = f"{model_id}@{version}"
        m = self.read_manifest(model_id, version, entry)
        base = version_dir(model_id, version)
        jobs = [(base + b.path, b) for b in m.files] + [(b.path, b) for b in m.unique_shards]

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        except OSError as e:
            raise write_failure(e, out.parent, m.total_bytes, creating=True, error=RegistryError) or e from None
        try:
            os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it private; a bundle is meant to be served
            total = sum(b.bytes for _, b in jobs)
            with byte_progress(progress, f"pulling {label}", total) as advance:
                for rel, blob in jobs:
                    self._download(rel, blob, tmp / blob.path, label, out, advance)
            (tmp / MANIFEST_NAME).write_bytes(m.raw)
            swap_into_place(tmp, out)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            failure = write_failure(e, out.parent, m.total_bytes, error=RegistryError) \
                if isinstance(e, OSError) else None
            if failure:
                raise failure from None
            raise
        return {"id": model_id, "version": version, "out": str(out), "manifest_sha256": m.sha256,
                "shards": len(m.unique_shards), "files": len(m.files) + 1, "total_bytes": m.total_bytes}

    def _download(self, rel: str, blob: Blob, dest: Path, label: str, out: Path, advance) -> None:
        """Copy one stored file to `dest`, reading at most one byte past its listed size
        (a stored file far larger than the manifest says is refused, not copied)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        n = 0
        fix = (f"nothing was written to {out}. Run `llmpack registry verify` and re-publish the bundle "
               "with --repair")
        try:
            with self.store.open_read(rel) as src, open(dest, "wb") as f:
                while n <= blob.bytes and (chunk := src.read(min(CHUNK, blob.bytes + 1 - n))):
                    h.update(chunk)
                    f.write(chunk)
                    n += len(chunk)
                    advance(len(chunk))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise RegistryError(f"cannot pull {label}: {self.store.display(rel)} is missing from the registry "
                                f"(or is not a file); {fix}") from None
        if n != blob.bytes:
            got = "more" if n > blob.bytes else f"only {n}"
            raise RegistryError(f"cannot pull {label}: {self.store.display(rel)} has the wrong size (expected "
                                f"{blob.bytes} bytes, got {got}); {fix}")
        if h.hexdigest() != blob.sha256:
            raise RegistryError(f"cannot pull {label}: {self.store.display(rel)} is corrupt (sha256 "
                                f"{h.hexdigest()[:16]}…, expected {blob.sha256[:16]}…); {fix}")

    # -- verify --------------------------------------------------------------------

    def verify(self, model_id: str | None = None, *, progress: bool = False) -> dict:
        """Check every version (of `model_id`, or all): manifest, files and shards present
        with the recorded hashes. Returns a report whose "problems" name each bad path."""
        index = self.load_index()
        if model_id is not None:
            self.model(model_id, index)
        problems: list[dict] = []
        shards: dict[str, tuple[Blob, list[str]]] = {}
        files: list[tuple[str, Blob, str]] = []
        versions = 0
        for mid, v, entry in iter_versions(index, model_id):
            versions += 1
            label = f"{mid}@{v}"
            rel = version_dir(mid, v) + MANIFEST_NAME
            try:
                m = self.read_manifest(mid, v, entry)
            except RegistryError as e:
                kind = "missing" if self.store.size(rel) is None else "corrupt"
                problems.append({"kind": kind, "path": rel, "used_by": [label], "detail": str(e)})
                continue
            for b in m.files:
                files.append((version_dir(mid, v) + b.path, b, label))
            for b in m.unique_shards:
                shards.setdefault(b.sha256, (b, []))[1].append(label)

        checks = [(rel, b, [label]) for rel, b, label in files] + \
                 [(b.path, b, users) for b, users in shards.values()]
        total = sum(b.bytes for _, b, _ in checks)
        checked_bytes = 0
        with byte_progress(progress, "verifying", total) as advance:
            for rel, blob, users in checks:
                size = self.store.size(rel)
                if size is not None and size != blob.bytes:  # wrong size: no need to hash (it may be huge)
                    advance(blob.bytes)
                    problems.append({"kind": "corrupt", "path": rel, "used_by": users,
                                     "detail": f"has {size} bytes; expected {blob.bytes} bytes"})
                    continue
                try:
                    sha, size = self.store.hash_file(rel, advance)
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    problems.append({"kind": "missing", "path": rel, "used_by": users,
                                     "detail": f"expected {blob.bytes} bytes, sha256 {blob.sha256[:16]}…"})
                    continue
                checked_bytes += size
                if size != blob.bytes or sha != blob.sha256:
                    problems.append({"kind": "corrupt", "path": rel, "used_by": users,
                                     "detail": f"has {size} bytes, sha256 {sha[:16]}…; "
                                               f"expected {blob.bytes} bytes, sha256 {blob.sha256[:16]}…"})
        return {"registry": self.url, "model": model_id, "versions": versions, "shards": len(shards),
                "files": len(files) + versions, "bytes_checked": checked_bytes, "ok": not problems,
                "problems": problems}

    # -- remove and garbage collection ----------------------------------------------

    def remove(self, spec: str) -> dict:
        """Remove one version (`ID@VERSION`), then collect what nothing references any more."""
        self.store.check_writable("remove")
        model_id, version = parse_spec(spec)
        if version is None:
            model = self.model(model_id)
            have = ", ".join(v for v, _ in versions_newest_first(model))
            raise RegistryError(f"name the version to remove: `llmpack registry remove {model_id}@VERSION` "
                                f"(versions of {model_id}: {have})")
        with self.store.lock(f"remove {spec}") as lease:
            index = self.load_index()
            model_id, version, entry = self.resolve(spec, index)
            new = copy.deepcopy(index)
            model = new["models"][model_id]
            del model["versions"][version]
            if not model["versions"]:
                del new["models"][model_id]
            elif model["latest"] == version:
                model["latest"] = max(model["versions"],
                                      key=lambda v: (model["versions"][v].get("published") or "",
                                                     list(model["versions"]).index(v)))
            self._commit(index, new, lease)
            gc = self._collect(new)
        return {"removed": f"{model_id}@{version}", "registry": self.url, **gc}

    def gc(self) -> dict:
        """Delete what the index does not reference: shards, version folders of removed
        versions or killed publishes, stale temporary files."""
        self.store.check_writable("gc")
        with self.store.lock("gc"):
            return self._collect(self.load_index())

    def _collect(self, index: dict) -> dict:
        """Garbage collection proper; the caller holds the lock, which is what makes deleting
        unreferenced version folders safe (publishers write them only under the lock)."""
        now = time.time()
        dirs: list[str] = []
        for entry in self.store.listdir("models"):
            mid = entry["name"]
            if entry["type"] != "directory" or not is_valid_id(mid):
                continue  # not something the registry writes: leave it alone
            model = index["models"].get(mid)
            if model is None:
                self.store.rm(f"models/{mid}", recursive=True)
                dirs.append(f"models/{mid}/")
                continue
            for ventry in self.store.listdir(f"models/{mid}"):
                v = ventry["name"]
                if ventry["type"] == "directory" and is_valid_version(v) and v not in model["versions"]:
                    self.store.rm(version_dir(mid, v), recursive=True)
                    dirs.append(version_dir(mid, v))
        for entry in self.store.listdir(""):
            if _is_temp_name(entry["name"]) and _older(entry, now):
                self.store.rm(entry["name"])

        result = {"dirs_removed": dirs, "shards_removed": 0, "bytes_freed": 0, "skipped": None}
        referenced: set[str] = set()
        unreadable = []
        for mid, v, entry in iter_versions(index):
            try:
                referenced.update(b.sha256 for b in self.read_manifest(mid, v, entry).unique_shards)
            except RegistryError:
                unreadable.append(f"{mid}@{v}")
        if unreadable:
            # without every manifest we cannot know which shards are still needed
            result["skipped"] = (f"shards were not collected: the manifest of {', '.join(unreadable)} cannot be "
                                 "read; run `llmpack registry verify` and repair it first")
            return result
        for entry in self.store.listdir("shards"):
            name = entry["name"]
            match = _SHARD_NAME.fullmatch(name)
            if (match and match.group(1) not in referenced) or (_is_temp_name(name) and _older(entry, now)):
                self.store.rm(f"shards/{name}")
                result["shards_removed"] += bool(match)
                result["bytes_freed"] += entry["size"]
        return result


def _next_version(model: dict | None) -> str:
    numbers = [int(v) for v in (model or {}).get("versions", {}) if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _older(entry: dict, now: float) -> bool:
    mtime = entry.get("mtime")
    return isinstance(mtime, (int, float)) and now - mtime > STALE_TEMP_S
