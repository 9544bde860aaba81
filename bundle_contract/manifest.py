"""manifest.json (docs/bundle.md): the format's identity, its typed reading, and checking
a bundle folder against it.

Every reader of a manifest goes through `parse` (a decoded JSON object), `parse_json`
(the file's bytes) or `load` (a bundle folder). They check every field a reader relies
on, its type and shape, and the byte ranges of tensors and parts, and raise one
ManifestError naming the first bad field; unknown fields are allowed (a newer minor
writer may add some) and kept in `Manifest.data`, the JSON object as read.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import UserError

BUNDLE_FORMAT = "llmpack-bundle"
BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 64 << 20  # a 70B model's manifest is well under 1 MiB; larger is not a manifest
REPACKAGE = "re-create the bundle with `llmpack package`"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._+-]+")


class ManifestError(UserError):
    """A manifest that is unreadable, of another format or version, or malformed."""


class BundleError(UserError):
    """A bundle folder whose files do not match its manifest (missing, wrong size or hash)."""


@dataclass(frozen=True)
class Blob:
    """A file of the bundle pinned by its size and sha256: a shard (`shards/<sha256>.bin`)
    or a file of the manifest's "files" list, at `path` inside the bundle."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Source:
    kind: str  # "gguf" | "safetensors"
    name: str
    sha256: str | None = None  # of the checkpoint (docs/bundle.md, "model.source"); older bundles lack it


def parse_version(text: str) -> tuple[int, int, int] | None:
    """"MAJOR.MINOR.PATCH" (the runtime's version numbers) as a tuple; None if it is not one."""
    m = _VERSION.fullmatch(text) if isinstance(text, str) else None
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))


@dataclass(frozen=True)
class Model:
    name: str
    architecture: str  # the plan family
    hf_architecture: str | None
    source: Source | None
    license: str | None
    parameters: int | None
    config: dict  # normalized; the architecture's plan builder reads it
    hf_config: dict


@dataclass(frozen=True)
class Quantization:
    scheme: str
    compute: str  # "f16" | "f32"
    bits_per_weight: float | None
    quantizer: str | None


@dataclass(frozen=True)
class Tokenizer:
    file: str
    config_file: str | None
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    add_bos_token: bool


@dataclass(frozen=True)
class Generation:
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_new_tokens: int


@dataclass(frozen=True)
class Part:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # relative to the tensor's offset
    bytes: int


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    format: str
    shard: int  # index into Manifest.shards where the tensor starts
    offset: int
    bytes: int
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Memory:
    weights_bytes: int
    kv_cache_bytes_per_token: int
    context_window: int
    estimate_bytes: int


@dataclass(frozen=True)
class Requirements:
    features: tuple[str, ...]
    optional_features: tuple[str, ...]
    limits: dict[str, int]  # WebGPU limit name -> the least value the plan needs


@dataclass(frozen=True)
class Manifest:
    version: int
    generator: str | None
    created: str | None
    model: Model
    quantization: Quantization
    tokenizer: Tokenizer
    generation: Generation
    tensors: tuple[Tensor, ...]
    shards: tuple[Blob, ...]  # in manifest order (a shard may repeat: same content)
    files: tuple[Blob, ...]
    memory: Memory
    requirements: Requirements | None
    runtime_min_version: str | None  # "runtime": {"min_version"}: the oldest JS runtime that loads it
    data: dict = field(repr=False, compare=False)  # the JSON object as read
    raw: bytes | None = field(default=None, repr=False, compare=False)  # the file's bytes (None: parsed from a dict)

    @property
    def unique_shards(self) -> tuple[Blob, ...]:
        """The shards once each (by hash), in manifest order: what is stored."""
        return tuple(dict.fromkeys(self.shards))  # equal hashes have equal sizes (parse checks)

    @property
    def sha256(self) -> str | None:
        return None if self.raw is None else hashlib.sha256(self.raw).hexdigest()

    @property
    def total_bytes(self) -> int:
        """The download size: manifest.json (when read from bytes), listed files, unique shards."""
        return len(self.raw or b"") + sum(b.bytes for b in self.unique_shards) + sum(b.bytes for b in self.files)

    def summary(self) -> dict:
        """The model facts every listing shows: `llmpack serve`'s /api/models, the demo and
        the registry index (whose field names these are, docs/registry.md)."""
        m, q, mem, req = self.model, self.quantization, self.memory, self.requirements
        return {
            "bundle_version": self.version,
            "name": m.name,
            "architecture": m.architecture,
            "hf_architecture": m.hf_architecture,
            "parameters": m.parameters,
            "license": m.license,
            "source": None if m.source is None else {"kind": m.source.kind, "name": m.source.name,
                                                     **({"sha256": m.source.sha256} if m.source.sha256 else {})},
            "quantization": {"scheme": q.scheme, "compute": q.compute, "bits_per_weight": q.bits_per_weight},
            "total_bytes": self.total_bytes,
            "weights_bytes": mem.weights_bytes,
            "memory_estimate_bytes": mem.estimate_bytes,
            "context_window": mem.context_window,
            "requirements": None if req is None else {
                "features": list(req.features), "optional_features": list(req.optional_features),
                "limits": dict(req.limits)},
            "shard_count": len(self.unique_shards),
            "created": self.created,
            "generator": self.generator,
        }


