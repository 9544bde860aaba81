"""GGUF input: tiny checkpoints written by the test as llama.cpp writes them
(tests/gguf_files.py), in every source type and for every GGUF architecture, packaged by
`llmpack package`'s code path, give the weights of the Hugging Face checkpoint they were
written from (within the type's precision) and its config; the gguf package's decoders
agree bit for bit with independent ones; bad files are refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from bundle_contract.manifest import load
from checkpoints import build_tiny_checkpoint
from gguf_files import (
    BLOCK_DECODERS,
    GGUF_WRITERS,
    HALF_OFFSETS,
    decode,
    hf_tensors,
    llama_cpp_permute,
    write_gguf,
)
from packager.bundle import package_model
from packager.errors import PackError
from packager.gguf_source import SOURCE_TYPES
from packager.models import config_from_manifest, definition, resolve_config
from packager.reference import load_weights

ROOT = Path(__file__).resolve().parent.parent

# dims whose rows fill the K-quants' 256-value super-blocks
DIMS = dict(hidden_size=256, intermediate_size=512, head_dim=64)

# the largest relative RMS error of a tensor in each type, as measured with these weights
# (Gaussian, std 0.15) and tests/gguf_files.py's encoders, plus 25 %: F32 is exact
MAX_ERROR = {"F32": 0.0, "F16": 2.6e-4, "BF16": 2.1e-3, "Q8_0": 6.7e-3, "Q6_K": 0.024, "Q5_0": 0.054,
             "Q5_1": 0.048, "Q5_K": 0.048, "Q4_0": 0.108, "Q4_1": 0.098, "Q4_K": 0.099, "Q3_K": 0.23, "Q2_K": 0.41}

# (GGUF architecture, tiny checkpoint variant, extra dims): every type is tried on the first,
# every architecture once in one type
TYPE_CASE = ("llama", "llama3", {})
ARCH_CASES = {
    "qwen2-untied": ("qwen2", "qwen2-untied", {}, "Q4_K"),
    "qwen3": ("qwen3", "qwen3", {"head_dim": 128}, "Q6_K"),  # head_dim 128, not hidden / heads = 64
    "mistral": ("llama", "mistral", {}, "Q8_0"),  # llama.cpp writes Mistral as "llama"
    # Phi-4-mini's shape: 3/4 of each 64-value head rotated (24 factors), LongRoPE from factor tensors
    "phi3-longrope": ("phi3", "phi3-longrope", {"rope_scaling": {
        "type": "longrope", "short_factor": [round(1.0 + 0.05 * i, 3) for i in range(24)],
        "long_factor": [1.0 + 0.5 * i for i in range(24)]}}, "Q5_0"),
    "phi3": ("phi3", "phi3", {}, "Q4_1"),  # untied, a sliding window as long as the context
    # llama.cpp skips RoPE in every 4th layer (transformers' default interval); q/k permuted as Llama's
    "smollm3": ("smollm3", "smollm3", {"no_rope_layer_interval": 4, "num_hidden_layers": 4}, "BF16"),
    # llama.cpp's q.k scale is head_dim ** -0.5 (but in the 27B models): query_pre_attn_scalar = head_dim
    "gemma2": ("gemma2", "gemma2", {"query_pre_attn_scalar": 64}, "Q5_K"),
    # 6 layers in llama.cpp's fixed pattern (5 sliding, 1 global); linear RoPE scaling on the global one
    "gemma3": ("gemma3", "gemma3", {"head_dim": 64, "query_pre_attn_scalar": 64, "num_hidden_layers": 6,
                                    "layer_types": None}, "Q4_0"),
    # layers local, local, global, local: stated per layer in attention.sliding_window_pattern
    "gemma3-layer-types": ("gemma3", "gemma3", {"head_dim": 64, "query_pre_attn_scalar": 64}, "Q3_K"),
}


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    cache = {}

    def get(variant: str, extra: dict) -> Path:
        key = (variant, json.dumps(extra, sort_keys=True))
        if key not in cache:
            cache[key] = build_tiny_checkpoint(tmp_path_factory.mktemp(variant), variant, **{**DIMS, **extra})
        return cache[key]

    return get


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))


def package_and_compare(tmp_path: Path, hf_dir: Path, arch: str, kind: str) -> dict:
    """Write `hf_dir` as a GGUF file of `kind`, package it in f32, and check the bundle
    against the file's bytes (decoded independently: exact) and against the Hugging Face
    weights and config (within the type's error)."""
    gguf_path = tmp_path / f"tiny-{kind}.gguf"
    # general.name after the checkpoint ("mistral0 tiny": transformers takes Mistral's tokenizer path)
    written = write_gguf(gguf_path, hf_dir, arch, kind, name=f"{hf_dir.name} tiny")
    package_model(gguf_path, tmp_path / "bundle", quant="f32")
    manifest = load(tmp_path / "bundle").data
    got = load_weights(tmp_path / "bundle", manifest)
    hf = hf_tensors(hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    assert set(got) == set(hf)
    spec, packaged = GGUF_WRITERS[arch], config_from_manifest(manifest)
    offsets = {t.name: getattr(t, "hf_offset", 0.0)  # Gemma's norms: stored as 1 + w (as llama.cpp does)
               for t in definition(packaged.architecture).tensors(packaged)}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[spec.model_arch], config["num_hidden_layers"])
    errors = {}
    for name, w in got.items():
        gname = names.get_name(name, try_suffixes=(".weight", ".bias"))
        from_file = decode(written[gname], kind if hf[name].ndim == 2 else "F32", hf[name].shape)
        if spec.permute_qk and gname.endswith(("attn_q.weight", "attn_k.weight")):  # undo the file's permutation
            heads = config["num_attention_heads" if "attn_q" in gname else "num_key_value_heads"]
            assert np.array_equal(llama_cpp_permute(w, heads), from_file), name
        else:
            assert np.array_equal(w, from_file), name
        errors[name] = rel_rms(w, hf[name] + np.float32(offsets[name]))
    assert max(errors.values()) <= MAX_ERROR[kind], (kind, max(errors.items(), key=lambda kv: kv[1]))
    assert packaged.to_json() == resolve_config(config, packaged.context_window).to_json()
    return {"manifest": manifest, "errors": errors, "config": packaged}


@pytest.mark.parametrize("kind", SOURCE_TYPES)
def test_source_type(kind, hf_checkpoint, tmp_path):
    arch, variant, extra = TYPE_CASE
    out = package_and_compare(tmp_path, hf_checkpoint(variant, extra), arch, kind)
    assert out["config"].rope.type == "llama3"  # recovered from rope_freqs.weight
    source = out["manifest"]["model"]["source"]
    assert (source["kind"], source["name"]) == ("gguf", f"tiny-{kind}.gguf")


@pytest.mark.parametrize("case", list(ARCH_CASES))
def test_architecture(case, hf_checkpoint, tmp_path):
    arch, variant, extra, kind = ARCH_CASES[case]
    hf_dir = hf_checkpoint(variant, extra)
    out = package_and_compare(tmp_path, hf_dir, arch, kind)
    hf_arch = json.loads((hf_dir / "config.json").read_text())["architectures"][0]
    assert out["config"].hf_architecture == ("LlamaForCausalLM" if case == "mistral" else hf_arch)
    if case == "qwen3":
        assert out["config"].head_dim == 128
    if case == "gemma3-layer-types":
        assert out["config"].layer_types == ("sliding_attention", "sliding_attention", "full_attention",
                                             "sliding_attention")
    # the tokenizer the bundle carries encodes as the checkpoint's own
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    text = "def loads(s, *, cls=None):\n    return json.dumps({'a': [1, 2.5]})  # <|im_end|>"
    ours = Tokenizer.from_file(str(tmp_path / "bundle" / "tokenizer.json")).encode(text, add_special_tokens=False)
    assert ours.ids == AutoTokenizer.from_pretrained(hf_dir)(text, add_special_tokens=False)["input_ids"]
    assert out["manifest"]["tokenizer"]["chat_template"] == AutoTokenizer.from_pretrained(hf_dir).chat_template


@pytest.mark.parametrize("case", ["mistral", "qwen2-untied"])
def test_logits_match_transformers_reading_the_gguf(case, hf_checkpoint, tmp_path):
    """transformers loads the same GGUF file itself (its own dequantization, q/k un-permuting
    and config mapping, where that mapping is complete): the packaged f32 bundle's prefill
    logits equal its."""
    import torch
    from transformers import AutoModelForCausalLM

    from packager.reference import ReferenceModel

    arch, variant, extra, kind = ARCH_CASES[case]
    package_and_compare(tmp_path, hf_checkpoint(variant, extra), arch, kind)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=f"tiny-{kind}.gguf", dtype=torch.float32).eval()
    prompt = np.random.default_rng(1).integers(0, 320, size=19).tolist()
    with torch.no_grad():
        expected = model(torch.tensor([prompt])).logits[0].numpy()
    got = ReferenceModel(tmp_path / "bundle").prefill(prompt)
    assert got.shape == expected.shape == (19, 320)
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) < 1e-4


