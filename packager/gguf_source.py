"""GGUF files (llama.cpp's format) as a checkpoint: the config rebuilt from the metadata,
the tokenizer through transformers, and the tensors by Hugging Face name, dequantized
to float32 with the `gguf` package one at a time.

What llama.cpp's format encodes its own way lives here: its metadata key names
(COMMON_KEYS, and GGUF_KEYS per GGUF architecture with what is derived rather than
stated: Llama 3's RoPE scaling from `rope_freqs.weight`, Phi-3's LongRoPE factors from
tensors, Gemma's attention scale and layer pattern), its tensor types (SOURCE_TYPES) and
the q/k row order it writes for its interleaved RoPE. The architecture definitions
(packager.models) give the tensor names (TensorRow.gguf, gguf_rope_heads) and which GGUF
architectures they read (gguf_architectures).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import Checkpoint
from .errors import PackError
from .models import gguf_definition

# the tensor types read (GGML type names), checked against independent decoders in
# tests/test_gguf.py; the K-quants hold rows of 256-value super-blocks, the others 32-value blocks
SOURCE_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                "Q6_K")

# config.json key <- GGUF metadata key "<arch>.<key>". llama.cpp writes these under the
# same names for every architecture (its LLM_KV table); where two keys give the same
# config key, the first present wins.
COMMON_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "attention.key_length": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.sliding_window": "sliding_window",
}

TOKENIZER_KEYS = {  # config.json's token ids
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
}
# tokens llama.cpp also ends a generation at (Llama 3's <|eot_id|>, <|eom_id|>): more eos ids
END_OF_TURN_KEYS = ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")

# tensors a file of a GGUF architecture may hold besides the definition's: read into the config
CONFIG_TENSORS = {"llama": ("rope_freqs.weight",), "phi3": ("rope_factors_long.weight", "rope_factors_short.weight")}


class GGUFMetadata:
    """A GGUF file's metadata values and tensors, by name."""

    def __init__(self, reader, arch: str):
        self.reader = reader
        self.arch = arch
        self.tensors = {t.name: t for t in reader.tensors}

    def get(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            return default
        try:
            value = field.contents()
        except Exception:  # a damaged field
            return default
        if isinstance(value, float):  # stored as float32: the shortest decimal that gives that float32
            value = float(str(np.float32(value)))
        return value

    def tensor(self, name: str) -> np.ndarray | None:
        t = self.tensors.get(name)
        return None if t is None else dequantize(t, name)


def gguf_config(meta: GGUFMetadata, hf_arch: str, model_type: str) -> dict:
    """config.json (as transformers writes it) from a GGUF file's metadata."""
    extra, derive = GGUF_KEYS.get(meta.arch, ({}, None))
    config: dict = {"architectures": [hf_arch], "model_type": model_type}
    for key, hf_key in (*COMMON_KEYS.items(), *extra.items()):
        value = meta.get(f"{meta.arch}.{key}")
        if value is not None and hf_key not in config:
            config[hf_key] = value
    value_length = config.pop("_value_length", None)
    if value_length is not None and value_length != config.get("head_dim"):
        raise PackError(f"{meta.arch}.attention.value_length {value_length} differs from the key length "
                        f"{config.get('head_dim')}; such attention is not supported")
    embed = meta.tensors.get("token_embd.weight")
    config["vocab_size"] = int(embed.shape[-1]) if embed is not None else meta.get(f"{meta.arch}.vocab_size")
    config["tie_word_embeddings"] = "output.weight" not in meta.tensors  # llama.cpp writes the head only if untied
    for key, hf_key in TOKENIZER_KEYS.items():
        if meta.get(key) is not None:
            config[hf_key] = meta.get(key)
    ends = [meta.get(key) for key in END_OF_TURN_KEYS]
    ends = [t for t in ends if isinstance(t, int) and t != config.get("eos_token_id")]
    if ends:
        config["eos_token_id"] = list(dict.fromkeys([config["eos_token_id"], *ends] if "eos_token_id" in config
                                                    else ends))
    _rope_scaling(meta, config)
    if derive is not None:
        derive(meta, config)
    return config


def _rope_scaling(meta: GGUFMetadata, config: dict) -> None:
    """llama.cpp's rope.scaling.* keys -> rope_scaling; a type other than linear is passed
    on for the definition to refuse by name."""
    kind = meta.get(f"{meta.arch}.rope.scaling.type")
    if kind in (None, "none"):
        return
    scaling = {"rope_type": kind}
    if meta.get(f"{meta.arch}.rope.scaling.factor") is not None:
        scaling["factor"] = meta.get(f"{meta.arch}.rope.scaling.factor")
    if meta.get(f"{meta.arch}.rope.scaling.original_context_length") is not None:
        scaling["original_max_position_embeddings"] = meta.get(f"{meta.arch}.rope.scaling.original_context_length")
    config["rope_scaling"] = scaling


def _llama3_rope(meta: GGUFMetadata, config: dict) -> None:
    """Llama 3.1+ files carry their RoPE scaling as `rope_freqs.weight`: the divisor of each
    inverse frequency. The llama3 parameters are recovered from it (factor: the largest
    divisor; the band edges fitted on the divisors between 1 and the factor) and must give
    back every divisor, else the file is refused."""
    from .rope import Rope, rope_inv_freq

    divisors = meta.tensor("rope_freqs.weight")
    if divisors is None:
        return
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    divisors = divisors.reshape(-1).astype(np.float64)
    if divisors.size != head_dim // 2 or not np.all(np.isfinite(divisors)) or divisors.min() <= 0:
        raise PackError(f"rope_freqs.weight has {divisors.size} values, not head_dim / 2 = {head_dim // 2} "
                        "positive ones; the file is damaged")
    if np.allclose(divisors, 1.0):
        return
    theta = float(config.get("rope_theta", 10000.0))
    inv = rope_inv_freq(Rope("default", theta), head_dim).astype(np.float64)
    factor = float(np.float32(divisors.max()))
    candidates = [(1.0, 4.0, 8192)]  # Llama 3.1 / 3.2's values
    medium = (divisors > 1 + 1e-6) & (divisors < factor * (1 - 1e-6))
    if medium.sum() >= 2:  # smooth = (old / wavelen - low) / (high - low), with low = 1
        smooth = (1 / divisors[medium] - 1 / factor) / (1 - 1 / factor)
        a, b = np.polyfit(inv[medium] / (2 * math.pi), smooth, 1)
        if a > 0 and b < 0:
            candidates.append((1.0, float(round(1 - 1 / b, 4)), int(round(-a / b))))
    for low, high, old in candidates:
        rope = Rope("llama3", theta, factor, low, high, old)
        expected = rope_inv_freq(rope, head_dim).astype(np.float64)
        if np.allclose(inv / divisors, expected, rtol=1e-4, atol=0):
            config["rope_scaling"] = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                                      "high_freq_factor": high, "original_max_position_embeddings": old}
            return
    raise PackError("rope_freqs.weight does not describe a llama3 RoPE scaling; this file's RoPE is not supported")


