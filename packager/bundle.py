"""`llmpack package`: checkpoint -> tensors -> quantized records -> shards + manifest.

The bundle is built in a temporary directory beside the destination and renamed into
place only when complete, so a failure never leaves a half-written bundle and never
touches an existing one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import resource
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bundle_contract.atomic_dir import swap_into_place
from bundle_contract.errors import write_failure
from bundle_contract.manifest import BUNDLE_FORMAT, BUNDLE_VERSION
from quantization.formats import FORMATS, PART_ALIGN
from quantization.gptq import gptq_quantize
from quantization.policy import choose_format, get_scheme

from . import __version__
from .calibrate import Calibrator
from .checkpoint import Checkpoint, open_checkpoint, read_json, source_sha256
from .compile import DEFAULT_MAX_BINDING, DEFAULT_MAX_BUFFER, kernel_files
from .errors import PackError
from .models import ModelConfig, TensorSpec, count_parameters, definition, resolve_config
from .plan import DEFAULT_PREFILL_CHUNK, build_plan
from .shards import ShardWriter
from .wasm_build import build_wasm

DEFAULT_SHARD_SIZE = 32 << 20
# The oldest JS runtime (runtime_js/package.json "version") that runs the bundles this packager
# writes: the manifest's "runtime": {"min_version"}. Raise it with a change of the plan or the
# manifest that older runtimes would misread (tests/test_site.py checks it against runtime_js).
RUNTIME_MIN_VERSION = "0.1.0"
QUANTIZERS = ("auto", "gptq", "search", "rtn")

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str, minimum: int = 4096, what: str = "size") -> int:
    """'32MiB' -> 33554432, rounded down to a multiple of PART_ALIGN."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise PackError(f"cannot read {what} {text!r}; write e.g. 32MiB, 8MB or 1048576")
    size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    size -= size % PART_ALIGN
    if size < minimum:
        raise PackError(f"{what} {text!r} is too small; use at least {minimum} bytes")
    return size