@pytest.mark.parametrize("kind", list(BLOCK_DECODERS))
def test_gguf_decoders_match_independent_ones(kind):
    """The gguf package's decoder of each block type against tests/gguf_files.py's (written
    from llama.cpp's reference C), on random blocks: bit for bit."""
    qtype = gguf.GGMLQuantizationType[kind]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(len(kind) * 31 + block)
    blocks = rng.integers(0, 256, size=(96, size), dtype=np.uint8)
    for at in HALF_OFFSETS[kind]:  # finite f16 scales
        blocks[:, at:at + 2] = np.ascontiguousarray(rng.normal(0, 0.05, (96, 1)).astype(np.float16)).view(np.uint8)
    ours = BLOCK_DECODERS[kind](blocks)
    theirs = gguf.quants.dequantize(blocks, qtype)
    assert ours.shape == theirs.shape == (96, block)
    np.testing.assert_array_equal(theirs, ours)


# ---------------------------------------------------------------------------------------
# refused files


def run_package(src: Path, out: Path):
    return subprocess.run([sys.executable, "-m", "packager.cli", "package", str(src), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_refused(r, message: str, out: Path):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def _rewrite(path: Path, edit, extra: dict | None = None) -> None:
    """Rewrite a GGUF file's tensors through gguf's reader/writer with `edit(name, data,
    type) -> (name, data, type) | None` (None drops the tensor), metadata kept, `extra`
    metadata ({key: (value, GGUFValueType)}) added."""
    reader = gguf.GGUFReader(path)
    tmp = path.with_suffix(".new")
    w = gguf.GGUFWriter(str(tmp), reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), kind, sub_type=sub)
    for key, (value, kind) in (extra or {}).items():
        w.add_key_value(key, value, kind)
    for t in reader.tensors:
        edited = edit(t.name, np.array(t.data), t.tensor_type)
        if edited is not None:
            name, data, qtype = edited
            raw = None if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else qtype
            w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)