# per GGUF architecture: the keys it adds to COMMON_KEYS, and a function that derives
# what is not a plain key (it gets the metadata, the tensors and the config so far)
GGUFDerive = Callable[[GGUFMetadata, dict], None]


def _gemma(meta: GGUFMetadata, config: dict) -> None:
    """llama.cpp writes no query_pre_attn_scalar: it scales q.k by head_dim ** -0.5, but for
    the 27B models (46 layers in Gemma 2, 62 in Gemma 3) by (hidden_size / heads) ** -0.5,
    as their configs say. Gemma 3's local layers keep RoPE base 10000 (llama.cpp's too).
    attention.sliding_window_pattern, where present, gives the local/global layers."""
    heads = config["num_attention_heads"]
    big = config["num_hidden_layers"] == {"gemma2": 46, "gemma3": 62}[meta.arch]
    config["query_pre_attn_scalar"] = config["hidden_size"] // heads if big else \
        config.get("head_dim") or config["hidden_size"] // heads
    # llama.cpp's fixed local/global patterns are transformers' defaults; a file may state one
    pattern, layers = meta.get(f"{meta.arch}.attention.sliding_window_pattern"), config["num_hidden_layers"]
    if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:  # every pattern-th layer global
        config["layer_types"] = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]
    elif pattern is not None:  # one flag per layer, true: sliding
        if not isinstance(pattern, list) or len(pattern) != layers or not all(isinstance(b, bool) for b in pattern):
            raise PackError(f"{meta.arch}.attention.sliding_window_pattern must be a layer count or one true/false "
                            f"per layer ({layers}); the file is damaged")
        config["layer_types"] = ["sliding_attention" if b else "full_attention" for b in pattern]


