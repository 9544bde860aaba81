"""The registry on real remotes, through the real `llmpack registry` CLI:

- an S3-compatible server started here (moto's server mode, reached by s3fs through
  AWS_ENDPOINT_URL, as a user reaches MinIO or R2): publish, list, show, pull, verify,
  repair and remove (the first command in a process of its own, the others through
  the same entry point in this one, which saves a second of start-up each);
- a plain static HTTP host of a registry folder (python -m http.server, fsspec's http):
  list, show, pull and verify; writing is refused; and the JS runtime (Node) loads
  `registry:ID` from it and greedy-decodes the numpy reference's tokens;
- the model card: `llmpack eval BUNDLE` records the quality, publish carries it into the
  index with the manifest's facts and the checkpoint's sha256, `registry show` prints it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import uuid

import pytest

from bundle_contract.manifest import load
from conftest import require_node
from static_host import static_server
from test_registry_helpers import ROOT, bundle_files, cli, run_cli

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (a free port) for this module; its URL. (moto[server],
    s3fs and aiohttp come with the test extra: missing, they fail the tests, as any component does.)"""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint):
    """(environment for the CLI, s3fs file system, a fresh bucket name)."""
    import s3fs

    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3_endpoint, skip_instance_cache=True)
    bucket = f"llmpack-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return env, fs, bucket


def ok(*args, env=None, process=False) -> subprocess.CompletedProcess:
    """The real `llmpack` entry point: in this process (cli), or with `process` in a new one (run_cli)."""
    r = (run_cli if process else cli)(*map(str, args), env=env)
    assert r.returncode == 0, r.stderr
    return r


def test_registry_on_an_s3_server(packaged_tiny, s3, tmp_path):
    env, fs, bucket = s3
    reg = f"s3://{bucket}/models-registry"
    bundle = packaged_tiny("gqa", "q4f32")
    # (the first command in a process of its own: the endpoint and keys reach s3fs from the environment)
    published = json.loads(ok("registry", "publish", bundle, "--to", reg, "--id", "tiny", "--json", env=env,
                              process=True).stdout)
    assert published["status"] == "published" and published["version"] == "1"
    root = f"{bucket}/models-registry"
    assert fs.exists(f"{root}/index.json") and not fs.exists(f"{root}/index.lock")  # the lease was released

    listed = json.loads(ok("registry", "list", "-r", reg, "--json", env=env).stdout)
    assert [m["id"] for m in listed["models"]] == ["tiny"]
    shown = json.loads(ok("registry", "show", "tiny", "-r", reg, "--json", env=env).stdout)
    assert [v["version"] for v in shown["versions"]] == ["1"] and shown["versions"][0]["card"]["format"] == "q4f32"

    out = tmp_path / "pulled"
    ok("registry", "pull", "tiny@1", "--out", out, "-r", reg, env=env)
    assert bundle_files(out) == bundle_files(bundle)
    report = json.loads(ok("registry", "verify", "-r", reg, "--json", env=env).stdout)
    assert report["ok"] and report["versions"] == 1 and report["bytes_checked"] > 0

    # a corrupt object is found by verify, refused by pull, and replaced by publish --repair
    shard = load(bundle).unique_shards[0]
    good = fs.cat_file(f"{root}/{shard.path}")
    fs.pipe_file(f"{root}/{shard.path}", bytes([good[0] ^ 1]) + good[1:])
    r = cli("registry", "verify", "-r", reg, "--json", env=env)
    assert r.returncode == 1
    assert [(p["kind"], p["path"]) for p in json.loads(r.stdout)["problems"]] == [("corrupt", shard.path)]
    r = cli("registry", "pull", "tiny@1", "--out", str(tmp_path / "bad"), "-r", reg, env=env)
    assert r.returncode == 1 and "is corrupt" in r.stderr and not (tmp_path / "bad").exists()
    ok("registry", "publish", bundle, "--to", reg, "--id", "tiny", "--repair", env=env)
    assert fs.cat_file(f"{root}/{shard.path}") == good

    # remove: the index loses the version, and its shards and folder are collected
    ok("registry", "remove", "tiny@1", "-r", reg, env=env)
    assert json.loads(ok("registry", "list", "-r", reg, "--json", env=env).stdout)["models"] == []
    fs.invalidate_cache()
    assert (fs.ls(f"{root}/shards") if fs.exists(f"{root}/shards") else []) == []
    assert not fs.exists(f"{root}/models/tiny/1/manifest.json") and not fs.exists(f"{root}/index.lock")


