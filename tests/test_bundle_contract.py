"""bundle_contract.manifest: a valid manifest reads back typed; any malformed one is one
ManifestError naming the field (never a TypeError, KeyError or RecursionError); a bundle
folder is checked against its manifest."""

from __future__ import annotations

import copy
import json

import pytest

from bundle_contract.errors import UserError
from bundle_contract.manifest import BundleError, ManifestError, load, missing_blobs, parse, parse_json, verify_shards
from test_registry_helpers import REQUIREMENTS, make_bundle


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "b", "tiny", (1, 2), extra_files={"plan.json": b"{}"}, requirements=REQUIREMENTS)


def test_a_valid_manifest_reads_back_typed(bundle):
    raw = (bundle / "manifest.json").read_bytes()
    m = load(bundle)
    assert m.raw == raw and m.data == json.loads(raw)
    assert (m.model.name, m.model.architecture, m.quantization.compute) == ("tiny", "llama", "f32")
    assert [s.path for s in m.shards] == [s["file"] for s in m.data["shards"]]
    assert m.tensors[1].shard == 1 and m.tensors[0].parts[0].shape == (16, 16)
    assert m.requirements.optional_features == ("shader-f16",)
    on_disk = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    summary = m.summary()
    assert summary["total_bytes"] == on_disk and summary["shard_count"] == 2
    assert summary["requirements"] == REQUIREMENTS and summary["source"] == m.data["model"]["source"]
    json.dumps(summary)
    verify_shards(bundle, m)
    assert missing_blobs(bundle, m) == []
    assert parse(m.data) == m  # the same manifest from the dict alone (raw is not compared)


def test_a_shard_listed_twice_is_stored_once(bundle):
    data = json.loads((bundle / "manifest.json").read_text())
    data["shards"].append(dict(data["shards"][0]))
    m = parse(data)
    assert len(m.shards) == 3 and [b.path for b in m.unique_shards] == [s["file"] for s in data["shards"][:2]]
    data["shards"][2]["bytes"] += 1
    with pytest.raises(ManifestError, match=r'"shards\[2\]" lists shard .* again with another size'):
        parse(data)


WRONG_VALUES = [None, True, -1, 1.5, "x", "", [], {}, [1, 2], [{"bytes": "12"}], {"a": [[]]}]


def paths(value, prefix=()):
    """Every path (tuple of keys and indexes) inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


def test_no_malformed_manifest_escapes_as_another_error(bundle):
    """Every field of a valid manifest, in turn replaced by each wrong value or deleted:
    the result parses or is a ManifestError, never anything else."""
    data = json.loads((bundle / "manifest.json").read_text())
    refused = 0
    for path in list(paths(data))[1:]:
        for value in [*WRONG_VALUES, KeyError]:
            broken = copy.deepcopy(data)
            parent = broken
            for key in path[:-1]:
                parent = parent[key]
            if value is KeyError:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
            try:
                parse(broken)
            except ManifestError as e:
                refused += 1
                assert "\n" not in str(e) and str(e).startswith("manifest.json")
    assert refused > 500


@pytest.mark.parametrize("data, message", [
    ({"format": "llmpack-bundle", "version": 1, "model": "x", "shards": []}, '"model" must be an object, not "x"'),
    ({"format": "llmpack-bundle", "version": 1, "shards": [1, 2]}, '"shards[0]" must be an object, not 1'),
    ({"format": "llmpack-bundle", "version": 1, "shards": [{"bytes": "12"}]}, '"shards[0].sha256" is missing'),
    ({"format": "llmpack-bundle", "version": True}, "bundle format version true"),
    ({"format": "llmpack-bundle", "version": 2}, "version 2; this llmpack reads version 1: upgrade llmpack"),
    ({"format": ["x"] * 10}, '"format" is a list'),
    ("manifest", "not a JSON object"),
])
def test_malformed_manifests_name_the_field(data, message):
    with pytest.raises(ManifestError) as e:
        parse(data)
    assert message in str(e.value) and isinstance(e.value, UserError)


def test_absurdly_deep_json(bundle):
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ManifestError, match='"model" must be an object, not a list'):
        parse({"format": "llmpack-bundle", "version": 1, "shards": [], "model": deep})
    data = json.loads((bundle / "manifest.json").read_text())
    data["model"]["hf_config"] = {"deep": deep}  # kept as it is, never walked
    assert parse(data).model.hf_config["deep"] is deep
    with pytest.raises(ManifestError, match="nested too deeply"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, "x/manifest.json")


def test_a_bundle_folder_against_its_manifest(bundle, tmp_path):
    with pytest.raises(ManifestError, match="is not a bundle: it has no manifest.json"):
        load(tmp_path)
    m = load(bundle)
    shard = bundle / m.shards[0].path
    shard.write_bytes(shard.read_bytes()[:-1] + b"?")
    with pytest.raises(BundleError, match=rf"is corrupt: {m.shards[0].path} has sha256"):
        verify_shards(bundle, m)
    shard.write_bytes(b"short")
    assert missing_blobs(bundle, m) == [m.shards[0].path]
    shard.unlink()
    with pytest.raises(BundleError, match="is incomplete: .* is listed in manifest.json but missing"):
        verify_shards(bundle, m)