# ----------------------------------------------------------------------------- reading


def shard_path(sha256: str) -> str:
    return f"{SHARD_DIR}/{sha256}.bin"


def is_safe_relpath(path: object) -> bool:
    """A plain relative POSIX path with conservative segments (letters, digits, `. _ + -`):
    no '..', not absolute, no '\\'. Such a path is a safe storage key and URL everywhere."""
    if not isinstance(path, str) or not path or len(path) > 400:
        return False
    return all(_PATH_SEGMENT.fullmatch(p) and p not in (".", "..") for p in path.split("/"))


def load(bundle_dir: Path | str) -> Manifest:
    """The manifest of the bundle folder `bundle_dir`; ManifestError when it has none or
    it is not one this llmpack reads."""
    path = Path(bundle_dir) / MANIFEST_NAME
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a bundle manifest; "
                                f"{REPACKAGE}")
    except FileNotFoundError:
        raise ManifestError(f"{bundle_dir} is not a bundle: it has no {MANIFEST_NAME} "
                            f"(create one with `llmpack package SRC --out {bundle_dir}`)") from None
    except OSError as e:
        raise ManifestError(f"cannot read {path} ({e.strerror or e})") from None
    return parse_json(raw, str(path))


def decode_json(raw: bytes, where: str, what: str, remedy: str, error: type[UserError]) -> Any:
    """json.loads for a file of the format: nesting too deep for Python's parser, bytes
    that are not UTF-8 JSON and numbers too long to read are one `error` naming `where`."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise error(f"{where} is nested too deeply to be {what}; {remedy}") from None
    except ValueError as e:  # not UTF-8, not JSON, or a number too long to read
        raise error(f"{where} is not valid JSON ({e}); {remedy}") from None


def parse_json(raw: bytes, where: str = MANIFEST_NAME) -> Manifest:
    """Decode and parse manifest.json's bytes; `where` names the file in error messages."""
    return parse(decode_json(raw, where, "a bundle manifest", REPACKAGE, ManifestError), where, raw=raw)


