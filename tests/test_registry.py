"""Registry library: publish, dedupe, pull, verify, remove/gc, consistency under concurrency
and interruption. Runs on a local folder and on fsspec's memory:// file system."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import fsspec
import pytest

import test_registry_helpers
from model_registry.errors import RegistryError
from model_registry.registry import Registry
from model_registry.storage import Store
from test_registry_helpers import REQUIREMENTS, ROOT, bundle_files, make_bundle

registry_url = test_registry_helpers.registry_url  # the fixture, used by this module's tests


def stored_shards(url: str) -> list[str]:
    store = Store(url)
    return sorted(e["name"] for e in store.listdir("shards") if e["name"].endswith(".bin"))


def index_bytes(url: str) -> bytes:
    return Store(url).read_bytes("index.json")


def slow_uploads(monkeypatch, seconds: float) -> None:
    """Every registry upload first waits `seconds`, so a test can act between two uploads."""
    for name in ("upload", "upload_bytes"):
        method = getattr(Store, name)

        def slowed(*args, _method=method, **kwargs):
            time.sleep(seconds)
            return _method(*args, **kwargs)

        monkeypatch.setattr(Store, name, slowed)


# `llmpack registry publish ARGS...` whose uploads each wait 0.4 s first (slow_uploads, in a child process)
SLOW_PUBLISH = """
import sys, time
from model_registry.storage import Store
from packager.cli import main

for name in ("upload", "upload_bytes"):
    def slowed(*args, _method=getattr(Store, name), **kwargs):
        time.sleep(0.4)
        return _method(*args, **kwargs)
    setattr(Store, name, slowed)