def test_registry_on_a_static_http_host(packaged_tiny, tmp_path):
    v1, v2 = packaged_tiny("gqa", "q4f32"), packaged_tiny("gqa", "q8f16")
    folder = tmp_path / "registry"
    ok("registry", "publish", v1, "--to", folder, "--id", "tiny")
    ok("registry", "publish", v2, "--to", folder, "--id", "tiny")
    with static_server(folder) as url:
        listed = json.loads(ok("registry", "list", "-r", url, "--json", process=True).stdout)
        assert [(m["id"], m["latest"]) for m in listed["models"]] == [("tiny", "2")]
        ok("registry", "pull", "tiny@1", "--out", tmp_path / "v1", "-r", url)
        ok("registry", "pull", "tiny", "--out", tmp_path / "latest", "-r", url)
        assert bundle_files(tmp_path / "v1") == bundle_files(v1)
        assert bundle_files(tmp_path / "latest") == bundle_files(v2)
        report = json.loads(ok("registry", "verify", "-r", url, "--json").stdout)
        assert report["ok"] and report["versions"] == 2 and report["bytes_checked"] > 0

        r = cli("registry", "publish", str(v1), "--to", url, "--id", "other")
        assert r.returncode == 1 and "read-only over HTTP" in r.stderr
        r = cli("registry", "remove", "tiny@1", "-r", url)
        assert r.returncode == 1 and "read-only over HTTP" in r.stderr

        shard = load(v2).unique_shards[0]
        (folder / shard.path).write_bytes(b"\0" * shard.bytes)  # same size, other bytes
        r = cli("registry", "verify", "-r", url, "--json")
        assert r.returncode == 1 and json.loads(r.stdout)["problems"][0]["path"] == shard.path
        r = cli("registry", "pull", "tiny", "--out", str(tmp_path / "bad"), "-r", url)
        assert r.returncode == 1 and "is corrupt" in r.stderr and not (tmp_path / "bad").exists()


# (a script file, not `node -e`: the Wasm backend's eval'd worker would inherit --input-type=module)
NODE_REGISTRY_LOAD = """
const [runtime, registryUrl, ids, n] = process.argv.slice(2);
const m = await import(runtime);
const argmax = (l) => l.reduce((best, v, i) => (v > l[best] ? i : best), 0);
const out = {};
for (const ref of ["registry:tiny", "registry:tiny@1"]) {
  const engine = await m.createEngine(ref, { registryUrl, backend: "wasm", cache: null });
  const prompt = JSON.parse(ids);
  let logits = await engine.backend.prefill(Int32Array.from(prompt), 0);
  const tokens = [];
  for (let i = 0; i < Number(n); i++) {
    tokens.push(argmax(logits));
    if (i + 1 < Number(n)) logits = await engine.backend.decode(tokens[i], prompt.length + i);
  }
  out[ref] = { tokens, scheme: engine.manifest.quantization.scheme };
  await engine.unload();
}
console.log(JSON.stringify(out));
"""