def _phi3(meta: GGUFMetadata, config: dict) -> None:
    """Phi-3's rotary share of a head, its original context, a sliding window of 0 meaning
    none (Phi-4), and LongRoPE's factor lists, which llama.cpp stores as tensors."""
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    rotary = meta.get("phi3.rope.dimension_count")
    if isinstance(rotary, int) and rotary != head_dim:
        config["partial_rotary_factor"] = rotary / head_dim
    if not config.get("sliding_window"):
        config["sliding_window"] = None
    original = meta.get("phi3.rope.scaling.original_context_length")
    if original is not None:
        config["original_max_position_embeddings"] = original
    factors = {key: meta.tensor(f"rope_factors_{key}.weight") for key in ("long", "short")}
    if any(f is not None for f in factors.values()):
        if any(f is None for f in factors.values()):
            raise PackError("the file has one of rope_factors_long.weight / rope_factors_short.weight but not the "
                            "other; LongRoPE needs both")
        config["rope_scaling"] = {"rope_type": "longrope", **{
            f"{key}_factor": [float(str(np.float32(v))) for v in f.reshape(-1)] for key, f in factors.items()}}


# the rotary dimension is the head size in the Llama-like files that predate attention.key_length
ROTARY_HEAD_DIM = {"rope.dimension_count": "head_dim"}
# Gemma's soft-caps; a head size of the values unlike the keys' is refused
GEMMA_KEYS = {"attention.value_length": "_value_length", "attn_logit_softcapping": "attn_logit_softcapping",
              "final_logit_softcapping": "final_logit_softcapping"}

GGUF_KEYS: dict[str, tuple[dict[str, str], GGUFDerive | None]] = {
    # Llama, and Mistral, which llama.cpp writes as "llama" and runs with full attention in
    # every layer (so does llmpack)
    "llama": (ROTARY_HEAD_DIM, _llama3_rope),
    "qwen2": ({}, None),
    "qwen3": ({"attention.value_length": "_value_length"}, None),
    "gemma2": (GEMMA_KEYS, _gemma),
    "gemma3": (GEMMA_KEYS, _gemma),
    "phi3": ({}, _phi3),
    # llama.cpp skips RoPE in every 4th layer, transformers' default no_rope_layer_interval
    "smollm3": (ROTARY_HEAD_DIM, None),
}

# ---------------------------------------------------------------------------------------
# tensors


def dequantize(t, name: str) -> np.ndarray:
    """A GGUF tensor (gguf's ReaderTensor) as float32 in llama.cpp's row-major order
    (shape: the GGUF dims reversed)."""
    from gguf import quants

    kind = t.tensor_type.name
    if kind not in SOURCE_TYPES:
        raise PackError(unsupported_type(name, kind))
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    if kind in ("F32", "F16"):
        w = np.asarray(t.data, dtype=np.float32)
    else:
        w = quants.dequantize(t.data, t.tensor_type)
    return w.reshape(shape).astype(np.float32, copy=False)


def unsupported_type(name: str, kind: str) -> str:
    return (f"tensor {name} is stored as {kind}, which llmpack does not read; supported source types: "
            f"{', '.join(SOURCE_TYPES)}. Use a GGUF file of one of these types, or the Hugging Face checkpoint")


class GGUFCheckpoint(Checkpoint):
    tensors: dict  # hf name -> (gguf ReaderTensor, its TensorRow)
    rope_permuted: dict[str, int]  # hf name -> head count, for the rows llama.cpp permuted for its RoPE

    def read(self, name: str) -> np.ndarray:
        t, _ = self.tensors[name]
        w = dequantize(t, t.name).reshape(self.shapes[name])
        # llama.cpp stores q/k rows permuted for its interleaved RoPE; undo it to get back
        # the Hugging Face (rotate_half) layout.
        if name in self.rope_permuted:
            w = _unpermute_rope(w, self.rope_permuted[name])
        return np.ascontiguousarray(w)


def _unpermute_rope(w: np.ndarray, heads: int) -> np.ndarray:
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _reader(src: Path):
    """gguf's reader of `src`; a tensor whose type the package does not know, or whose rows
    do not fill whole blocks of its type, is named in the PackError."""
    from gguf import GGUFReader

    class Reader(GGUFReader):
        def _build_tensors(self, start_offs, fields):
            try:
                super()._build_tensors(start_offs, fields)
            except ValueError:
                _diagnose(src.name, fields)
                raise

    try:
        with np.errstate(all="ignore"):  # a damaged file's offsets overflow: the reader then fails, and we say so
            return Reader(src, "r")
    except PackError:
        raise
    except Exception as e:  # the gguf package raises bare ValueError/IndexError/struct errors on bad files
        raise PackError(f"{src.name}: not a readable GGUF file ({type(e).__name__}: {e}); re-download it") from None