def parse(data: Any, where: str = MANIFEST_NAME, *, raw: bytes | None = None) -> Manifest:
    """Check a decoded manifest and return it typed; ManifestError naming the first bad field."""
    c = _Checker(where)
    if not isinstance(data, dict):
        raise ManifestError(f"{where} is not an llmpack bundle manifest (not a JSON object)")
    if data.get("format") != BUNDLE_FORMAT:
        raise ManifestError(f"{where} is not an llmpack bundle manifest "
                            f"(\"format\" is {_shown(data.get('format'))}, not \"{BUNDLE_FORMAT}\")")
    if type(data.get("version")) is not int or data["version"] != BUNDLE_VERSION:
        raise ManifestError(f"{where} has bundle format version {_shown(data.get('version'))}; this llmpack "
                            f"reads version {BUNDLE_VERSION}: upgrade llmpack or re-package the model")
    shards = tuple(_shard(c, s, f"shards[{i}]") for i, s in enumerate(c.get(data, "shards", list)))
    sizes: dict[str, int] = {}
    for i, s in enumerate(shards):
        if sizes.setdefault(s.sha256, s.bytes) != s.bytes:
            raise c.error(f"shards[{i}]", f"lists shard {s.sha256} again with another size")
    files = tuple(_file(c, f, f"files[{i}]") for i, f in enumerate(c.get(data, "files", list, default=[])))
    seen: set[str] = set()
    for i, f in enumerate(files):
        if f.path in seen:
            raise c.error(f"files[{i}].path", f"lists {f.path!r} twice")
        seen.add(f.path)
    requirements = c.get(data, "requirements", dict, optional=True)
    runtime = c.get(data, "runtime", dict, optional=True)
    return Manifest(
        version=BUNDLE_VERSION,
        generator=c.get(data, "generator", str, optional=True),
        created=c.get(data, "created", str, optional=True),
        model=_model(c, c.get(data, "model", dict)),
        quantization=_quantization(c, c.get(data, "quantization", dict)),
        tokenizer=_tokenizer(c, c.get(data, "tokenizer", dict)),
        generation=_generation(c, c.get(data, "generation", dict)),
        tensors=tuple(_tensor(c, t, f"tensors[{i}]", shards) for i, t in enumerate(c.get(data, "tensors", list))),
        shards=shards,
        files=files,
        memory=_memory(c, c.get(data, "memory", dict)),
        requirements=None if requirements is None else _requirements(c, requirements),
        runtime_min_version=None if runtime is None else _runtime(c, runtime),
        data=data,
        raw=raw,
    )


# Expected kinds of value: a check and the words an error message uses for it.
_Kind = tuple[Callable[[Any], bool], str]
_COUNT: _Kind = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0")
_NUMBER: _Kind = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a number")
_SHA: _Kind = (lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None, "a lowercase hex sha256")
_COMPUTE: _Kind = (lambda v: v in ("f16", "f32"), '"f16" or "f32"')
_TYPES: dict[type, _Kind] = {
    dict: (lambda v: isinstance(v, dict), "an object"),
    list: (lambda v: isinstance(v, list), "a list"),
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
}
_MISSING = object()


class _Checker:
    """Reads fields of `where`, naming the field's path in every error."""

    def __init__(self, where: str):
        self.where = where

    def error(self, path: str, problem: str) -> ManifestError:
        return ManifestError(f"{self.where}: \"{path}\" {problem}; {REPACKAGE}")

    def get(self, obj: dict, key: str, kind: type | _Kind, path: str = "", *, optional: bool = False,
            default: Any = _MISSING) -> Any:
        """obj[key] checked against `kind`; `optional`: null or absent gives None; `default`:
        absent gives it."""
        full = f"{path}.{key}" if path else key
        value = obj.get(key, _MISSING)
        if value is _MISSING and default is not _MISSING:
            return default
        if optional and (value is None or value is _MISSING):
            return None
        if value is _MISSING:
            raise self.error(full, "is missing")
        return self.check(value, kind, full)

    def check(self, value: Any, kind: type | _Kind, path: str) -> Any:
        test, words = _TYPES[kind] if isinstance(kind, type) else kind
        if not test(value):
            raise self.error(path, f"must be {words}, not {_shown(value)}")
        return value

    def items(self, obj: dict, key: str, kind: type | _Kind, path: str, *, default: Any = _MISSING) -> tuple:
        """A list field whose every item is of `kind`."""
        values = self.get(obj, key, list, path, default=default)
        return tuple(self.check(v, kind, f"{path}.{key}[{i}]") for i, v in enumerate(values))


