"""Hostile registries and full disks: a damaged index or a stored file that is not what
the manifest says, a registry or --out on a full or read-only disk. Each is one line,
exit 1, nothing half-written, nothing already stored lost."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import test_registry_helpers
from model_registry import registry as registry_mod
from model_registry import storage as storage_mod
from model_registry.registry import Registry
from test_registry_helpers import bundle_files, cli, make_bundle, open_filling_up_after

tiny_disk = test_registry_helpers.tiny_disk  # the fixture, used by this module's tests


@pytest.fixture
def published(tmp_path):
    """(registry folder, bundle) with the bundle published as model-a@1."""
    reg = tmp_path / "registry"
    bundle = make_bundle(tmp_path / "a", "model-a", (1, 2))
    Registry(str(reg)).publish(bundle)
    return reg, bundle


def one_line_error(r, *fragments):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)


def no_leftovers(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def shard_path(reg, bundle, i=0):
    return reg / json.loads((bundle / "manifest.json").read_text())["shards"][i]["file"]


# ------------------------------------------------------------------------ pull


def test_pull_stops_one_byte_past_the_listed_size(published, tmp_path):
    """A 2 GiB stored file under a 3 KiB manifest entry: refused as a size mismatch after
    reading 3 KiB + 1 byte (sparse: no disk is used, and reading it all would take seconds)."""
    reg, bundle = published
    shard = shard_path(reg, bundle)
    listed = shard.stat().st_size
    os.truncate(shard, 2 << 30)
    out = tmp_path / "out" / "pulled"
    t0 = time.perf_counter()
    r = cli("registry", "pull", "model-a", "--out", out, "-r", reg)
    assert time.perf_counter() - t0 < 5
    one_line_error(r, f"has the wrong size (expected {listed} bytes, got more)")
    assert "sha256" not in r.stderr
    no_leftovers(out)
    r = cli("registry", "verify", "--json", "-r", reg)
    assert r.returncode == 1 and json.loads(r.stdout)["problems"][0]["detail"] == \
        f"has {2 << 30} bytes; expected {listed} bytes"
    os.truncate(shard, listed - 100)
    one_line_error(cli("registry", "pull", "model-a", "--out", out, "-r", reg),
                   f"expected {listed} bytes, got only {listed - 100}")
    no_leftovers(out)


def test_a_huge_stored_manifest_is_not_read(published, tmp_path):
    reg, _ = published
    manifest = reg / "models" / "model-a" / "1" / "manifest.json"
    listed = manifest.stat().st_size
    os.truncate(manifest, 2 << 30)
    t0 = time.perf_counter()
    damaged = f"has {2 << 30} bytes, the index says {listed}"
    one_line_error(cli("registry", "pull", "model-a", "--out", tmp_path / "p", "-r", reg), damaged)
    r = cli("registry", "verify", "--json", "-r", reg)
    assert r.returncode == 1 and damaged in json.loads(r.stdout)["problems"][0]["detail"]
    assert time.perf_counter() - t0 < 5


def test_publish_and_serve_refuse_a_huge_manifest_unread(tmp_path):
    from packager.serve import BundleSet

    bundle = make_bundle(tmp_path / "bundles" / "a", "model-a", (1,))
    os.truncate(bundle / "manifest.json", 2 << 30)
    one_line_error(cli("registry", "publish", bundle, "--to", tmp_path / "registry"), "larger than 64 MiB")
    make_bundle(tmp_path / "bundles" / "b", "model-b", (2,))
    bundles = BundleSet([tmp_path / "bundles"])
    assert [b.id for b in bundles.all()] == ["b"] and "larger than 64 MiB" in bundles.problems[0]


def test_pull_a_folder_where_a_file_is_listed(published, tmp_path):
    reg, bundle = published
    shard = shard_path(reg, bundle)
    shard.unlink()
    shard.mkdir()
    out = tmp_path / "pulled"
    one_line_error(cli("registry", "pull", "model-a", "--out", out, "-r", reg), "is missing from the registry")
    no_leftovers(out)
    manifest = reg / "models" / "model-a" / "1" / "manifest.json"
    manifest.unlink()
    manifest.mkdir()
    one_line_error(cli("registry", "pull", "model-a", "--out", out, "-r", reg), "is damaged", "manifest.json")
    one_line_error(cli("registry", "verify", "-r", reg), "missing or corrupt")


def test_publish_refuses_a_bundle_file_larger_than_listed(tmp_path):
    bundle = make_bundle(tmp_path / "a", "model-a", (1,))
    shard = next((bundle / "shards").iterdir())
    listed = shard.stat().st_size
    os.truncate(shard, 2 << 30)
    t0 = time.perf_counter()
    one_line_error(cli("registry", "publish", bundle, "--to", tmp_path / "registry"),
                   f"is larger than the {listed} bytes the manifest says")
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "registry" / "index.json").exists()


# ------------------------------------------------------------------------ index


def _index_edits():
    def entry(ix):
        return ix["models"]["model-a"]["versions"]["1"]

    return {
        "deeply nested": (lambda ix: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "deep inside an entry": (lambda ix: json.dumps(ix).replace('"license": "apache-2.0"',
                                                                   '"license": ' + "[" * 5000 + "]" * 5000),
                                 "nested too deeply"),
        "huge number": (lambda ix: json.dumps(ix).replace('"generation": 1', '"generation": ' + "9" * 5000),
                        "is not valid JSON"),
        "latest is a list": (lambda ix: ix["models"]["model-a"].update(latest=["1"]),
                             "latest version of model-a is not one of its versions"),
        "version is true": (lambda ix: ix.update(version=True), "has index version 'bool'"),
        "version is huge": (lambda ix: ix.update(version=2**80), "has index version 'int'"),
        "generation is a list": (lambda ix: ix.update(generation=[1]), '"generation" is not a whole number'),
        "parameters is a string": (lambda ix: entry(ix).update(parameters="many"),
                                   'model-a@1: "parameters" is not a whole number >= 0'),
        "quantization is a string": (lambda ix: entry(ix).update(quantization="q4f16"),
                                     'model-a@1: "quantization" is not an object'),
        "source is a list": (lambda ix: entry(ix).update(source=["gguf"]), '"source" is not an object'),
        "total_bytes is negative": (lambda ix: entry(ix).update(total_bytes=-1), '"total_bytes" is not a whole'),
        "manifest hash is a number": (lambda ix: entry(ix).update(manifest_sha256=5), "damaged at model-a@1"),
        "entry is a list": (lambda ix: ix["models"]["model-a"]["versions"].update({"1": []}), "damaged at model-a@1"),
        "bad model id": (lambda ix: ix["models"].update({"../x": ix["models"]["model-a"]}), "damaged at model '../x'"),
    }


INDEX_EDITS = _index_edits()


@pytest.mark.parametrize("edit, message", INDEX_EDITS.values(), ids=INDEX_EDITS.keys())
def test_damaged_index_is_one_line_for_every_command(published, tmp_path, edit, message):
    reg, _ = published
    index = json.loads((reg / "index.json").read_text())
    changed = edit(index)
    (reg / "index.json").write_text(changed if isinstance(changed, str) else json.dumps(index))
    for args in (["list"], ["show", "model-a"], ["pull", "model-a", "--out", str(tmp_path / "p")], ["verify"],
                 ["gc"], ["remove", "model-a@1"]):
        one_line_error(cli("registry", *args, "-r", reg), message)
    bundle = make_bundle(tmp_path / "b", "model-b", (3,))
    one_line_error(cli("registry", "publish", bundle, "--to", reg), message)
    no_leftovers(tmp_path / "p")


# ------------------------------------------------------------------ full disks


@pytest.mark.parametrize("where, message", [
    ("/proc/llmpack-test/registry", "cannot create a folder in /proc/llmpack-test/registry"),
    ("{file}/registry", "cannot create a folder in {file}/registry"),
])
def test_unusable_registry_and_out(tmp_path, where, message):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    bundle = make_bundle(tmp_path / "a", "model-a", (1,))
    one_line_error(cli("registry", "publish", bundle, "--to", where.format(file=a_file)),
                   message.format(file=a_file))
    reg = tmp_path / "registry"
    Registry(str(reg)).publish(bundle)
    one_line_error(cli("registry", "pull", "model-a", "-r", reg, "--out", where.format(file=a_file)),
                   message.format(file=a_file).removesuffix("/registry"))
    assert a_file.read_text() == "not a folder"


def test_pull_onto_a_full_disk(published, tmp_path, monkeypatch):
    reg, bundle = published
    total = sum(len(b) for b in bundle_files(bundle).values())
    out = tmp_path / "pulled"
    monkeypatch.setattr(registry_mod, "open", open_filling_up_after(4000), raising=False)
    one_line_error(cli("registry", "pull", "model-a", "--out", out, "-r", reg),
                   f"no space left on the device of {tmp_path}: needs about {round(total / 1e6) or 1} MB")
    no_leftovers(out)


@pytest.mark.parametrize("full_at", ["first shard", "index"])
def test_publish_onto_a_full_disk_keeps_what_is_stored(published, tmp_path, monkeypatch, full_at):
    """The disk fills up at the first upload, or only when the new index is written (after
    the shards and the version folder): either way the index and model-a@1 stay intact,
    and what the failed publish left is garbage that gc collects."""
    reg, _ = published

    def stored():
        return {p.relative_to(reg): p.read_bytes() for p in reg.rglob("*") if p.is_file() and p.name != "index.lock"}

    before = stored()
    real_fdopen, real_write_atomic = os.fdopen, storage_mod.Store.write_atomic
    if full_at == "first shard":
        monkeypatch.setattr(storage_mod.os, "fdopen", lambda fd, mode="r", *a, **kw: open_filling_up_after(1000)(
            fd, mode, *a, **kw) if "w" in mode else real_fdopen(fd, mode, *a, **kw))
    else:
        def write_atomic(self, rel, data):
            if rel == "index.json":
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write_atomic(self, rel, data)
        monkeypatch.setattr(storage_mod.Store, "write_atomic", write_atomic)
    bundle = make_bundle(tmp_path / "b", "model-b", (5, 6))
    one_line_error(cli("registry", "publish", bundle, "--to", reg), f"no space left on the device of {reg}")
    monkeypatch.undo()
    assert cli("registry", "verify", "-r", reg).returncode == 0
    assert (reg / "index.json").read_bytes() == before[Path("index.json")]
    assert cli("registry", "gc", "-r", reg).returncode == 0
    assert stored() == before  # model-a@1 byte for byte; nothing of model-b, no temporary files


def test_real_full_and_read_only_disks(tmp_path, tiny_disk):
    """On a real 1 MiB tmpfs: a registry that outgrows it and a pull that does not fit;
    remounted read-only: a publish and a pull into it."""
    bundle = make_bundle(tmp_path / "a", "model-a", (1,))
    Registry(str(tiny_disk / "registry")).publish(bundle)
    stored = hashlib.sha256((tiny_disk / "registry" / "index.json").read_bytes()).hexdigest()
    big = make_bundle(tmp_path / "big", "model-big", (2,), extra_files={"big.bin": os.urandom(2 << 20)})
    one_line_error(cli("registry", "publish", big, "--to", tiny_disk / "registry"),
                   f"no space left on the device of {tiny_disk / 'registry'}: needs about 2 MB")
    assert hashlib.sha256((tiny_disk / "registry" / "index.json").read_bytes()).hexdigest() == stored
    big_reg = tmp_path / "big-registry"
    Registry(str(big_reg)).publish(big)
    one_line_error(cli("registry", "pull", "model-big", "--out", tiny_disk / "pulled", "-r", big_reg),
                   "no space left on the device of", "needs about 2 MB")
    no_leftovers(tiny_disk / "pulled")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    one_line_error(cli("registry", "publish", big, "--to", tiny_disk / "registry"), "read-only file system")
    one_line_error(cli("registry", "pull", "model-big", "--out", tiny_disk / "pulled", "-r", big_reg),
                   "read-only file system")
    assert cli("registry", "verify", "-r", tiny_disk / "registry").returncode == 0
