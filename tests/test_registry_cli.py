"""`llmpack registry ...` through the real entry point, packager.cli:main: output formats,
the registry option and its environment fallback, and one-line errors. Most calls run
main() in-process (`cli`); a few go through a fresh interpreter (`run_cli`)."""

from __future__ import annotations

import json

import pytest

from test_registry_helpers import REQUIREMENTS, bundle_files, cli, make_bundle, run_cli


def assert_clean_failure(r, *fragments: str) -> None:
    """Exit status 1, a single `error: ...` line naming the problem, no traceback."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_publish_list_show_pull_remove(tmp_path):
    reg = str(tmp_path / "registry")
    a = make_bundle(tmp_path / "a", "Model-A", (1, 2))
    b = make_bundle(tmp_path / "b", "model-b", (2, 3), requirements=REQUIREMENTS)

    r = run_cli("registry", "publish", str(a), "--to", reg, "--json")  # the real console entry point
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["id"], summary["version"], summary["uploaded_blobs"]) == ("model-a", "1", 2)
    r = cli("registry", "publish", str(b), "--to", reg, "--id", "b", "--version", "0.1")
    assert r.returncode == 0 and "published b@0.1" in r.stdout and "uploaded 1 file (3.5 KiB)" in r.stdout

    r = cli("registry", "list", "-r", reg, "--json")
    models = {m["id"]: m for m in json.loads(r.stdout)["models"]}
    assert set(models) == {"model-a", "b"} and models["b"]["latest"] == "0.1"
    r = cli("registry", "list", "--registry", reg)
    assert r.returncode == 0 and "model-a" in r.stdout and "f32" in r.stdout

    r = cli("registry", "show", "b", "-r", reg, "--json")
    shown = json.loads(r.stdout)
    assert shown["latest"] == "0.1" and shown["versions"][0]["requirements"] == REQUIREMENTS
    r = cli("registry", "show", "b@0.1", "-r", reg)
    assert r.returncode == 0 and "b@0.1" in r.stdout and "shader-f16" in r.stdout and "apache-2.0" in r.stdout

    out = tmp_path / "pulled"
    r = cli("registry", "pull", "b@0.1", "--out", str(out), env={"LLMPACK_REGISTRY": reg})
    assert r.returncode == 0, r.stderr
    assert bundle_files(out) == bundle_files(b)

    r = cli("registry", "verify", "-r", reg)
    assert r.returncode == 0 and "ok" in r.stdout

    r = cli("registry", "remove", "model-a@1", "-r", reg, "--json")
    assert json.loads(r.stdout)["shards_removed"] == 1
    r = cli("registry", "gc", "-r", reg)
    assert r.returncode == 0 and "deleted 0 unreferenced shards" in r.stdout


def test_verify_names_corrupt_blob_and_fails(tmp_path):
    reg = tmp_path / "registry"
    a = make_bundle(tmp_path / "a", "a", (1,))
    assert cli("registry", "publish", str(a), "--to", str(reg)).returncode == 0
    shard = next((reg / "shards").iterdir())
    shard.write_bytes(b"x" + shard.read_bytes()[1:])
    r = cli("registry", "verify", "-r", str(reg), "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert [(p["kind"], p["path"]) for p in report["problems"]] == [("corrupt", f"shards/{shard.name}")]
    r = cli("registry", "verify", "a", "-r", str(reg))
    assert r.returncode == 1 and "corrupt" in r.stdout and shard.name[:20] in r.stdout
    assert "error: 1 missing or corrupt file(s)" in r.stderr and "--repair" in r.stderr
    r = run_cli("registry", "pull", "a", "-r", str(reg), "--out", str(tmp_path / "out"))
    assert_clean_failure(r, "is corrupt", shard.name, "nothing was written")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def populated(tmp_path):
    reg = tmp_path / "registry"
    a = make_bundle(tmp_path / "a", "model-a", (1,))
    assert cli("registry", "publish", str(a), "--to", str(reg)).returncode == 0
    return reg


def _corrupt_manifest(tmp_path):
    b = make_bundle(tmp_path / "corrupt", "x", (1,))
    (b / "manifest.json").write_text('{"format": "llmpack-bundle", "version": 1, "model": ')
    return b


def _wrong_shards(tmp_path):
    b = make_bundle(tmp_path / "wrong", "x", (1,))
    m = json.loads((b / "manifest.json").read_text())
    m["shards"] = {"not": "a list"}
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def _missing_shard(tmp_path):
    b = make_bundle(tmp_path / "missing", "x", (1, 2))
    next((b / "shards").iterdir()).unlink()
    return b


@pytest.mark.parametrize("make, fragments", [
    (lambda t: t / "does-not-exist", ["does-not-exist does not exist", "llmpack package"]),
    (lambda t: (t / "plain").mkdir() or t / "plain", ["is not a bundle", "no manifest.json"]),
    (_corrupt_manifest, ["manifest.json is not valid JSON", "re-create the bundle"]),
    (_wrong_shards, ["\"shards\" must be a list"]),
    (_missing_shard, ["is incomplete", "is listed in manifest.json but missing"]),
], ids=["missing", "not-a-bundle", "corrupt-manifest", "bad-shard-list", "missing-shard"])
def test_publish_bad_bundle(tmp_path, populated, make, fragments):
    before = (populated / "index.json").read_bytes()
    r = cli("registry", "publish", str(make(tmp_path)), "--to", str(populated))
    assert_clean_failure(r, *fragments)
    assert (populated / "index.json").read_bytes() == before


@pytest.mark.parametrize("args, fragments", [
    (["show", "nope"], ["unknown model id 'nope'", "llmpack registry list"]),
    (["show", "model-b"], ["unknown model id 'model-b'", "did you mean 'model-a'"]),
    (["pull", "nope@1", "--out", "{tmp}/o"], ["unknown model id 'nope'"]),
    (["pull", "model-a@9", "--out", "{tmp}/o"], ["has no version '9'", "it has: 1"]),
    (["show", "Bad_ID!"], ["invalid model id 'Bad_ID!'", "lowercase letters"]),
    (["pull", "model-a@", "--out", "{tmp}/o"], ["names no version after '@'"]),
    (["remove", "model-a"], ["name the version to remove", "model-a@VERSION"]),
    (["remove", "../etc@1"], ["invalid model id '../etc'"]),
    (["verify", "nope"], ["unknown model id 'nope'"]),
    (["pull", "model-a", "--out", "{tmp}"], ["already exists; pass --force"]),
], ids=lambda v: "-".join(v) if isinstance(v, list) and v and v[0] in ("show", "pull", "remove", "verify") else None)
def test_bad_requests(tmp_path, populated, args, fragments):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert_clean_failure(cli("registry", *args, "-r", str(populated)), *fragments)


def test_publish_bad_id_and_version(tmp_path):
    a = make_bundle(tmp_path / "a", "a", (1,))
    reg = str(tmp_path / "registry")
    assert_clean_failure(cli("registry", "publish", str(a), "--to", reg, "--id", "Has Space"),
                         "invalid model id 'Has Space'")
    assert_clean_failure(cli("registry", "publish", str(a), "--to", reg, "--version", "../1"),
                         "invalid version '../1'")
    assert not (tmp_path / "registry").exists()


def test_registry_must_be_named_and_exist(tmp_path):
    assert_clean_failure(run_cli("registry", "list"), "no registry given", "--registry/-r", "LLMPACK_REGISTRY")
    assert_clean_failure(cli("registry", "publish", str(tmp_path)), "no registry given", "--to")
    assert_clean_failure(cli("registry", "list", "-r", str(tmp_path / "nowhere")),
                         "no registry at", "llmpack registry publish")
    assert_clean_failure(cli("registry", "list", "-r", "nosuchproto://x"), "cannot open registry")


def test_registry_cli_on_its_own(tmp_path, monkeypatch, capsys):
    """`python -m model_registry.cli`: the same one-line errors without the packager."""
    from model_registry.cli import main

    monkeypatch.delenv("LLMPACK_REGISTRY", raising=False)
    monkeypatch.setattr("sys.argv", ["registry", "list", "-r", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: no registry at") and err.count("\n") == 1