def _shown(value: Any) -> str:
    """A short description of a JSON value for an error message (never a deep repr)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "a very large number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= 40 else "a long string"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _shard(c: _Checker, entry: Any, path: str) -> Blob:
    entry = c.check(entry, dict, path)
    sha = c.get(entry, "sha256", _SHA, path)
    size = c.get(entry, "bytes", _COUNT, path)
    if entry.get("file") != shard_path(sha):
        raise c.error(f"{path}.file", f"is {_shown(entry.get('file'))}, but a shard is named by its hash "
                                      f"(\"{shard_path(sha)}\")")
    return Blob(shard_path(sha), size, sha)


def _file(c: _Checker, entry: Any, path: str) -> Blob:
    entry = c.check(entry, dict, path)
    rel = entry.get("path")
    if not is_safe_relpath(rel):
        raise c.error(f"{path}.path", f"is {_shown(rel)}; file paths must be relative, without '..', "
                                      "made of letters, digits and . _ + -")
    if rel == MANIFEST_NAME or rel.split("/")[0] == SHARD_DIR:
        raise c.error(f"{path}.path", f"({rel!r}) collides with the manifest or the shards folder")
    return Blob(rel, c.get(entry, "bytes", _COUNT, path), c.get(entry, "sha256", _SHA, path))


def _model(c: _Checker, m: dict) -> Model:
    p = "model"
    source = c.get(m, "source", dict, p, optional=True)
    return Model(
        name=c.get(m, "name", str, p),
        architecture=c.get(m, "architecture", str, p),
        hf_architecture=c.get(m, "hf_architecture", str, p, optional=True),
        source=None if source is None else Source(c.get(source, "kind", str, f"{p}.source"),
                                                  c.get(source, "name", str, f"{p}.source"),
                                                  c.get(source, "sha256", _SHA, f"{p}.source", optional=True)),
        license=c.get(m, "license", str, p, optional=True),
        parameters=c.get(m, "parameters", _COUNT, p, optional=True),
        config=c.get(m, "config", dict, p),
        hf_config=c.get(m, "hf_config", dict, p, default={}),
    )


def _quantization(c: _Checker, q: dict) -> Quantization:
    p = "quantization"
    return Quantization(
        scheme=c.get(q, "scheme", str, p),
        compute=c.get(q, "compute", _COMPUTE, p),
        bits_per_weight=c.get(q, "bits_per_weight", _NUMBER, p, optional=True),
        quantizer=c.get(q, "quantizer", str, p, optional=True),
    )


def _tokenizer(c: _Checker, t: dict) -> Tokenizer:
    p = "tokenizer"
    return Tokenizer(
        file=c.get(t, "file", str, p),
        config_file=c.get(t, "config_file", str, p, optional=True),
        chat_template=c.get(t, "chat_template", str, p, optional=True),
        bos_token=c.get(t, "bos_token", str, p, optional=True),
        eos_token=c.get(t, "eos_token", str, p, optional=True),
        add_bos_token=c.get(t, "add_bos_token", bool, p, default=False),
    )


def _generation(c: _Checker, g: dict) -> Generation:
    p = "generation"
    return Generation(
        eos_token_ids=c.items(g, "eos_token_ids", _COUNT, p),
        bos_token_id=c.get(g, "bos_token_id", _COUNT, p, optional=True),
        temperature=c.get(g, "temperature", _NUMBER, p),
        top_p=c.get(g, "top_p", _NUMBER, p),
        top_k=c.get(g, "top_k", _COUNT, p),
        repetition_penalty=c.get(g, "repetition_penalty", _NUMBER, p),
        max_new_tokens=c.get(g, "max_new_tokens", _COUNT, p),
    )


def _tensor(c: _Checker, entry: Any, path: str, shards: tuple[Blob, ...]) -> Tensor:
    t = c.check(entry, dict, path)
    tensor = Tensor(
        name=c.get(t, "name", str, path),
        shape=c.items(t, "shape", _COUNT, path),
        format=c.get(t, "format", str, path),
        shard=c.get(t, "shard", _COUNT, path),
        offset=c.get(t, "offset", _COUNT, path),
        bytes=c.get(t, "bytes", _COUNT, path),
        parts=tuple(_part(c, p, f"{path}.parts[{i}]") for i, p in enumerate(c.get(t, "parts", list, path))),
    )
    if tensor.shard >= len(shards):
        raise c.error(f"{path}.shard", f"is {tensor.shard}, but there are {len(shards)} shards")
    # a tensor that overflows its shard continues at offset 0 of the following ones (docs/bundle.md)
    room = shards[tensor.shard].bytes - tensor.offset
    for s in shards[tensor.shard + 1:]:
        if room >= tensor.bytes:
            break
        if tensor.offset != 0:
            raise c.error(f"{path}.offset", "is not 0, but the tensor spans shards")
        room += s.bytes
    if room < tensor.bytes:
        raise c.error(path, f"({tensor.bytes} bytes at offset {tensor.offset}) runs past the last shard")
    for i, part in enumerate(tensor.parts):
        if part.offset + part.bytes > tensor.bytes:
            raise c.error(f"{path}.parts[{i}]", "lies outside the tensor")
    return tensor


def _part(c: _Checker, entry: Any, path: str) -> Part:
    p = c.check(entry, dict, path)
    return Part(name=c.get(p, "name", str, path), dtype=c.get(p, "dtype", str, path),
                shape=c.items(p, "shape", _COUNT, path), offset=c.get(p, "offset", _COUNT, path),
                bytes=c.get(p, "bytes", _COUNT, path))


def _memory(c: _Checker, m: dict) -> Memory:
    p = "memory"
    return Memory(weights_bytes=c.get(m, "weights_bytes", _COUNT, p),
                  kv_cache_bytes_per_token=c.get(m, "kv_cache_bytes_per_token", _COUNT, p),
                  context_window=c.get(m, "context_window", _COUNT, p),
                  estimate_bytes=c.get(m, "estimate_bytes", _COUNT, p))


def _runtime(c: _Checker, r: dict) -> str:
    version = c.get(r, "min_version", str, "runtime")
    if parse_version(version) is None:
        raise c.error("runtime.min_version", f"must be a version MAJOR.MINOR.PATCH, not {_shown(version)}")
    return version


def _requirements(c: _Checker, r: dict) -> Requirements:
    p = "requirements"
    limits = c.get(r, "limits", dict, p, default={})
    for name, value in limits.items():
        c.check(value, _COUNT, f"{p}.limits.{name}")
    return Requirements(features=c.items(r, "features", str, p, default=[]),
                        optional_features=c.items(r, "optional_features", str, p, default=[]),
                        limits=dict(limits))


# ------------------------------------------------------------------------- the folder


def hash_stream(read: Callable[[int], bytes], on_bytes: Callable[[int], None] | None = None,
                limit: int | None = None) -> tuple[str, int]:
    """sha256 and length of everything `read` yields, in CHUNK pieces; with `limit`, of at
    most its first `limit` bytes."""
    h = hashlib.sha256()
    n = 0
    while (limit is None or n < limit) and (chunk := read(CHUNK if limit is None else min(CHUNK, limit - n))):
        h.update(chunk)
        n += len(chunk)
        if on_bytes:
            on_bytes(len(chunk))
    return h.hexdigest(), n


def verify_blobs(bundle_dir: Path | str, blobs: Iterable[Blob], on_bytes: Callable[[int], None] | None = None) -> None:
    """Hash each blob's file in the bundle folder; BundleError on the first one missing,
    of the wrong size or content."""
    root = Path(bundle_dir)
    for blob in blobs:
        try:
            with open(root / blob.path, "rb") as f:  # one byte past the listed size tells "too large"
                sha, size = hash_stream(f.read, on_bytes, limit=blob.bytes + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BundleError(f"bundle {root} is incomplete: {blob.path} is listed in {MANIFEST_NAME} "
                              f"but missing; {REPACKAGE}") from None
        if size != blob.bytes or sha != blob.sha256:
            what = f"is larger than the {blob.bytes} bytes the manifest says" if size > blob.bytes else \
                f"has {size} bytes, the manifest says {blob.bytes}" if size != blob.bytes else \
                f"has sha256 {sha[:16]}…, the manifest says {blob.sha256[:16]}…"
            raise BundleError(f"bundle {root} is corrupt: {blob.path} {what}; {REPACKAGE}")


def verify_shards(bundle_dir: Path | str, manifest: Manifest) -> None:
    """Every shard present with its size and sha256 (BundleError otherwise)."""
    verify_blobs(bundle_dir, manifest.unique_shards)


def missing_blobs(bundle_dir: Path | str, manifest: Manifest) -> list[str]:
    """Shards and files that are absent or of the wrong size (a cheap check: no hashing)."""
    root = Path(bundle_dir)
    out = []
    for blob in (*manifest.unique_shards, *manifest.files):
        try:
            if (root / blob.path).stat().st_size != blob.bytes:
                out.append(blob.path)
        except OSError:
            out.append(blob.path)
    return out