sys.argv = ["llmpack", *sys.argv[1:]]
main()
"""


def test_two_models_sharing_a_shard_store_it_once(registry_url, tmp_path):
    a = make_bundle(tmp_path / "a", "model-a", (1, 2))
    b = make_bundle(tmp_path / "b", "model-b", (2, 3))
    reg = Registry(registry_url)
    ra = reg.publish(a)
    rb = reg.publish(b)
    assert (ra["status"], ra["id"], ra["version"], ra["uploaded_blobs"]) == ("published", "model-a", "1", 2)
    assert (rb["status"], rb["uploaded_blobs"]) == ("published", 1)  # shard 2 was already there
    assert len(stored_shards(registry_url)) == 3
    index = reg.load_index()
    assert sorted(index["models"]) == ["model-a", "model-b"]
    assert index["generation"] == 2


def test_index_records_what_clients_need(registry_url, tmp_path):
    req = REQUIREMENTS
    bundle = make_bundle(tmp_path / "a", "Fancy Model_2", (1,), requirements=req)
    manifest = json.loads((bundle / "manifest.json").read_text())
    reg = Registry(registry_url)
    reg.publish(bundle, version="2024.1")
    model = reg.load_index()["models"]["fancy-model_2"]  # id derived from model.name
    assert model["latest"] == "2024.1"
    e = model["versions"]["2024.1"]
    import hashlib
    assert e["manifest_sha256"] == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert e["path"] == "models/fancy-model_2/2024.1/"
    assert e["quantization"] == manifest["quantization"]
    assert e["total_bytes"] == sum(len(v) for v in bundle_files(bundle).values())
    assert e["memory_estimate_bytes"] == manifest["memory"]["estimate_bytes"]
    assert e["requirements"] == req
    assert (e["architecture"], e["license"], e["source"], e["created"]) == (
        "llama", "apache-2.0", manifest["model"]["source"], manifest["created"])
    assert e["published"].endswith("Z") and e["shard_count"] == 1
    # absent requirements stay absent (null), never invented
    reg.publish(make_bundle(tmp_path / "b", "plain", (3,)))
    assert reg.load_index()["models"]["plain"]["versions"]["1"]["requirements"] is None


def test_pull_is_byte_identical(registry_url, tmp_path):
    bundle = make_bundle(tmp_path / "a", "model-a", (1, 2, 1),  # a repeated shard is stored once
                         extra_files={"kernels/matmul.wgsl": b"@compute fn main() {}\n"})
    reg = Registry(registry_url)
    reg.publish(bundle)
    out = tmp_path / "pulled" / "model-a"
    summary = reg.pull("model-a", out)
    assert summary["version"] == "1"
    assert bundle_files(out) == bundle_files(bundle)
    assert not [p for p in out.parent.iterdir() if p.name != "model-a"]  # no temp folder left behind
    with pytest.raises(RegistryError, match="already exists; pass --force"):
        reg.pull("model-a@1", out)
    (out / "stray.txt").write_text("x")
    reg.pull("model-a@1", out, force=True)
    assert bundle_files(out) == bundle_files(bundle)


def test_versions_latest_and_idempotent_publish(registry_url, tmp_path):
    reg = Registry(registry_url)
    v1 = make_bundle(tmp_path / "v1", "m", (1,))
    v2 = make_bundle(tmp_path / "v2", "m", (2,))
    assert reg.publish(v1)["version"] == "1"
    again = reg.publish(v1)
    assert (again["status"], again["version"]) == ("unchanged", "1")
    generation = reg.load_index()["generation"]
    assert reg.publish(v2)["version"] == "2"
    assert reg.load_index()["generation"] == generation + 1
    assert reg.resolve("m")[1] == "2"
    reg.pull("m@1", tmp_path / "o1")
    assert bundle_files(tmp_path / "o1") == bundle_files(v1)
    with pytest.raises(RegistryError, match="already published with other content"):
        reg.publish(v1, "m", "2")
    with pytest.raises(RegistryError, match="has no version '7'.*it has: 2, 1"):
        reg.resolve("m@7")
    with pytest.raises(RegistryError, match="unknown model id 'n'"):
        reg.resolve("n")


def tamper(url: str, rel: str) -> None:
    store = Store(url)
    data = bytearray(store.read_bytes(rel))
    data[100] ^= 0xFF
    store.write_atomic(rel, bytes(data))


def test_tampered_shard_is_reported_and_refused(registry_url, tmp_path):
    a = make_bundle(tmp_path / "a", "model-a", (1, 2))
    b = make_bundle(tmp_path / "b", "model-b", (2, 3))
    reg = Registry(registry_url)
    reg.publish(a)
    reg.publish(b)
    assert reg.verify()["ok"]
    manifest = json.loads((a / "manifest.json").read_text())
    shared = manifest["shards"][1]["file"]  # shard 2, used by both models
    tamper(registry_url, shared)
    Store(registry_url).rm("models/model-b/1/tokenizer.json")

    report = reg.verify()
    assert not report["ok"]
    problems = {(p["kind"], p["path"]): p for p in report["problems"]}
    assert set(problems) == {("corrupt", shared), ("missing", "models/model-b/1/tokenizer.json")}
    assert problems[("corrupt", shared)]["used_by"] == ["model-a@1", "model-b@1"]
    only_a = reg.verify("model-a")
    assert [p["path"] for p in only_a["problems"]] == [shared]

    out = tmp_path / "out"
    with pytest.raises(RegistryError, match=rf"{shared}.* is corrupt .*nothing was written"):
        reg.pull("model-a", out)
    assert not out.exists() and list(tmp_path.glob(".out.*")) == []

    # the fix the messages point to: re-publish with --repair
    r = reg.publish(a, repair=True)
    assert r["status"] == "repaired" and r["uploaded_blobs"] == 1
    reg.publish(b, repair=True)
    assert reg.verify()["ok"]
    reg.pull("model-a", out)
    assert bundle_files(out) == bundle_files(a)


def test_damaged_manifest_is_reported(registry_url, tmp_path):
    reg = Registry(registry_url)
    reg.publish(make_bundle(tmp_path / "a", "model-a", (1,)))
    Store(registry_url).write_atomic("models/model-a/1/manifest.json", b"{}")
    report = reg.verify()
    assert [(p["kind"], p["path"]) for p in report["problems"]] == [("corrupt", "models/model-a/1/manifest.json")]
    with pytest.raises(RegistryError, match="damaged.*manifest.json"):
        reg.pull("model-a", tmp_path / "out")


def test_remove_collects_unreferenced_shards(registry_url, tmp_path):
    reg = Registry(registry_url)
    reg.publish(make_bundle(tmp_path / "a1", "a", (1, 2)))
    reg.publish(make_bundle(tmp_path / "a2", "a", (1, 3)))
    reg.publish(make_bundle(tmp_path / "b", "b", (2, 4)))
    assert len(stored_shards(registry_url)) == 4
    with pytest.raises(RegistryError, match=r"name the version to remove.*versions of a: 2, 1"):
        reg.remove("a")
    r = reg.remove("a@2")  # the latest: shard 3 is only its own
    assert (r["shards_removed"], r["dirs_removed"]) == (1, ["models/a/2/"])
    assert reg.load_index()["models"]["a"]["latest"] == "1"
    r = reg.remove("a@1")  # shard 1 goes, shard 2 is still b's
    assert r["shards_removed"] == 1
    assert "a" not in reg.load_index()["models"]
    assert len(stored_shards(registry_url)) == 2
    assert reg.verify()["ok"]
    with pytest.raises(RegistryError, match="unknown model id 'a'"):
        reg.remove("a@1")


def test_interrupted_publish_leaves_index_unchanged(registry_url, tmp_path, monkeypatch):
    """An exception (Ctrl+C) at any upload leaves index.json byte-for-byte as it was and the lock free."""
    a = make_bundle(tmp_path / "a", "model-a", (1, 2))
    bundle = make_bundle(tmp_path / "b", "model-b", (3, 4, 5))
    real_upload, real_upload_bytes = Store.upload, Store.upload_bytes
    for fail_at in range(1, 7):  # 3 shards; then, under the lock, 2 files and the manifest
        url = f"{registry_url}/r{fail_at}"
        reg = Registry(url)
        reg.publish(a)
        before = index_bytes(url)
        calls = []

        def interrupt(real):
            def upload(self, *args, **kwargs):
                calls.append(args[0])
                if len(calls) == fail_at:
                    raise KeyboardInterrupt
                return real(self, *args, **kwargs)
            return upload

        monkeypatch.setattr(Store, "upload", interrupt(real_upload))
        monkeypatch.setattr(Store, "upload_bytes", interrupt(real_upload_bytes))
        with pytest.raises(KeyboardInterrupt):
            reg.publish(bundle)
        monkeypatch.setattr(Store, "upload", real_upload)
        monkeypatch.setattr(Store, "upload_bytes", real_upload_bytes)
        assert index_bytes(url) == before, calls
        assert reg.verify()["ok"]
        gc = reg.gc()
        assert gc["shards_removed"] == min(fail_at - 1, 3)
        assert gc["dirs_removed"] == (["models/model-b/"] if fail_at > 4 else [])
        assert len(stored_shards(url)) == 2
        assert reg.publish(bundle)["status"] == "published"  # the lock was released
        assert reg.verify()["ok"]
    assert calls[-1].endswith("manifest.json")


def test_publish_refuses_bad_bundles(registry_url, tmp_path):
    reg = Registry(registry_url)
    with pytest.raises(RegistryError, match="does not exist"):
        reg.publish(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="is not a bundle: it has no manifest.json"):
        reg.publish(tmp_path / "empty")
    bad = make_bundle(tmp_path / "bad", "m", (1,))
    shard = next((bad / "shards").iterdir())
    shard.write_bytes(shard.read_bytes()[:-1] + b"?")
    with pytest.raises(RegistryError, match=r"is corrupt: shards/.* has sha256"):
        reg.publish(bad)
    assert not Store(registry_url).exists("index.json")  # nothing published
    assert stored_shards(registry_url) == []            # and nothing uploaded
    m = make_bundle(tmp_path / "m", "m", (1,))
    manifest = json.loads((m / "manifest.json").read_text())
    manifest["files"][0]["path"] = "../../etc/passwd"
    (m / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="must be relative, without '..'"):
        reg.publish(m)
    manifest["version"] = 9
    (m / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="format version 9.*upgrade llmpack"):
        reg.publish(m)
    with pytest.raises(RegistryError, match="invalid model id 'Bad Id'"):
        reg.publish(make_bundle(tmp_path / "ok", "ok", (1,)), "Bad Id")
    with pytest.raises(RegistryError, match="invalid version '1/2'"):
        reg.publish(tmp_path / "ok", "ok", "1/2")


def test_publish_warns_about_unlisted_files(tmp_path):
    bundle = make_bundle(tmp_path / "a", "a", (1,))
    (bundle / "notes.txt").write_text("not in the manifest")
    r = Registry(str(tmp_path / "reg")).publish(bundle)
    assert r["unlisted_files"] == ["notes.txt"]


def test_refuses_to_turn_a_foreign_folder_into_a_registry(tmp_path):
    bundle = make_bundle(tmp_path / "a", "a", (1,))
    with pytest.raises(RegistryError, match="is not a registry .*and is not empty"):
        Registry(str(bundle)).publish(bundle)
    with pytest.raises(RegistryError, match="no registry at .* has no index.json"):
        Registry(str(tmp_path / "none")).load_index()


def test_damaged_index_is_a_clear_error(registry_url, tmp_path):
    Store(registry_url).write_atomic("index.json", b"{not json")
    with pytest.raises(RegistryError, match="index.json is not valid JSON"):
        Registry(registry_url).load_index()
    with pytest.raises(RegistryError, match="index.json is not valid JSON"):  # and publish does not overwrite it
        Registry(registry_url).publish(make_bundle(tmp_path / "a", "a", (1,)))


# -- concurrency --------------------------------------------------------------------

def _publish_in_process(url: str, bundle: str, barrier) -> None:
    barrier.wait(timeout=30)
    Registry(url).publish(bundle)


def test_eight_processes_publishing_at_once_all_land(tmp_path):
    url = str(tmp_path / "registry")
    bundles = [make_bundle(tmp_path / f"b{i}", f"model-{i}", (100, 200 + i)) for i in range(8)]
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_publish_in_process, args=(url, str(b), barrier)) for b in bundles]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * 8
    reg = Registry(url)
    index = reg.load_index()
    assert sorted(index["models"]) == sorted(f"model-{i}" for i in range(8))
    assert index["generation"] == 8
    assert len(stored_shards(url)) == 9  # the shared shard once
    assert reg.verify()["ok"]


def test_eight_threads_publishing_at_once_all_land(registry_url, tmp_path):
    bundles = [make_bundle(tmp_path / f"b{i}", f"model-{i}", (100, 200 + i)) for i in range(8)]
    barrier = threading.Barrier(8)
    errors = []

    def run(b):
        try:
            barrier.wait(timeout=30)
            Registry(registry_url).publish(b)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(b,)) for b in bundles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(Registry(registry_url).load_index()["models"]) == 8


def test_publish_killed_midway_leaves_index_unchanged(tmp_path):
    """SIGKILL a real `llmpack registry publish` while it uploads, then once more while it
    writes the version folder under the lock: index.json is untouched both times, the lock
    is free, and gc + a re-publish clean up and complete."""
    url = str(tmp_path / "registry")
    reg = Registry(url)
    reg.publish(make_bundle(tmp_path / "first", "first", (1,)))
    before = index_bytes(url)
    bundle = make_bundle(tmp_path / "b", "second", (2, 3, 4, 5, 6))
    cmd = [sys.executable, "-c", SLOW_PUBLISH, "registry", "publish", str(bundle), "--to", url]

    def publish_until(condition) -> None:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not condition():
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL

    publish_until(lambda: len(stored_shards(url)) >= 2)  # killed among the shard uploads
    assert index_bytes(url) == before
    assert 2 <= len(stored_shards(url)) < 6
    publish_until(lambda: (tmp_path / "registry" / "models" / "second").exists())  # killed under the lock
    assert index_bytes(url) == before
    assert Registry(url).verify()["ok"]

    assert reg.gc()["dirs_removed"] == ["models/second/"]
    assert stored_shards(url) == [p.name for p in sorted((tmp_path / "first" / "shards").iterdir())]
    r = reg.publish(bundle)  # the lock died with its holder
    assert r["status"] == "published"
    reg.pull("second", tmp_path / "out")
    assert bundle_files(tmp_path / "out") == bundle_files(bundle)


def test_memory_registries_are_separate():
    a, b = f"memory://r-{os.getpid()}-a", f"memory://r-{os.getpid()}-b"
    try:
        assert Store(a).root != Store(b).root
    finally:
        fs = fsspec.filesystem("memory")
        for u in (a, b):
            if fs.exists(u):
                fs.rm(u, recursive=True)


# -- locks ---------------------------------------------------------------------------

def test_lock_held_elsewhere_times_out_with_holder_named(registry_url, tmp_path, monkeypatch):
    import model_registry.storage as storage

    reg = Registry(registry_url)
    reg.publish(make_bundle(tmp_path / "a", "a", (1,)))
    before = index_bytes(registry_url)
    monkeypatch.setattr(storage, "LOCK_TIMEOUT_S", 0.3)
    store = Store(registry_url)
    if store.is_local:  # another process's flock; taken directly, past this process's thread lock
        holder = storage._flock(store.path(storage.LOCK_NAME), registry_url, "publish other", 1)
    else:  # another machine's lease object
        holder = _held_lease(storage.LeaseLock(store, "publish other", 1))
    with holder:
        with pytest.raises(RegistryError, match=rf"is locked \(publish other by pid {os.getpid()} .*\)"):
            reg.publish(make_bundle(tmp_path / "b", "b", (2,)))
    assert index_bytes(registry_url) == before
    assert reg.publish(tmp_path / "b")["status"] == "published"


@contextlib.contextmanager
def _held_lease(lease):
    lease.acquire()
    try:
        yield
    finally:
        lease.release()


def test_stale_lease_is_broken(tmp_path):
    url = f"memory://stale-{os.getpid()}"
    try:
        store = Store(url)
        store.write_atomic("index.lock", json.dumps({"owner": "dead", "pid": 1, "expires": time.time() - 1}).encode())
        assert Registry(url).publish(make_bundle(tmp_path / "a", "a", (1,)))["status"] == "published"
        assert not store.exists("index.lock")
    finally:
        fsspec.filesystem("memory").rm(url, recursive=True)


def test_lease_running_out_before_commit_changes_nothing(tmp_path, monkeypatch):
    import model_registry.storage as storage

    url = f"memory://lease-{os.getpid()}"
    try:
        reg = Registry(url)
        reg.publish(make_bundle(tmp_path / "a", "a", (1,)))
        before = index_bytes(url)
        monkeypatch.setattr(storage, "LEASE_S", 0.2)
        slow_uploads(monkeypatch, 0.1)  # 3 uploads under the lock
        with pytest.raises(RegistryError, match=r"lost the lock .*the index was not changed"):
            reg.publish(make_bundle(tmp_path / "b", "b", (2,)))
        assert index_bytes(url) == before
    finally:
        fsspec.filesystem("memory").rm(url, recursive=True)
