"""Tiny GGUF files written the way llama.cpp's converter (convert_hf_to_gguf.py) writes a
Hugging Face checkpoint, and test-only numpy codecs of llama.cpp's tensor types.

The writer is a table per GGUF architecture (GGUF_WRITERS): the metadata keys it writes
(through gguf.GGUFWriter's own methods, so the key names are the gguf package's, not
llmpack's), whether llama.cpp permutes q/k rows for its RoPE, and the tensor names from
gguf's TensorNameMap. Adding an architecture is one entry.

The codecs: encoders for the K-quants (the gguf package quantizes only the 32-value block
types; these are plain scale/min fits, not llama.cpp's optimizing ones, which is all a
test needs) and decoders of every source type written from llama.cpp's reference C
(ggml-quants.c, dequantize_row_*), independently of the gguf package, to check its decoders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

QK_K = 256

# ---------------------------------------------------------------------------------------
# decoders: (n_blocks, type_size) uint8 -> (n_blocks, block_size) float32, with the
# operations in the order of llama.cpp's dequantize_row_* (so results are bit-identical)


def _half(b: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(b[:, at:at + 2]).view(np.float16).astype(np.float32)  # (n, 1)


def _lo(x):
    return (x & 0xF).astype(np.int32)


def _hi(x):
    return (x >> 4).astype(np.int32)


def decode_q8_0(b):
    return b[:, 2:34].view(np.int8).astype(np.float32) * _half(b, 0)


def decode_q4_0(b):
    d, qs = _half(b, 0), b[:, 2:18]
    return np.concatenate([(_lo(qs) - 8).astype(np.float32) * d, (_hi(qs) - 8).astype(np.float32) * d], axis=1)


def decode_q4_1(b):
    d, m, qs = _half(b, 0), _half(b, 2), b[:, 4:20]
    return np.concatenate([_lo(qs).astype(np.float32) * d + m, _hi(qs).astype(np.float32) * d + m], axis=1)


def _q5_high(qh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fifth bits of elements j and j + 16 (j < 16) from the 32-bit qh, as 0 or 16."""
    h = np.ascontiguousarray(qh).view("<u4").astype(np.int64)  # (n, 1)
    j = np.arange(16)
    return ((h >> j) << 4) & 0x10, (h >> (j + 12)) & 0x10


def decode_q5_0(b):
    d, (h0, h1), qs = _half(b, 0), _q5_high(b[:, 2:6]), b[:, 6:22]
    return np.concatenate([((_lo(qs) | h0) - 16).astype(np.float32) * d,
                           ((_hi(qs) | h1) - 16).astype(np.float32) * d], axis=1)


def decode_q5_1(b):
    d, m, (h0, h1), qs = _half(b, 0), _half(b, 2), _q5_high(b[:, 4:8]), b[:, 8:24]
    return np.concatenate([(_lo(qs) | h0).astype(np.float32) * d + m,
                           (_hi(qs) | h1).astype(np.float32) * d + m], axis=1)


def decode_q2_k(b):
    scales, qs, d, dmin = b[:, :16], b[:, 16:80], _half(b, 80), _half(b, 82)
    y = np.empty((len(b), QK_K), np.float32)
    i = 0
    for n in range(2):  # 128 values each
        q = qs[:, 32 * n:32 * n + 32]
        for j in range(4):  # shift 2j
            for half in range(2):  # 16 values, one scale byte each
                sc = scales[:, i:i + 1]
                i += 1
                dl, ml = d * _lo(sc).astype(np.float32), dmin * _hi(sc).astype(np.float32)
                v = ((q[:, 16 * half:16 * half + 16] >> (2 * j)) & 3).astype(np.float32)
                at = 128 * n + 32 * j + 16 * half
                y[:, at:at + 16] = dl * v - ml
    return y


def _q3_k_scales(s: np.ndarray) -> np.ndarray:
    """The 16 six-bit scales (minus 32) of a Q3_K block from its 12 packed bytes."""
    out = np.empty((len(s), 16), np.int32)
    for i in range(4):
        out[:, i] = (s[:, i] & 0xF) | ((s[:, 8 + i] & 3) << 4)
        out[:, 4 + i] = (s[:, 4 + i] & 0xF) | (((s[:, 8 + i] >> 2) & 3) << 4)
        out[:, 8 + i] = (s[:, i] >> 4) | (((s[:, 8 + i] >> 4) & 3) << 4)
        out[:, 12 + i] = (s[:, 4 + i] >> 4) | (((s[:, 8 + i] >> 6) & 3) << 4)
    return out - 32