def test_unsupported_type_refused(hf_checkpoint, tmp_path):
    src = tmp_path / "m.gguf"
    write_gguf(src, hf_checkpoint(*TYPE_CASE[1:]), "llama", "Q8_0")

    def as_iq4_nl(name, data, qtype):  # IQ4_NL blocks: 32 values in 18 bytes, like Q4_0
        if name == "blk.1.ffn_up.weight":
            rows = data.shape[0]
            return name, np.zeros((rows, data.shape[1] // 34 * 18), np.uint8), gguf.GGMLQuantizationType.IQ4_NL
        return name, data, qtype

    _rewrite(src, as_iq4_nl)
    assert_refused(run_package(src, tmp_path / "out"), "tensor blk.1.ffn_up.weight is stored as IQ4_NL, which "
                   "llmpack does not read; supported source types: F32, F16, BF16, Q8_0", tmp_path / "out")


def test_partial_block_rows_refused(hf_checkpoint, tmp_path):
    """A K-quant tensor whose rows (dims[0]) do not fill whole 256-value super-blocks."""
    src = tmp_path / "m.gguf"
    write_gguf(src, hf_checkpoint(*TYPE_CASE[1:]), "llama", "Q4_K")
    raw = bytearray(src.read_bytes())
    name = b"blk.0.ffn_down.weight"
    at = raw.index(name) + len(name)  # then: n_dims u32, dims u64[n_dims]
    assert int.from_bytes(raw[at + 4:at + 12], "little") == 512
    raw[at + 4:at + 12] = (384).to_bytes(8, "little")
    src.write_bytes(bytes(raw))
    with pytest.raises(PackError, match="tensor blk.0.ffn_down.weight has rows of 384 values, not a multiple of the "
                       "Q4_K block size 256"):
        package_model(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_tensor_refused(hf_checkpoint, tmp_path):
    """A tensor the architecture does not have (here: an expert) is not silently dropped."""
    src = tmp_path / "m.gguf"
    write_gguf(src, hf_checkpoint(*TYPE_CASE[1:]), "llama", "F16")

    def add_expert(name, data, qtype):
        return ("blk.0.ffn_gate_exps.weight" if name == "blk.0.ffn_gate.weight" else name), data, qtype

    _rewrite(src, add_expert)
    with pytest.raises(PackError, match="tensors blk.0.ffn_gate_exps.weight are not part of the llama architecture"):
        package_model(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rope_freqs_not_llama3_refused(hf_checkpoint, tmp_path):
    """rope_freqs.weight that no llama3 rope_scaling gives is refused, not approximated."""
    src = tmp_path / "m.gguf"
    write_gguf(src, hf_checkpoint(*TYPE_CASE[1:]), "llama", "F16")

    def scramble(name, data, qtype):
        return name, (data[::-1].copy() if name == "rope_freqs.weight" else data), qtype

    _rewrite(src, scramble)
    with pytest.raises(PackError, match="rope_freqs.weight does not describe a llama3 RoPE scaling"):
        package_model(src, tmp_path / "out")


def test_split_file_refused(hf_checkpoint, tmp_path):
    """The first file of a split GGUF (llama-gguf-split) holds only some tensors."""
    src = tmp_path / "m-00001-of-00002.gguf"
    write_gguf(src, hf_checkpoint(*TYPE_CASE[1:]), "llama", "F16")
    reader = gguf.GGUFReader(src)
    assert "split.count" not in reader.fields
    _rewrite(src, lambda name, data, qtype: (name, data, qtype),
             extra={"split.no": (0, gguf.GGUFValueType.UINT16), "split.count": (2, gguf.GGUFValueType.UINT16)})
    with pytest.raises(PackError, match="is part 1 of a GGUF split into 2 files"):
        package_model(src, tmp_path / "out")


def test_end_of_turn_tokens_end_generation(hf_checkpoint, tmp_path):
    """tokenizer.ggml.eot_token_id (Llama 3's <|eot_id|>) ends a generation, as in llama.cpp."""
    src = tmp_path / "m.gguf"
    write_gguf(src, hf_checkpoint(*TYPE_CASE[1:]), "llama", "F16")
    _rewrite(src, lambda name, data, qtype: (name, data, qtype),
             extra={"tokenizer.ggml.eot_token_id": (1, gguf.GGUFValueType.UINT32)})
    package_model(src, tmp_path / "bundle", quant="f32")
    generation = load(tmp_path / "bundle").data["generation"]
    assert generation["eos_token_ids"] == [2, 1]