def test_js_runtime_loads_registry_ids_from_a_static_host(packaged_tiny, tmp_path):
    """`registry:ID[@V]` through index.json on python -m http.server: the runtime's greedy
    tokens are the numpy reference's for each version."""
    require_node()
    from packager.reference import ReferenceModel

    v1, v2 = packaged_tiny("gqa", "q4f32"), packaged_tiny("gqa", "q8f16")
    folder = tmp_path / "registry"
    ok("registry", "publish", v1, "--to", folder, "--id", "tiny")
    ok("registry", "publish", v2, "--to", folder, "--id", "tiny")
    prompt, n = [1, 5, 9, 2, 7], 6
    script = tmp_path / "load.mjs"
    script.write_text(NODE_REGISTRY_LOAD)
    with static_server(folder) as url:
        r = subprocess.run(["node", str(script),
                            (ROOT / "runtime_js" / "dist" / "llmpack.js").as_uri(), url, json.dumps(prompt), str(n)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, env=os.environ)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["registry:tiny"]["scheme"] == "q8f16" and got["registry:tiny@1"]["scheme"] == "q4f32"
    assert got["registry:tiny"]["tokens"] == ReferenceModel(v2).greedy(prompt, n)
    assert got["registry:tiny@1"]["tokens"] == ReferenceModel(v1).greedy(prompt, n)


def test_model_card_round_trip(packaged_tiny, tmp_path):
    """eval -> quality.json -> publish -> index card -> show; a re-packaged bundle's old record is not used."""
    import shutil

    bundle = tmp_path / "tiny"
    shutil.copytree(packaged_tiny("gqa", "q4f32"), bundle)
    reference = packaged_tiny("gqa", "f32")
    result = json.loads(ok("eval", bundle, "--reference", reference, "--window", "16", "--max-windows", "2",
                           "--json").stdout)
    quality = json.loads((bundle / "quality.json").read_text())
    m = load(bundle)
    assert quality["manifest_sha256"] == m.sha256
    assert quality["perplexity"] == result["rows"][0]["perplexity"] and quality["kl"] == result["rows"][0]["kl"]

    reg = tmp_path / "registry"
    r = ok("registry", "publish", bundle, "--to", reg, "--id", "tiny", "--json")
    assert json.loads(r.stdout)["unlisted_files"] == []  # quality.json goes into the card, not the version folder
    card = json.loads((reg / "index.json").read_text())["models"]["tiny"]["versions"]["1"]["card"]
    assert card["quality"]["perplexity"] == quality["perplexity"] and card["quality"]["kl"] == quality["kl"]
    assert card["quality"]["reference"] == reference.name and card["quality"]["tokens"] == 30
    assert (card["architecture"], card["hf_architecture"], card["parameters"]) == \
        ("llama", "LlamaForCausalLM", m.model.parameters)
    assert (card["format"], card["bits_per_weight"]) == ("q4f32", m.quantization.bits_per_weight)
    assert card["source"] == {"kind": "safetensors", "name": m.model.source.name, "sha256": m.model.source.sha256}
    assert card["manifest_sha256"] == m.sha256 and "license" in card
    assert not (reg / "models" / "tiny" / "1" / "quality.json").exists()

    shown = ok("registry", "show", "tiny@1", "-r", reg).stdout
    assert f"perplexity {quality['perplexity']:.3f}" in shown and m.model.source.sha256 in shown
    assert json.loads(ok("registry", "show", "tiny@1", "-r", reg, "--json").stdout)["versions"][0]["card"] == card

    # a quality record of another manifest (the bundle was re-packaged) is not carried into a card
    other = packaged_tiny("gqa", "q8f16")
    stale = tmp_path / "stale"
    shutil.copytree(other, stale)
    shutil.copy(bundle / "quality.json", stale / "quality.json")
    ok("registry", "publish", stale, "--to", reg, "--id", "tiny")
    card2 = json.loads((reg / "index.json").read_text())["models"]["tiny"]["versions"]["2"]["card"]
    assert card2["quality"] is None and card2["format"] == "q8f16"
    assert "not measured" in ok("registry", "show", "tiny@2", "-r", reg).stdout
