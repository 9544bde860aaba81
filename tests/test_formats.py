"""Weight formats: bit packing is exact, quantization error is bounded, layouts match the spec."""

import numpy as np
import pytest

from quantization.formats import FORMATS, PART_ALIGN, pack_codes, unpack_codes
from quantization.policy import SCHEMES, choose_format

# relative RMS error bounds on Gaussian matrices, as stated in docs/formats.md
ERROR_BOUND = {"f32": 0.0, "f16": 1e-3, "q8f16": 0.01, "q4f16": 0.1, "q4f32": 0.1, "q3f16": 0.2, "q2f16": 0.35}


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_unpack_are_inverses(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=(7, 128), dtype=np.uint8)
    words = pack_codes(codes, bits)
    assert words.dtype == np.dtype("<u4") and words.shape == (7, 128 * bits // 32)
    assert np.array_equal(unpack_codes(words, bits), codes)
    words2 = rng.integers(0, 2**32, size=(3, 5), dtype=np.uint64).astype(np.uint32)
    assert np.array_equal(pack_codes(unpack_codes(words2, bits), bits), words2)


def test_pack_order_is_low_bits_first():
    codes = np.arange(8, dtype=np.uint8)[None, :]  # columns 0..7 of one q4 word
    assert pack_codes(codes, 4)[0, 0] == 0x76543210
    assert pack_codes(np.array([[1, 2, 3, 0] * 4], np.uint8), 2)[0, 0] == int("00111001" * 4, 2)


@pytest.mark.parametrize("name", list(FORMATS))
def test_quantize_error_bound(name):
    fmt = FORMATS[name]
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((96, 256)) * 0.02).astype(np.float32)
    parts = fmt.encode(w)
    assert list(parts) == [p.name for p in fmt.parts(w.shape)]
    for spec in fmt.parts(w.shape):
        assert parts[spec.name].shape == spec.shape and parts[spec.name].nbytes == spec.nbytes
    d = fmt.decode(parts, w.shape)
    rel = np.sqrt(np.mean((d - w) ** 2) / np.mean(w ** 2))
    assert rel <= ERROR_BOUND[name], rel
    if fmt.quantized:  # values already on the grid survive a second quantization (almost) unchanged
        again = fmt.decode(fmt.encode(d), w.shape)
        assert np.sqrt(np.mean((again - d) ** 2) / np.mean(d ** 2)) < 2e-3


@pytest.mark.parametrize("name", list(FORMATS))
def test_bytes_layout_roundtrip(name):
    fmt = FORMATS[name]
    w = np.random.default_rng(2).standard_normal((10, 128)).astype(np.float32)
    layout, pieces = fmt.encode_bytes(w)
    blob = b"".join(bytes(p) for p in pieces)
    assert all(off % PART_ALIGN == 0 for _, off, _ in layout)
    assert layout[-1][1] + layout[-1][2] == len(blob)
    entries = [{"name": n, "offset": o, "bytes": b} for n, o, b in layout]
    assert np.array_equal(fmt.decode_bytes(blob, entries, w.shape), fmt.decode(fmt.encode(w), w.shape))


def test_q4_value_matches_spec_example():
    """docs/formats.md: value of column 5 = ((word >> 20) & 0xF) * f16(scale) + f16(min)."""
    fmt = FORMATS["q4f16"]
    w = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    parts = fmt.encode(w)
    word, scale, mn = int(parts["qweight"][1, 0]), parts["scales"][1, 0], parts["mins"][1, 0]
    expected = np.float32((word >> 20) & 0xF) * np.float32(scale) + np.float32(mn)
    assert fmt.decode(parts, w.shape)[1, 5] == expected


def test_q8_value_matches_spec():
    fmt = FORMATS["q8f16"]
    w = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
    parts = fmt.encode(w)
    word, scale = int(parts["qweight"][0, 1]), parts["scales"][0, 0]
    assert fmt.decode(parts, w.shape)[0, 6] == np.float32(((word >> 16) & 0xFF) - 128) * np.float32(scale)


def test_q2_search_beats_min_max():
    """The clipping search must do better than plain min/max asymmetric rounding."""
    from quantization.formats import dequantize_asymmetric, quantize_asymmetric
    w = np.random.default_rng(4).standard_normal((64, 256)).astype(np.float32)
    q, s, m = quantize_asymmetric(w, 2, 64, "f32")
    err_search = np.mean((dequantize_asymmetric(q, s, m, 64) - w) ** 2)
    g = w.reshape(64, 4, 64)
    lo, hi = g.min(axis=2), g.max(axis=2)
    sc = (hi - lo) / 3
    codes = np.clip(np.rint((g - lo[..., None]) / sc[..., None]), 0, 3)
    err_minmax = np.mean((codes * sc[..., None] + lo[..., None] - g) ** 2)
    assert err_search < 0.8 * err_minmax


def test_policy():
    q2 = SCHEMES["q2f16"]
    assert choose_format(q2, (64,), "vector").name == "f32"
    assert choose_format(q2, (320, 64), "embedding").name == "q4f16"
    assert choose_format(q2, (320, 64), "head").name == "q8f16"
    assert choose_format(q2, (128, 64), "matrix").name == "q2f16"
    assert choose_format(q2, (128, 48), "matrix").name == "f16"  # 48 not a multiple of 64
    assert choose_format(SCHEMES["q4f32"], (128, 40), "matrix").name == "f32"
