"""Property-based fuzzing (Hypothesis, fixed seeds) of every reader of outside input:
the manifest parser, the plan expression parser, the registry index parser, and the
safetensors and GGUF header readers. The property: any input gives a result or the
reader's one UserError subclass, never another exception. Inputs are random JSON and
bytes, and valid documents with a few fields replaced, deleted or bytes overwritten."""

from __future__ import annotations

import copy
import functools
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle_contract.manifest import ManifestError, parse, parse_json
from model_registry.errors import RegistryError
from model_registry.registry import Registry, parse_index
from packager.checkpoint import SafetensorsFile
from packager.errors import PackError
from packager.gguf_source import read_gguf
from packager.plan_expr import ExprError, evaluate
from test_registry_helpers import make_bundle

FUZZ = settings(derandomize=True, deadline=None, max_examples=300, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | \
    st.sampled_from([0, -1, 1, 2**53, 2**64, 10**400, "", "f16", "x" * 70, "0" * 64, float("inf")])
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) |
                           st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
# values that confuse a reader expecting another type (a list where a key is needed, ...)
tricky = st.sampled_from([["1"], [], {}, {"": None}, "x", "", -1, 0, 2**64, True, None, 1.5, "0" * 64, [[[]]]])
DELETE = object()


def paths(doc, prefix=()):
    """Every key path inside a JSON document."""
    out = [prefix] if prefix else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out += paths(value, (*prefix, key))
    return out


def documents(base):
    """Strategy: mostly `base` mutated, sometimes any JSON value."""
    m = mutated(base)
    return st.one_of(m, m, m, json_values)


def encoded(doc):
    """Strategy: mostly `doc` as JSON bytes, sometimes random bytes or JSON too deep or
    with a number too long to read."""
    text = json.dumps(doc, allow_nan=True).encode()
    return st.one_of(st.just(text), st.just(text), st.just(text), st.binary(max_size=64),
                     st.sampled_from([b"[" * 100_000 + b"]" * 100_000, b"9" * 5000,
                                      b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"]))


def mutated(base):
    """Strategy: a deep copy of `base` with 1-3 fields replaced by random JSON or deleted."""
    all_paths = paths(base)

    @st.composite
    def build(draw):
        doc = copy.deepcopy(base)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(all_paths))
            value = draw(tricky | json_values | st.just(DELETE))
            node = doc
            try:
                for key in path[:-1]:
                    node = node[key]
                if value is DELETE:
                    del node[path[-1]]
                else:  # a copy: sampled values are shared between examples
                    node[path[-1]] = copy.deepcopy(value)
            except (KeyError, IndexError, TypeError):  # an earlier mutation removed the place
                pass
        return doc

    return build()


@functools.cache
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="llmpack-fuzz-"))


@functools.cache
def valid_manifest() -> dict:
    return json.loads((make_bundle(workdir() / "bundle", "fuzz", (1, 2)) / "manifest.json").read_text())


@functools.cache
def valid_index() -> dict:
    reg = Registry(str(workdir() / "registry"))
    reg.publish(make_bundle(workdir() / "a", "model-a", (1,)))
    return json.loads((workdir() / "registry" / "index.json").read_text())


# ---------------------------------------------------------------------- manifest


@FUZZ
@given(st.data())
def test_manifest_parser(data):
    doc = data.draw(documents(valid_manifest()))
    try:
        parse(doc)
    except ManifestError:
        pass
    raw = data.draw(encoded(doc))
    try:
        parse_json(raw)
    except ManifestError:
        pass


# -------------------------------------------------------------- plan expressions


expr_tokens = st.sampled_from(["1", "0", "12", "seq", "past", "(", ")", ",", "+", "-", "*", "/", "%", "cdiv(",
                               "min(", "max(", "foo(", " ", "9" * 20, "$", "\x00"])


@FUZZ
@given(st.lists(expr_tokens, max_size=40).map("".join) | st.text(max_size=40) |
       st.sampled_from([1, 31, 32, 33, 400, 5000]).map(lambda n: "(" * n + "1" + ")" * n) |
       st.sampled_from([100, 127, 128, 2000]).map(lambda n: "1+" * n + "1") |
       st.sampled_from([1, 16, 17, 5000]).map(lambda n: "9" * n))
def test_plan_expression_parser(text):
    try:
        value = evaluate(text, {"seq": 7, "past": 3})
        assert isinstance(value, int) and value >= 0
    except ExprError:
        pass


# ------------------------------------------------------------------ registry index


@FUZZ
@given(st.data())
def test_registry_index_parser(data):
    raw = data.draw(encoded(data.draw(documents(valid_index()))))
    try:
        index = parse_index(raw, "index.json")
    except RegistryError:
        return
    for model in index["models"].values():  # what every command then relies on
        assert model["versions"][model["latest"]]["manifest_sha256"]


# ---------------------------------------------------------------- safetensors


SAFETENSORS_HEADER = {
    "__metadata__": {"format": "pt"},
    "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
    "b": {"dtype": "BF16", "shape": [4], "data_offsets": [16, 24]},
    "c": {"dtype": "F16", "shape": [0], "data_offsets": [24, 24]},
}


@FUZZ
@given(st.data())
def test_safetensors_header_reader(data):
    header = data.draw(documents(SAFETENSORS_HEADER))
    text = json.dumps(header, allow_nan=True).encode()
    raw = data.draw(st.just(struct.pack("<Q", len(text)) + text) | st.binary(max_size=40) |
                    st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=40)).map(
                        lambda t: struct.pack("<Q", t[0]) + t[1]))
    path = workdir() / "model.safetensors"
    path.write_bytes(raw + bytes(range(32)))
    try:
        st_file = SafetensorsFile(path)
    except PackError:
        return
    for name in st_file.entries:  # whatever the reader accepts, it can read
        assert st_file.read(name).dtype == np.float32


# ----------------------------------------------------------------------- GGUF


@functools.cache
def valid_gguf() -> bytes:
    import gguf

    path = workdir() / "valid.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_string("general.name", "fuzz")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b"])
    writer.add_tensor("token_embd.weight", np.ones((4, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.ones((8, 8), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@FUZZ
@given(st.data())
def test_gguf_header_reader(data):
    raw = bytearray(valid_gguf())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=8) |
                          st.sampled_from([b"\xff" * 8, b"\x00" * 8, struct.pack("<Q", 2**40)]))
        raw[at:at + len(patch)] = patch
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw))):]
    path = workdir() / "fuzz.gguf"
    path.write_bytes(bytes(raw))
    try:
        read_gguf(path)
    except PackError:
        pass