def package_model(src: Path, out: Path, *, quant: str = "q4f16", shard_size: int = DEFAULT_SHARD_SIZE,
                  context_window: int | None = None, force: bool = False, progress: bool = False,
                  quantizer: str = "auto", max_binding_size: int = DEFAULT_MAX_BINDING,
                  max_buffer_size: int = DEFAULT_MAX_BUFFER, prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
                  verify_chunk: int | None = None) -> dict:
    """Package `src` into a bundle at `out`; return a summary dict.

    quantizer: "auto" (GPTQ for schemes below 4 bits, else "search"), "gptq"
    (calibrated, error-compensating), "search" (error-minimizing scales per group) or
    "rtn" (plain round-to-nearest, the baseline quality reports compare against).
    verify_chunk: most tokens of the plan's "verify" entry (None: the default; 0: none)."""
    t0 = time.perf_counter()
    scheme = get_scheme(quant)
    if quantizer not in QUANTIZERS:
        raise PackError(f"unknown --quantizer {quantizer!r}; choose one of: {', '.join(QUANTIZERS)}")
    if quantizer == "auto":
        quantizer = "gptq" if FORMATS[scheme.matrix].bits <= 3 else "search"
    out = Path(out)
    _check_destination(out, force)
    ck = open_checkpoint(Path(src))
    try:
        config = resolve_config(ck.config, context_window)
        plan = _tensor_plan(ck, config)
        ck.set_offsets(plan)
        # read now, so that a malformed tokenizer or generation config stops before any writing
        tokenizer, generation = _tokenizer_info(ck), _generation(ck)
        needed = _estimate_bytes(plan, scheme)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        except OSError as e:  # under /proc or /sys, below a file, read-only, full
            raise write_failure(e, out.parent, needed, creating=True, error=PackError) or e from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is meant to be served
        try:
            tensors, shards = _write_shards(ck, config, plan, scheme, tmp, shard_size, progress, quantizer)
            files = _copy_tokenizer(ck, tmp)
            manifest = _manifest(ck, config, scheme, quantizer, tensors, shards, files, tokenizer, generation)
            _add_compiled(tmp, manifest, config, {"max_binding_size": max_binding_size,
                                                  "max_buffer_size": max_buffer_size, "prefill_chunk": prefill_chunk,
                                                  "verify_chunk": verify_chunk})
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            swap_into_place(tmp, out)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            # a failed write into the bundle (not a read of the source) is the disk's doing
            if isinstance(e, OSError) and (e.filename is None or str(e.filename).startswith(str(out.parent))):
                failure = write_failure(e, out.parent, needed, error=PackError)
                if failure:
                    raise failure from None
            raise
    finally:
        ck.close()
    return {
        "out": str(out), "source": ck.name, "architecture": config.hf_architecture, "quant": scheme.name,
        "parameters": manifest["model"]["parameters"], "tensors": len(tensors), "shards": len(shards),
        "weights_bytes": manifest["memory"]["weights_bytes"],
        "bits_per_weight": manifest["quantization"]["bits_per_weight"],
        "memory_estimate_bytes": manifest["memory"]["estimate_bytes"],
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _check_destination(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not force:
        raise PackError(f"{out} already exists; pass --force to replace it")
    if not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").exists()):
        raise PackError(f"{out} exists and is not a bundle; refusing to replace it even with --force")


def _estimate_bytes(plan: list[TensorSpec], scheme) -> int:
    """About the size of a bundle's shards (kernels and tokenizer files are small beside them)."""
    return int(sum(math.prod(t.shape) * choose_format(scheme, t.shape, t.role).bits_per_weight() / 8 for t in plan))


def _tensor_plan(ck: Checkpoint, config: ModelConfig) -> list[TensorSpec]:
    """Check every tensor of the architecture's table exists with the right shape before
    writing anything."""
    plan = definition(config.architecture).tensors(config)
    for t in plan:
        if t.name not in ck.shapes:
            raise PackError(f"tensor {t.name} is missing from {ck.name}; the checkpoint is incomplete")
        if tuple(ck.shapes[t.name]) != t.shape:
            raise PackError(f"tensor {t.name} has shape {list(ck.shapes[t.name])}, expected {list(t.shape)} "
                            "from config.json; the config does not match the weights")
    return plan


def _write_shards(ck: Checkpoint, config: ModelConfig, plan: list[TensorSpec], scheme, root: Path, shard_size: int,
                  progress: bool, quantizer: str):
    writer = ShardWriter(root, shard_size)
    try:
        return _quantize_into(writer, ck, config, plan, scheme, progress, quantizer)
    except BaseException:
        writer.abandon()
        raise


def _quantize_into(writer: ShardWriter, ck: Checkpoint, config: ModelConfig, plan: list[TensorSpec], scheme,
                   progress: bool, quantizer: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    calibrator = Calibrator(ck, config) if quantizer == "gptq" else None
    records = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[current]}")]
    label = f"quantizing to {scheme.name}" + (" (GPTQ)" if calibrator else "")
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(label, total=len(plan), current="")
        for t in plan:
            name, shape, role = t.name, t.shape, t.role
            bar.update(task, current=name)
            w = ck.stored(name)
            if not np.isfinite(w).all():
                bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
                raise PackError(f"tensor {name} has {bad} non-finite values (NaN/inf); the checkpoint is corrupt")
            fmt = choose_format(scheme, shape, role)
            shape2d = shape if len(shape) == 2 else (1, shape[0])
            calibrated = calibrator and fmt.quantized and role in ("matrix", "sensitive")
            hessian = calibrator.hessian(name) if calibrated else None
            if hessian is not None:
                parts = gptq_quantize(w, hessian, fmt)
            else:
                parts = fmt.encode(w.reshape(shape2d), "rtn" if quantizer == "rtn" else "search")
            if calibrator and calibrator.wants(name):
                calibrator.record(name, fmt.decode(parts, shape2d).reshape(shape))
            del w
            layout, pieces = fmt.lay_out(parts)
            shard, offset = writer.append(pieces)
            specs = {p.name: p for p in fmt.parts(shape2d)}
            records.append({
                "name": name, "shape": list(shape), "format": fmt.name,
                "shard": shard, "offset": offset, "bytes": sum(p.nbytes for p in pieces),
                "parts": [{"name": p, "dtype": specs[p].dtype, "shape": list(specs[p].shape),
                           "offset": o, "bytes": n} for p, o, n in layout],
            })
            bar.advance(task)
        bar.update(task, current="")
    return records, writer.close()


def _file_entry(root: Path, rel: str) -> dict:
    data = (root / rel).read_bytes()
    return {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _copy_tokenizer(ck: Checkpoint, root: Path) -> list[dict]:
    entries = []
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (ck.tokenizer_dir / name).exists():
            shutil.copyfile(ck.tokenizer_dir / name, root / name)
            entries.append(_file_entry(root, name))
    return entries


def _tokenizer_info(ck: Checkpoint) -> dict:
    path = ck.tokenizer_dir / "tokenizer_config.json"
    tc = read_json(path, "") if path.exists() else {}
    template = _chat_template(tc.get("chat_template"), path.name)
    for fname in ("chat_template.jinja",):
        if template is None and (ck.tokenizer_dir / fname).exists():
            template = (ck.tokenizer_dir / fname).read_text()
    if template is None and (ck.tokenizer_dir / "chat_template.json").exists():
        template = _chat_template(read_json(ck.tokenizer_dir / "chat_template.json", "").get("chat_template"),
                                  "chat_template.json")

    def token(key):
        v = tc.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        if v is not None and not isinstance(v, str):
            raise PackError(f"{path.name}: {key} must be a string or an object with \"content\", not "
                            f"{json.dumps(v)[:40]}; fix the file")
        return v

    return {"file": "tokenizer.json", "config_file": "tokenizer_config.json" if path.exists() else None,
            "chat_template": template, "bos_token": token("bos_token"), "eos_token": token("eos_token"),
            "add_bos_token": bool(tc.get("add_bos_token", False))}


def _chat_template(value, file: str) -> str | None:
    """A chat_template field: a string, or named templates [{"name", "template"}] of which
    the one named "default" is taken; None when absent."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) for t in value):
        chosen = next((t for t in value if t.get("name") == "default"), None)
        if chosen is None:
            return None
        if isinstance(chosen.get("template"), str):
            return chosen["template"]
    raise PackError(f"{file}: chat_template must be a string or a list of {{\"name\", \"template\"}} objects "
                    "whose \"template\" is a string; fix the file")


def _generation(ck: Checkpoint) -> dict:
    """Generation defaults from generation_config.json (token ids also from config.json),
    else our own; a value of the wrong kind is refused, naming the file and key."""
    g, c = ck.generation, ck.config

    def value(key, default, check, words, config_too=False):
        source, where = (c, "config.json") if config_too and key not in g else (g, "generation_config.json")
        v = source.get(key)
        if v is None:
            return default
        if not check(v):
            raise PackError(f"{where}: {key} must be {words}, not {json.dumps(v)[:40]}; fix or delete the key")
        return v

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    def token_id(v):
        return type(v) is int and v >= 0

    eos = value("eos_token_id", None, lambda v: token_id(v) or (isinstance(v, list) and all(map(token_id, v))),
                "a token id or a list of token ids", config_too=True)
    sample = value("do_sample", True, lambda v: isinstance(v, bool), "true or false")
    return {
        "eos_token_ids": [eos] if isinstance(eos, int) else list(eos or []),
        "bos_token_id": value("bos_token_id", None, token_id, "a token id", config_too=True),
        "temperature": float(value("temperature", 0.7, number, "a number >= 0")) if sample else 0.0,
        "top_p": float(value("top_p", 0.9, number, "a number >= 0")),
        "top_k": value("top_k", 0, token_id, "a whole number >= 0"),
        "repetition_penalty": float(value("repetition_penalty", 1.0, number, "a number >= 0")),
        "max_new_tokens": int(value("max_new_tokens", 256, token_id, "a whole number >= 0") or 256),
    }


def _memory(config: ModelConfig, plan: dict) -> dict:
    """From the plan's buffer sizes (f32 variant: the larger one). Per token of context: the
    full KV caches only (a sliding-window layer's ring buffer does not grow with it)."""
    plan_memory = plan["variants"]["f32"]["memory"]
    full = config.context_window * config.kv_size
    kv_per_token = sum(4 * config.kv_size for b in plan["buffers"].values()
                       if b["kind"] == "kv_cache" and b["elements"] == full)
    return {"weights_bytes": plan_memory["weights_bytes"], "kv_cache_bytes_per_token": kv_per_token,
            "context_window": config.context_window, "kv_cache_bytes": plan_memory["kv_cache_bytes"],
            "activation_bytes": plan_memory["activation_bytes"], "estimate_bytes": sum(plan_memory.values())}


def _add_compiled(tmp: Path, manifest: dict, config: ModelConfig, limits: dict) -> None:
    """Plan, WGSL kernels (validated by naga) and the Wasm module into the bundle;
    requirements and memory into the manifest. The plan is built once: the Wasm build
    reads the kernel constants it carries."""
    plan, kernels = build_plan(manifest, config=config, **limits)
    files = kernel_files(plan, kernels)
    files.update(build_wasm(manifest, plan))
    for rel, data in sorted(files.items()):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
        manifest["files"].append(_file_entry(tmp, rel))
    manifest["requirements"] = plan["requirements"]
    manifest["memory"] = _memory(config, plan)


def _manifest(ck, config: ModelConfig, scheme, quantizer, tensors, shards, files, tokenizer: dict,
              generation: dict) -> dict:
    elements = sum(int(np.prod(t["shape"])) for t in tensors)
    payload = sum(p["bytes"] for t in tensors for p in t["parts"])
    name = re.sub(r"(\.(gguf|safetensors))$", "", ck.name)
    name = re.sub(r"\.(q\d\w*|f16|f32|bf16)$", "", name, flags=re.I)
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "generator": f"llmpack {__version__}",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {
            "name": re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-") or "model",
            "architecture": config.architecture,
            "hf_architecture": config.hf_architecture,
            "source": {"kind": ck.kind, "name": ck.name, "sha256": source_sha256(ck)},
            "license": ck.license,
            "parameters": count_parameters(config),
            "config": config.to_json(),
            "hf_config": ck.config,
        },
        "quantization": {"scheme": scheme.name, "compute": scheme.compute, "quantizer": quantizer,
                         "bits_per_weight": round(8 * payload / elements, 3)},
        "tokenizer": tokenizer,
        "generation": generation,
        "tensors": tensors,
        "shards": shards,
        "files": files,
        "runtime": {"min_version": RUNTIME_MIN_VERSION},
    }