def decode_q3_k(b):
    hmask, qs, scales, d = b[:, :32], b[:, 32:96], _q3_k_scales(b[:, 96:108]), _half(b, 108)
    y = np.empty((len(b), QK_K), np.float32)
    i, m = 0, 0
    for n in range(2):
        q = qs[:, 32 * n:32 * n + 32]
        for j in range(4):
            for half in range(2):
                dl = d * scales[:, i:i + 1].astype(np.float32)
                i += 1
                sl = slice(16 * half, 16 * half + 16)
                low = ((q[:, sl] >> (2 * j)) & 3).astype(np.int32)
                v = low - np.where((hmask[:, sl] >> m) & 1, 0, 4)
                at = 128 * n + 32 * j + 16 * half
                y[:, at:at + 16] = dl * v.astype(np.float32)
            m += 1
    return y


def _k4_scale_min(s: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """get_scale_min_k4: the six-bit scale and min of sub-block j from the 12 packed bytes."""
    if j < 4:
        return (s[:, j:j + 1] & 63).astype(np.float32), (s[:, j + 4:j + 5] & 63).astype(np.float32)
    sc = (s[:, j + 4:j + 5] & 0xF) | ((s[:, j - 4:j - 3] >> 6) << 4)
    mn = (s[:, j + 4:j + 5] >> 4) | ((s[:, j:j + 1] >> 6) << 4)
    return sc.astype(np.float32), mn.astype(np.float32)


def decode_q4_k(b):
    d, dmin, s, qs = _half(b, 0), _half(b, 2), b[:, 4:16], b[:, 16:144]
    y = np.empty((len(b), QK_K), np.float32)
    for c in range(4):  # 64 values: the low then the high nibbles of 32 bytes
        q = qs[:, 32 * c:32 * c + 32]
        for half, v in enumerate((_lo(q), _hi(q))):
            sc, mn = _k4_scale_min(s, 2 * c + half)
            y[:, 64 * c + 32 * half:64 * c + 32 * half + 32] = (d * sc) * v.astype(np.float32) - dmin * mn
    return y


def decode_q5_k(b):
    d, dmin, s, qh, qs = _half(b, 0), _half(b, 2), b[:, 4:16], b[:, 16:48], b[:, 48:176]
    y = np.empty((len(b), QK_K), np.float32)
    for c in range(4):
        q = qs[:, 32 * c:32 * c + 32]
        for half, v in enumerate((_lo(q), _hi(q))):
            sc, mn = _k4_scale_min(s, 2 * c + half)
            v = v + np.where(qh & (1 << (2 * c + half)), 16, 0)
            y[:, 64 * c + 32 * half:64 * c + 32 * half + 32] = (d * sc) * v.astype(np.float32) - dmin * mn
    return y


def decode_q6_k(b):
    ql, qh, sc, d = b[:, :128], b[:, 128:192], b[:, 192:208].view(np.int8), _half(b, 208)
    y = np.empty((len(b), QK_K), np.float32)
    for n in range(2):
        lo, h, s = ql[:, 64 * n:64 * n + 64], qh[:, 32 * n:32 * n + 32], sc[:, 8 * n:8 * n + 8]
        for half in range(2):  # l in [0, 16) and [16, 32): scale index is = l / 16
            sl = slice(16 * half, 16 * half + 16)
            qs = ((_lo(lo[:, sl]) | (((h[:, sl] >> 0) & 3) << 4)) - 32,
                  (_lo(lo[:, 32:][:, sl]) | (((h[:, sl] >> 2) & 3) << 4)) - 32,
                  (_hi(lo[:, sl]) | (((h[:, sl] >> 4) & 3) << 4)) - 32,
                  (_hi(lo[:, 32:][:, sl]) | (((h[:, sl] >> 6) & 3) << 4)) - 32)
            for k, q in enumerate(qs):
                at = 128 * n + 32 * k + 16 * half
                y[:, at:at + 16] = d * s[:, half + 2 * k:half + 2 * k + 1].astype(np.float32) * q.astype(np.float32)
    return y


BLOCK_DECODERS = {"Q8_0": decode_q8_0, "Q4_0": decode_q4_0, "Q4_1": decode_q4_1, "Q5_0": decode_q5_0,
                  "Q5_1": decode_q5_1, "Q2_K": decode_q2_k, "Q3_K": decode_q3_k, "Q4_K": decode_q4_k,
                  "Q5_K": decode_q5_k, "Q6_K": decode_q6_k}
HALF_OFFSETS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q2_K": (80, 82),
                "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}  # where each block's f16s are


def decode(data: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw tensor bytes of a GGML type -> float32 of `shape`, by the decoders above."""
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if kind == "F32":
        return raw.view("<f4").reshape(shape).copy()
    if kind == "F16":
        return raw.view("<f2").astype(np.float32).reshape(shape)
    if kind == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kind]]
    return BLOCK_DECODERS[kind](raw.reshape(-1, size)).reshape(shape)


# ---------------------------------------------------------------------------------------
# K-quant encoders: (n_blocks, 256) float32 -> (n_blocks, type_size) uint8


def _f16(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, np.float16).reshape(-1, 1)).view(np.uint8)


def _codes_for(v: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """A super-block scale (rounded to f16) and `top`-level codes of non-negative v (n, k)."""
    d = (v.max(axis=1) / top).astype(np.float16).astype(np.float32)
    safe = np.where(d > 0, d, 1)[:, None]
    return d, np.where(d[:, None] > 0, np.rint(v / safe), 0).clip(0, top).astype(np.uint8)


def _round(x: np.ndarray, step: np.ndarray, lo: int, hi: int, offset=0.0) -> np.ndarray:
    safe = np.where(step > 0, step, 1)
    return np.where(step > 0, np.rint((x + offset) / safe), 0).clip(lo, hi).astype(np.int32)


def _asymmetric(x: np.ndarray, levels: int, top: int):
    """Scale/min sub-block codes (scale and min of each sub-block as `top`-level codes of a
    super-block d and dmin) and value codes 0..levels, llama.cpp's form y = d*sc*q - dmin*m."""
    lo, hi = np.minimum(x.min(axis=2), 0), x.max(axis=2)
    d, ls = _codes_for((hi - lo) / levels, top)
    dmin, lm = _codes_for(-lo, top)
    step = (d[:, None] * ls)[..., None]
    q = _round(x, step, 0, levels, (dmin[:, None] * lm)[..., None])
    return d, dmin, ls, lm, q


def _k4_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    out = np.empty((len(ls), 12), np.uint8)
    out[:, 0:4] = (ls[:, 0:4] & 63) | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (lm[:, 0:4] & 63) | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def encode_q4_k(x):
    d, dmin, ls, lm, q = _asymmetric(x.reshape(-1, 8, 32), 15, 63)
    q = q.astype(np.uint8)
    qs = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)
    return np.concatenate([_f16(d), _f16(dmin), _k4_scales(ls, lm), qs], axis=1)


def encode_q5_k(x):
    d, dmin, ls, lm, q = _asymmetric(x.reshape(-1, 8, 32), 31, 63)
    q = q.astype(np.uint8)
    qs = ((q[:, 0::2] & 0xF) | ((q[:, 1::2] & 0xF) << 4)).reshape(-1, 128)
    qh = np.zeros((len(q), 32), np.uint8)
    for j in range(8):
        qh |= ((q[:, j] >> 4) & 1) << j
    return np.concatenate([_f16(d), _f16(dmin), _k4_scales(ls, lm), qh, qs], axis=1)


def _two_bit_planes(low: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K qs: element 128n + 32j + l in bits 2j of byte 32n + l."""
    low = low.reshape(-1, 2, 4, 32).astype(np.uint8)
    qs = np.zeros((len(low), 2, 32), np.uint8)
    for j in range(4):
        qs |= low[:, :, j] << (2 * j)
    return qs.reshape(-1, 64)


def encode_q2_k(x):
    d, dmin, ls, lm, q = _asymmetric(x.reshape(-1, 16, 16), 3, 15)
    return np.concatenate([ls | (lm << 4), _two_bit_planes(q), _f16(d), _f16(dmin)], axis=1)


def encode_q3_k(x):
    x = x.reshape(-1, 16, 16)
    d, ls = _codes_for(np.abs(x).max(axis=2) / 4, 31)
    q = _round(x, (d[:, None] * ls)[..., None], -4, 3) + 4  # 0..7
    flat = q.reshape(-1, QK_K)
    hmask = np.zeros((len(flat), 32), np.uint8)
    for k in range(8):  # bit k of hmask[l]: element 32k + l
        hmask |= ((flat[:, 32 * k:32 * k + 32] >> 2) & 1).astype(np.uint8) << k
    s = ls.astype(np.uint8) + 32
    scales = np.empty((len(s), 12), np.uint8)
    scales[:, :8] = (s[:, :8] & 0xF) | ((s[:, 8:] & 0xF) << 4)
    scales[:, 8:] = (s[:, 0:4] >> 4) | ((s[:, 4:8] >> 4) << 2) | ((s[:, 8:12] >> 4) << 4) | ((s[:, 12:] >> 4) << 6)
    return np.concatenate([hmask, _two_bit_planes(flat & 3), scales, _f16(d)], axis=1)


def encode_q6_k(x):
    x = x.reshape(-1, 16, 16)
    d, sc = _codes_for(np.abs(x).max(axis=2) / 31, 127)
    u = (_round(x, (d[:, None] * sc)[..., None], -32, 31) + 32).reshape(-1, 2, 128).astype(np.uint8)
    ql = np.concatenate([(u[..., 0:32] & 0xF) | ((u[..., 64:96] & 0xF) << 4),
                         (u[..., 32:64] & 0xF) | ((u[..., 96:128] & 0xF) << 4)], axis=2).reshape(-1, 128)
    qh = ((u[..., 0:32] >> 4) | ((u[..., 32:64] >> 4) << 2) | ((u[..., 64:96] >> 4) << 4)
          | ((u[..., 96:128] >> 4) << 6)).reshape(-1, 64)
    return np.concatenate([ql, qh, sc.view(np.uint8), _f16(d)], axis=1)


K_ENCODERS = {"Q2_K": encode_q2_k, "Q3_K": encode_q3_k, "Q4_K": encode_q4_k, "Q5_K": encode_q5_k,
              "Q6_K": encode_q6_k}


def encode(w: np.ndarray, kind: str) -> np.ndarray:
    """A float32 matrix as the bytes (or the float array) gguf.GGUFWriter takes for `kind`."""
    import gguf

    if kind in K_ENCODERS:
        rows, cols = w.shape
        return K_ENCODERS[kind](w.reshape(-1, QK_K).astype(np.float32)).reshape(rows, -1)
    return gguf.quants.quantize(w.astype(np.float32), gguf.GGMLQuantizationType[kind])


# ---------------------------------------------------------------------------------------
# the writer

# config.json key -> the gguf.GGUFWriter method llama.cpp's converter writes it with
COMMON_METADATA = (
    ("max_position_embeddings", "add_context_length"), ("hidden_size", "add_embedding_length"),
    ("intermediate_size", "add_feed_forward_length"), ("num_hidden_layers", "add_block_count"),
    ("num_attention_heads", "add_head_count"), ("num_key_value_heads", "add_head_count_kv"),
    ("rms_norm_eps", "add_layer_norm_rms_eps"), ("rope_theta", "add_rope_freq_base"),
)


@dataclass(frozen=True)
class GGUFArch:
    model_arch: str  # gguf.MODEL_ARCH member
    metadata: tuple[tuple[str, str], ...] = ()  # besides COMMON_METADATA
    permute_qk: bool = False  # llama.cpp permutes q/k rows for its interleaved RoPE
    norm_offset: float = 0.0  # llama.cpp writes the norms as weight + norm_offset (Gemma: 1 + w)
    # what else the converter writes: f(writer, config) -> extra tensors {gguf name: float32}
    extra: Callable[[object, dict], dict[str, np.ndarray]] | None = None


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(config: dict) -> np.ndarray:
    """convert_hf_to_gguf.py's rope_freqs.weight for a llama3 rope_scaling."""
    rs, dim = config["rope_scaling"], config["head_dim"]
    base, factor = config["rope_theta"], rs["factor"]
    low, high, old = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0), \
        rs.get("original_max_position_embeddings", 8192)
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


def _llama_extra(w, config: dict) -> dict[str, np.ndarray]:
    if config["rope_scaling"].get("rope_type", config["rope_scaling"].get("type")) == "llama3":
        return {"rope_freqs.weight": llama3_rope_factors(config)}
    return {}


def _gemma_extra(w, config: dict) -> dict[str, np.ndarray]:
    """Gemma 3's linear scaling of the global layers' RoPE (Gemma3Model.set_gguf_parameters),
    and the local/global layers as one flag per layer where they are not the fixed
    pattern (every 6th layer global) llama.cpp assumes."""
    import gguf

    types = config.get("layer_types")
    if types and types != ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(len(types))]:
        w.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    rs = config["rope_scaling"]
    if rs.get("rope_type", rs.get("type")) == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rs["factor"])
    return {}