def _diagnose(file: str, fields) -> None:
    """PackError for the first tensor description gguf's reader cannot take; nothing if none."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    for field in fields:
        try:
            _, name_data, _, dims, raw_dtype, _ = field.parts
            name = bytes(name_data).decode("utf-8", "replace")[:100]
            type_id, dims = int(raw_dtype[0]), [int(d) for d in dims]
        except (ValueError, TypeError, IndexError):
            continue
        try:
            kind = GGMLQuantizationType(type_id)
        except ValueError:
            raise PackError(f"{file}: tensor {name} has GGML type {type_id}, which the gguf package does not know; "
                            f"supported source types: {', '.join(SOURCE_TYPES)}") from None
        block = GGML_QUANT_SIZES.get(kind, (1, 1))[0]
        if dims and dims[0] % block:
            raise PackError(f"{file}: tensor {name} has rows of {dims[0]} values, not a multiple of the "
                            f"{kind.name} block size {block}; the file is damaged or was written wrongly")


def read_gguf(src: Path):
    """A GGUF file's reader, architecture definition, GGUF architecture and tensors by
    Hugging Face name ({name: (tensor, its row)}); PackError when the file is unreadable,
    unsupported, or holds tensors the definition does not know (never silently dropped)."""
    reader = _reader(src)
    try:
        arch_field = reader.fields.get("general.architecture")
        gguf_arch = arch_field.contents() if arch_field else None
    except Exception as e:
        raise PackError(f"{src.name}: not a readable GGUF file ({type(e).__name__}: {e}); re-download it") from None
    try:
        parts = int(reader.fields["split.count"].contents()) if "split.count" in reader.fields else 1
    except (TypeError, ValueError, IndexError):
        parts = 1
    if parts > 1:
        raise PackError(f"{src.name} is part 1 of a GGUF split into {parts} files; merge them into one first "
                        "(llama.cpp's llama-gguf-split --merge)")
    arch = gguf_definition(gguf_arch if isinstance(gguf_arch, str) else None, src.name)
    tensors, unknown = {}, []
    for t in reader.tensors:
        found = arch.from_gguf(t.name)
        if found is not None:
            tensors[found[0]] = (t, found[1])
        elif t.name not in CONFIG_TENSORS.get(gguf_arch, ()):
            unknown.append(t.name)
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise PackError(f"{src.name}: tensors {', '.join(unknown[:3])}{more} are not part of the {arch.name} "
                        "architecture as llmpack runs it (experts, a vision tower, an unsupported variant?); "
                        "refusing rather than ignoring them")
    return reader, arch, gguf_arch, tensors


def open_gguf(src: Path) -> GGUFCheckpoint:
    reader, arch, gguf_arch, found = read_gguf(src)
    for _, (t, _) in sorted(found.items()):
        if t.tensor_type.name not in SOURCE_TYPES:
            raise PackError(f"{src.name}: {unsupported_type(t.name, t.tensor_type.name)}")
    hf_arch = arch.gguf_architectures[gguf_arch]
    model_type = next(mt for mt, a in arch.model_types.items() if a == hf_arch)
    meta = GGUFMetadata(reader, gguf_arch)
    config = gguf_config(meta, hf_arch, model_type)
    tmp = tempfile.TemporaryDirectory(prefix="llmpack-gguf-")
    try:
        _save_tokenizer(src, Path(tmp.name))
    except BaseException:
        tmp.cleanup()
        raise
    tensors, shapes, permuted = {}, {}, {}
    for hf, (t, row) in found.items():
        tensors[hf] = (t, row)
        shapes[hf] = tuple(int(d) for d in reversed(t.shape.tolist()))
        if row.gguf_rope_heads:
            permuted[hf] = int(config.get(row.gguf_rope_heads) or config["num_attention_heads"])
    lic = meta.get("general.license")
    ck = GGUFCheckpoint(kind="gguf", name=src.name, config=config, tokenizer_dir=Path(tmp.name),
                        generation={}, license=lic if isinstance(lic, str) else None, shapes=shapes,
                        source_files=[src], _cleanup=tmp)
    ck.tensors = tensors
    ck.rope_permuted = permuted
    return ck


def _save_tokenizer(src: Path, out: Path) -> None:
    """tokenizer.json and tokenizer_config.json from the file's tokenizer.* metadata, by
    transformers' GGUF support."""
    import logging

    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    except Exception as e:
        # AutoTokenizer first builds a config, for the GGUF architectures transformers knows;
        # the fast tokenizer class reads the tokenizer.* metadata of any
        try:
            tok = PreTrainedTokenizerFast.from_pretrained(src.parent, gguf_file=src.name)
        except Exception:
            raise PackError(f"{src.name}: transformers could not read its tokenizer "
                            f"({' '.join(str(e).split())[:300]})") from None
    tok.save_pretrained(out)
    if not (out / "tokenizer.json").exists():
        raise PackError(f"{src.name}: transformers gave no fast tokenizer for it")
