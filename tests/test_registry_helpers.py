"""Helpers for the registry tests: fabricated bundles (docs/bundle.md) and registry URLs.

`make_bundle` writes a small but valid bundle: real shard files named by their sha256,
a manifest whose tensors, shards and files lists agree with them, and tokenizer files.
The registry only reads the manifest's lists and summary fields, so random bytes serve
as weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# what a packaged bundle's "requirements" looks like (the plan writes it)
REQUIREMENTS = {"features": [], "optional_features": ["shader-f16"], "limits": {"maxStorageBufferBindingSize": 1 << 27}}


def shard_bytes(seed: int, size: int = 3000) -> bytes:
    """Deterministic pseudo-random bytes: the same seed gives the same shard."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def make_bundle(path: Path, name: str = "tiny-model", shard_seeds=(1, 2), *, extra_files=None,
                requirements=None, license="apache-2.0") -> Path:
    """Write a bundle at `path` whose shards hold shard_bytes(seed) for each seed."""
    (path / "shards").mkdir(parents=True)
    shards, tensors = [], []
    for i, seed in enumerate(shard_seeds):
        data = shard_bytes(seed, 2816 + 256 * (seed % 4))
        sha = hashlib.sha256(data).hexdigest()
        (path / "shards" / f"{sha}.bin").write_bytes(data)
        shards.append({"file": f"shards/{sha}.bin", "bytes": len(data), "sha256": sha})
        tensors.append({"name": f"model.layers.{i}.mlp.weight", "shape": [16, 16], "format": "f32", "shard": i,
                        "offset": 0, "bytes": 1024,
                        "parts": [{"name": "data", "dtype": "f32", "shape": [16, 16], "offset": 0, "bytes": 1024}]})
    contents = {"tokenizer.json": json.dumps({"model": {"type": "BPE"}, "name": name}).encode(),
                "tokenizer_config.json": b'{"bos_token": "<s>"}',
                **(extra_files or {})}
    files = []
    for rel, data in contents.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
        files.append({"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    weights = sum(t["bytes"] for t in tensors)
    manifest = {
        "format": "llmpack-bundle", "version": 1, "generator": "llmpack-tests",
        "created": "2026-11-23T08:00:00Z",
        "model": {"name": name, "architecture": "llama", "hf_architecture": "LlamaForCausalLM",
                  "source": {"kind": "safetensors", "name": name}, "license": license, "parameters": 512,
                  "config": {"vocab_size": 32, "hidden_size": 16}, "hf_config": {}},
        "quantization": {"scheme": "f32", "compute": "f32", "bits_per_weight": 32.0},
        "tokenizer": {"file": "tokenizer.json", "config_file": "tokenizer_config.json", "chat_template": None,
                      "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False},
        "generation": {"eos_token_ids": [2], "bos_token_id": 1, "temperature": 0.7, "top_p": 0.9, "top_k": 0,
                       "repetition_penalty": 1.0, "max_new_tokens": 64},
        "tensors": tensors, "shards": shards, "files": files,
        "memory": {"weights_bytes": weights, "kv_cache_bytes_per_token": 256, "context_window": 128,
                   "estimate_bytes": weights + 256 * 128 + 4096},
    }
    if requirements is not None:
        manifest["requirements"] = requirements
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return path


def bundle_files(path: Path) -> dict[str, bytes]:
    """Every file of a bundle folder, by relative path."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real `llmpack` entry point (packager.cli:main) in a subprocess (about 0.5 s)."""
    full_env = {k: v for k, v in os.environ.items() if k != "LLMPACK_REGISTRY"}
    full_env.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Call packager.cli.main() (what the `llmpack` script runs) in this process, with
    argv, environment and output streams swapped: the same code path as run_cli, without
    a Python start-up per call."""
    import contextlib
    import io

    from packager.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = ["llmpack", *map(str, args)]
    os.environ.pop("LLMPACK_REGISTRY", None)
    os.environ.update({"COLUMNS": "200", **(env or {})})
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(params=["local", "memory"])
def registry_url(request, tmp_path):
    """A fresh, empty registry location: a local folder, or a memory:// prefix."""
    if request.param == "local":
        yield str(tmp_path / "registry")
    else:
        url = f"memory://registry-{uuid.uuid4().hex}"
        yield url
        import fsspec
        fs = fsspec.filesystem("memory")
        if fs.exists(url):
            fs.rm(url, recursive=True)


def open_filling_up_after(limit: int, real_open=open):
    """An `open` whose files opened for writing fail with ENOSPC once `limit` bytes are
    written (a full disk, simulated in-process by monkeypatching a module's `open`)."""
    import errno

    written = [0]

    class Filling:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            if written[0] + len(data) > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            written[0] += len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(file, mode="r", *args, **kw):
        f = real_open(file, mode, *args, **kw)
        return Filling(f) if "w" in mode else f

    return fake_open


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root and mount permission; skipped elsewhere)."""
    import shutil

    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", f"llmpack-test-{uuid.uuid4().hex[:8]}", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)