def _phi3_extra(w, config: dict) -> dict[str, np.ndarray]:
    """Phi3MiniModel: the rotary dimensions, the original context, the sliding window (0:
    none) and LongRoPE's factor lists as tensors with their attention factor."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    w.add_rope_dimension_count(int(config.get("partial_rotary_factor", 1.0) * hidden) // heads)
    orig = config.get("original_max_position_embeddings") or config["max_position_embeddings"]
    w.add_rope_scaling_orig_ctx_len(orig)
    w.add_sliding_window(config.get("sliding_window") or 0)
    rs = config["rope_scaling"]
    if rs.get("rope_type", rs.get("type")) != "longrope":
        return {}
    scale = config["max_position_embeddings"] / orig
    w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0)
    return {"rope_factors_long.weight": np.array(rs["long_factor"], np.float32),
            "rope_factors_short.weight": np.array(rs["short_factor"], np.float32)}


HEAD_DIMS = (("head_dim", "add_key_length"), ("head_dim", "add_value_length"))
GGUF_WRITERS = {
    "llama": GGUFArch("LLAMA", (("head_dim", "add_rope_dimension_count"), ("vocab_size", "add_vocab_size")),
                      permute_qk=True, extra=_llama_extra),
    "qwen2": GGUFArch("QWEN2"),
    "qwen3": GGUFArch("QWEN3", HEAD_DIMS),
    "gemma2": GGUFArch("GEMMA2", (*HEAD_DIMS, ("sliding_window", "add_sliding_window"),
                                  ("attn_logit_softcapping", "add_attn_logit_softcapping"),
                                  ("final_logit_softcapping", "add_final_logit_softcapping")), norm_offset=1.0),
    "gemma3": GGUFArch("GEMMA3", (*HEAD_DIMS, ("sliding_window", "add_sliding_window")), norm_offset=1.0,
                       extra=_gemma_extra),
    "phi3": GGUFArch("PHI3", extra=_phi3_extra),
    "smollm3": GGUFArch("SMOLLM3", (("head_dim", "add_rope_dimension_count"), ("vocab_size", "add_vocab_size")),
                        permute_qk=True),
}


def hf_tensors(hf_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for k, v in load_file(hf_dir / "model.safetensors").items()}


def write_gguf(path: Path, hf_dir: Path, arch: str, kind: str, name: str = "tiny") -> dict[str, np.ndarray]:
    """Write the checkpoint at `hf_dir` as llama.cpp would, its matrices in type `kind`
    (vectors stay F32, as llama.cpp keeps them). Returns {gguf name: the bytes written}."""
    import gguf

    spec = GGUF_WRITERS[arch]
    config = json.loads((hf_dir / "config.json").read_text())
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    rope = config.get("rope_parameters") or {**(config.get("rope_scaling") or {}),  # transformers 5, or 4
                                             "rope_theta": config.get("rope_theta", 10000.0)}
    rope = rope.get("full_attention", rope)  # Gemma 3: the global layers' (the local ones' are llama.cpp's default)
    config["rope_theta"], config["rope_scaling"] = rope["rope_theta"], rope
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    for key, method in (*COMMON_METADATA, *spec.metadata):
        getattr(w, method)(config[key])
    _write_tokenizer(w, hf_dir, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[spec.model_arch], config["num_hidden_layers"])
    written = {}
    for hf_name, t in hf_tensors(hf_dir).items():
        gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gname, hf_name
        if spec.permute_qk and gname.endswith(("attn_q.weight", "attn_k.weight")):
            heads = config["num_attention_heads" if "attn_q" in gname else "num_key_value_heads"]
            t = llama_cpp_permute(t, heads)
        if spec.norm_offset and gname.endswith("norm.weight"):
            t = t + np.float32(spec.norm_offset)
        if t.ndim == 1 or kind == "F32":
            data, raw = t.astype(np.float32), None
        else:
            data, raw = encode(t, kind), gguf.GGMLQuantizationType[kind]
        w.add_tensor(gname, data, raw_dtype=raw)
        written[gname] = data
    for gname, t in (spec.extra(w, config) if spec.extra else {}).items():
        w.add_tensor(gname, t)
        written[gname] = t
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


def _write_tokenizer(w, hf_dir: Path, config: dict) -> None:
    """A byte-level BPE tokenizer's tokenizer.ggml.* fields (as llama.cpp writes a "gpt2" one)."""
    tj = json.loads((hf_dir / "tokenizer.json").read_text())
    vocab = dict(tj["model"]["vocab"])
    special = {t["content"] for t in tj["added_tokens"] if t.get("special")}
    for t in tj["added_tokens"]:
        vocab[t["content"]] = t["id"]
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert len(tokens) == config["vocab_size"] and [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    tc = json.loads((hf_dir / "tokenizer_config.json").read_text())
    template = tc.get("chat_template")
    if template is None and (hf_dir / "chat_template.jinja").exists():
        template = (hf_dir / "chat_template.jinja").read_text()
    w.add_chat_template(template)
