"""`llmpack package` on hostile checkpoints and destinations: every malformed header,
index, tokenizer or generation config and every unusable --out (under /proc or /sys,
below a file, a full or read-only disk) is one line and exit 1, and leaves nothing."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import pytest

import test_registry_helpers
from packager import shards as shards_mod
from test_registry_helpers import ROOT, cli, open_filling_up_after

tiny_disk = test_registry_helpers.tiny_disk  # the fixture, used by this module's tests

K, V = "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"


def rewrite_header(d, edit):
    """Replace model.safetensors' JSON header by edit(header) (a str is written as is)."""
    path = d / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    changed = edit(header)
    text = changed if isinstance(changed, str) else json.dumps(header if changed is None else changed)
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + raw[8 + n:])


def entry(name, **change):
    def edit(h):
        h[name].update(change)
        for k, v in change.items():
            if v is None:
                del h[name][k]
    return edit


def edit_json(file, change):
    def edit(d):
        path = d / file
        data = json.loads(path.read_text()) if path.exists() else {}
        result = change(data)
        path.write_text(result if isinstance(result, str) else json.dumps(data if result is None else result))
    return edit


def header(edit):
    return lambda d: rewrite_header(d, edit)


def weight_map(value):
    def edit(d):
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {K: value}}))
    return edit


def generation(**change):
    return edit_json("generation_config.json", lambda g: g.update(change))


def config(**change):
    return edit_json("config.json", lambda c: c.update(change))


CASES = {
    "header is a list": (header(lambda h: [1, 2]), "its header is not a JSON object"),
    "header nested deeply": (header(lambda h: "[" * 50_000 + "]" * 50_000), "nested too deeply"),
    "entry is not an object": (header(lambda h: h.update({K: 5})), "is not described by an object"),
    "no data_offsets": (header(entry(K, data_offsets=None)), "has no data_offsets"),
    "negative data_offsets": (header(entry(K, data_offsets=[-8, 8])), "has no data_offsets"),
    "reversed data_offsets": (header(lambda h: h[K].update(data_offsets=h[K]["data_offsets"][::-1])),
                              "has no data_offsets"),
    "one data_offset": (header(entry(K, data_offsets=[0])), "has no data_offsets"),
    "no dtype": (header(entry(K, dtype=None)), "has no dtype string"),
    "dtype is a list": (header(entry(K, dtype=["F32"])), "has no dtype string"),
    "shape is a string": (header(entry(K, shape="32x64")), "has no shape of whole numbers"),
    "range smaller than the shape": (header(entry(K, shape=[64, 64])), "F32 of shape [64, 64] takes 16384"),
    "overlapping tensors": (header(lambda h: h[V].update(data_offsets=h[K]["data_offsets"])),
                            f"tensor {V!r} overlaps tensor {K!r}"),
    "weight_map value is a number": (weight_map(5), "weight_map['model.layers.0.self_attn.k_proj.weight'] must be"),
    "weight_map value leaves the folder": (weight_map("../../etc/passwd"), "must be the name of a .safetensors file"),
    "tokenizer_config is not JSON": (lambda d: (d / "tokenizer_config.json").write_text("{oops"),
                                     "tokenizer_config.json is not valid JSON"),
    "tokenizer_config is a list": (edit_json("tokenizer_config.json", lambda t: [t]),
                                   "tokenizer_config.json must hold a JSON object"),
    "chat templates without template": (
        edit_json("tokenizer_config.json", lambda t: t.update(chat_template=[{"name": "default"}])),
        "chat_template must be a string or a list"),
    "bos_token is a number": (edit_json("tokenizer_config.json", lambda t: t.update(bos_token=7)),
                              "bos_token must be a string"),
    "temperature is a word": (generation(temperature="hot"),
                              'generation_config.json: temperature must be a number >= 0, not "hot"'),
    "max_new_tokens is a list": (generation(max_new_tokens=[1]), "max_new_tokens must be a whole number >= 0"),
    "eos is a string": (generation(eos_token_id="2"), "eos_token_id must be a token id or a list"),
    "rope_theta is a word": (config(rope_theta="x"), 'config.json: rope_theta must be a number, not "x"'),
    "no positions": (config(max_position_embeddings=0), "max_position_embeddings is 0; a model needs at least 16"),
}


def assert_one_line(r, message):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr, r.stderr


def nothing_left(out):
    assert not out.exists()
    if out.parent.is_dir():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture
def checkpoint(tiny_llama, tmp_path):
    return shutil.copytree(tiny_llama("gqa"), tmp_path / "ck")


@pytest.mark.parametrize("edit, message", CASES.values(), ids=CASES.keys())
def test_malformed_checkpoint(checkpoint, tmp_path, edit, message):
    edit(checkpoint)
    out = tmp_path / "out" / "bundle"
    r = cli("package", checkpoint, "--out", out)
    assert_one_line(r, message)
    assert "--context-window" not in r.stderr
    nothing_left(out)


def test_malformed_checkpoint_through_the_real_cli(checkpoint, tmp_path):
    CASES["overlapping tensors"][0](checkpoint)
    out = tmp_path / "bundle"
    r = subprocess.run([sys.executable, "-m", "packager.cli", "package", str(checkpoint), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_one_line(r, "overlaps tensor")
    nothing_left(out)


@pytest.mark.parametrize("where, message", [
    ("/proc/llmpack-test/bundle", "cannot create a folder in /proc/llmpack-test"),
    ("/sys/llmpack-test/bundle", "no permission to write to /sys/llmpack-test"),
    ("{file}/bundle", "cannot create a folder in {file}"),
    ("{file}/deeper/bundle", "cannot create a folder in {file}/deeper"),
])
def test_unusable_out(tiny_llama, tmp_path, where, message):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    out = where.format(file=a_file)
    assert_one_line(cli("package", tiny_llama("gqa"), "--out", out), message.format(file=a_file))
    assert a_file.read_text() == "not a folder"


def test_full_disk(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(shards_mod, "open", open_filling_up_after(20_000), raising=False)
    out = tmp_path / "bundle"
    assert_one_line(cli("package", tiny_llama("gqa"), "--out", out),
                    f"no space left on the device of {tmp_path}: needs about 1 MB")
    nothing_left(out)


def test_real_full_and_read_only_disk(tiny_llama, tiny_disk):
    """A 1 MiB tmpfs: the shards do not fit; read-only: nothing can be made."""
    (tiny_disk / "filler").write_bytes(b"\0" * (900 << 10))
    out = tiny_disk / "bundle"
    assert_one_line(cli("package", tiny_llama("gqa"), "--out", out, "--quant", "f32"),
                    f"no space left on the device of {tiny_disk}: needs about 1 MB")
    nothing_left(out)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    assert_one_line(cli("package", tiny_llama("gqa"), "--out", out), "read-only file system")
