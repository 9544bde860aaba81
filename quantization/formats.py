"""Weight formats: how a float32 matrix [rows, cols] becomes typed parts, and back.

The exact byte layout of every format is specified in docs/formats.md; this module is
its executable form. Two layers, kept apart so each can be tested on its own:

- quantize / dequantize: floats <-> integer codes plus per-group scales (the maths);
- pack / unpack: integer codes <-> little-endian u32 words (the bits). Exact inverses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bundle_contract.errors import UserError

PART_ALIGN = 256  # every part starts at a multiple of this inside its shard stream
ENCODE_BLOCK_ELEMENTS = 1 << 21  # quantize this many elements at a time


class FormatError(UserError, ValueError):
    """An unknown weight format, or data that does not fit one."""


@dataclass(frozen=True)
class PartSpec:
    name: str
    dtype: str  # "u32" | "f16" | "f32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * NUMPY_DTYPES[self.dtype].itemsize


NUMPY_DTYPES = {"u32": np.dtype("<u4"), "f16": np.dtype("<f2"), "f32": np.dtype("<f4")}


# ---------------------------------------------------------------------------------------
# bits


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes [rows, cols] (< 2**bits) into u32 words [rows, cols*bits/32].

    Element i of a word (in column order) occupies bits [i*bits, (i+1)*bits)."""
    per_word = 32 // bits
    rows, cols = codes.shape
    if cols % per_word:
        raise FormatError(f"cols {cols} not a multiple of {per_word}")
    c = codes.astype(np.uint32).reshape(rows, cols // per_word, per_word)
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)[None, None, :]
    return np.bitwise_or.reduce(c << shifts, axis=2).astype("<u4")


def unpack_codes(words: np.ndarray, bits: int) -> np.ndarray:
    per_word = 32 // bits
    rows, nwords = words.shape
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)[None, None, :]
    mask = np.uint32((1 << bits) - 1)
    c = (words.astype(np.uint32)[:, :, None] >> shifts) & mask
    return c.reshape(rows, nwords * per_word).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# maths


def _groups(w: np.ndarray, group: int) -> np.ndarray:
    rows, cols = w.shape
    return w.reshape(rows, cols // group, group)


def _round_scale(s: np.ndarray, scale_dtype: str) -> np.ndarray:
    """Scales are stored in f16/f32; quantize with the stored value so decode matches."""
    return s.astype(NUMPY_DTYPES[scale_dtype]).astype(np.float32)


def quantize_symmetric(w: np.ndarray, bits: int, group: int, scale_dtype: str,
                       search: tuple[float, ...] = (1.0,)) -> tuple[np.ndarray, np.ndarray]:
    """w ~= (q - zero) * scale with zero = 2**(bits-1), q in [0, 2**bits).

    The base scale maps the group's largest-magnitude value onto -zero (so the full
    negative range is used, as llama.cpp's Q4_0 does); each factor in `search` shrinks it
    and the one with the lowest squared error per group wins."""
    zero = 1 << (bits - 1)
    qmax = (1 << bits) - 1
    g = _groups(w.astype(np.float32), group)
    idx = np.argmax(np.abs(g), axis=2)[..., None]
    signed_max = np.take_along_axis(g, idx, axis=2)[..., 0]
    base = signed_max / -zero
    best_q = best_s = best_err = None
    for factor in search:
        s = _round_scale(base * factor, scale_dtype)
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
        q = np.clip(np.rint(g * inv[..., None]) + zero, 0, qmax)
        err = np.sum(np.square((q - zero) * s[..., None] - g), axis=2)
        if best_err is None:
            best_q, best_s, best_err = q, s, err
        else:
            better = err < best_err
            best_q = np.where(better[..., None], q, best_q)
            best_s = np.where(better, s, best_s)
            best_err = np.minimum(err, best_err)
    return best_q.reshape(w.shape).astype(np.uint8), best_s


def dequantize_symmetric(q: np.ndarray, scales: np.ndarray, bits: int, group: int) -> np.ndarray:
    zero = 1 << (bits - 1)
    g = _groups(q.astype(np.float32) - zero, group)
    return (g * scales.astype(np.float32)[..., None]).reshape(q.shape)


ASYM_SHRINK = (0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.25, 0.3)


def quantize_asymmetric(w: np.ndarray, bits: int, group: int, scale_dtype: str, refine_steps: int = 2,
                        shrink: tuple[float, ...] = ASYM_SHRINK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """w ~= q * scale + min, q in [0, 2**bits).

    The clipping range [lo, hi] of each group is searched (shrinking min and max
    independently by the ASYM_SHRINK fractions of the range) for the lowest squared
    error, then (scale, min) are refit by least squares on the chosen codes."""
    qmax = (1 << bits) - 1
    g = _groups(w.astype(np.float32), group)
    gmin, gmax = g.min(axis=2), g.max(axis=2)
    span = gmax - gmin

    def codes_for(lo, s):
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s != 0)
        return np.clip(np.rint((g - lo[..., None]) * inv[..., None]), 0, qmax)

    best = None
    for a in shrink:
        for b in shrink:
            if a + b >= 0.9:
                continue
            lo = gmin + a * span
            s = (gmax - b * span - lo) / qmax
            q = codes_for(lo, s)
            err = np.sum(np.square(q * s[..., None] + lo[..., None] - g), axis=2)
            if best is None:
                best = [q, s, lo, err]
            else:
                better = err < best[3]
                best[0] = np.where(better[..., None], q, best[0])
                best[1] = np.where(better, s, best[1])
                best[2] = np.where(better, lo, best[2])
                best[3] = np.minimum(err, best[3])
    q, s, lo, err = best
    for _ in range(refine_steps):
        # least squares for g ~= s*q + m given q; keep the old fit where it was better
        n = g.shape[2]
        sq, sqq = q.sum(axis=2), np.square(q).sum(axis=2)
        sw, sqw = g.sum(axis=2), (q * g).sum(axis=2)
        det = n * sqq - sq * sq
        ok = det > 0
        ns = np.where(ok, (n * sqw - sq * sw) / np.where(ok, det, 1), s)
        nm = np.where(ok, (sw - ns * sq) / n, lo)
        nq = codes_for(nm, ns)
        nerr = np.sum(np.square(nq * ns[..., None] + nm[..., None] - g), axis=2)
        better = nerr < err
        q = np.where(better[..., None], nq, q)
        s, lo, err = np.where(better, ns, s), np.where(better, nm, lo), np.minimum(nerr, err)
    s, lo = _round_scale(s, scale_dtype), _round_scale(lo, scale_dtype)
    q = codes_for(lo, s)  # recompute with the stored (rounded) scale and min
    return q.reshape(w.shape).astype(np.uint8), s, lo


def dequantize_asymmetric(q, scales, mins, group):
    g = _groups(q.astype(np.float32), group)
    return (g * scales.astype(np.float32)[..., None] + mins.astype(np.float32)[..., None]).reshape(q.shape)


# ---------------------------------------------------------------------------------------
# formats


@dataclass(frozen=True)
class Format:
    """A storage format for a 2-D weight [rows, cols] (cols = the input dimension)."""

    name: str
    bits: int  # bits per code (32/16 for the float formats)
    group: int = 0  # codes per scale along cols; 0 for float formats
    scale_dtype: str = "f32"
    asymmetric: bool = False

    @property
    def quantized(self) -> bool:
        return self.group > 0

    def supports(self, shape: tuple[int, ...]) -> bool:
        if not self.quantized:
            return True
        return len(shape) == 2 and shape[1] % self.group == 0 and shape[1] % 32 == 0

    def bits_per_weight(self) -> float:
        if not self.quantized:
            return float(self.bits)
        scale_bits = 16 if self.scale_dtype == "f16" else 32
        return self.bits + scale_bits * (2 if self.asymmetric else 1) / self.group

    def parts(self, shape: tuple[int, ...]) -> list[PartSpec]:
        shape = tuple(int(d) for d in shape)
        if not self.quantized:
            return [PartSpec("weight", self.name, shape)]
        if not self.supports(shape):
            raise FormatError(f"{self.name} needs a 2-D shape with cols divisible by {self.group}, got {shape}")
        rows, cols = shape
        if self.bits == 3:
            specs = [PartSpec("qweight", "u32", (rows, cols // 16)), PartSpec("qhigh", "u32", (rows, cols // 32))]
        else:
            specs = [PartSpec("qweight", "u32", (rows, cols * self.bits // 32))]
        specs.append(PartSpec("scales", self.scale_dtype, (rows, cols // self.group)))
        if self.asymmetric:
            specs.append(PartSpec("mins", self.scale_dtype, (rows, cols // self.group)))
        return specs

    def encode(self, w: np.ndarray, method: str = "search") -> dict[str, np.ndarray]:
        """float array -> {part name: little-endian array}, in the order of parts().

        method "search" picks scales (and clipping ranges) that minimize the squared
        error; "rtn" is plain round-to-nearest from the group's min/max (a baseline)."""
        if not self.quantized:
            return {"weight": np.ascontiguousarray(w, dtype=NUMPY_DTYPES[self.name])}
        self.parts(w.shape)
        # Row blocks bound the quantizers' temporaries, whatever the tensor's size.
        step = max(1, ENCODE_BLOCK_ELEMENTS // w.shape[1])
        blocks = [self._encode_rows(w[r:r + step], method) for r in range(0, w.shape[0], step)]
        return {k: np.ascontiguousarray(np.concatenate([b[k] for b in blocks])) for k in blocks[0]}

    def _encode_rows(self, w: np.ndarray, method: str) -> dict[str, np.ndarray]:
        if method not in ("search", "rtn"):
            raise FormatError(f"unknown quantization method {method!r}; use search or rtn")
        if self.asymmetric:
            kw = dict(refine_steps=0, shrink=(0.0,)) if method == "rtn" else dict(shrink=self.shrink)
            return self.assemble(*quantize_asymmetric(w, self.bits, self.group, self.scale_dtype, **kw))
        search = (1.0,) if method == "rtn" else SYMMETRIC_SEARCH[self.bits]
        return self.assemble(*quantize_symmetric(w, self.bits, self.group, self.scale_dtype, search))

    @property
    def shrink(self) -> tuple[float, ...]:
        """Clipping fractions searched by the asymmetric quantizer: a wide search pays
        off at 2-3 bits, a narrow one is enough (and 4x faster) at 4 bits and up."""
        return ASYM_SHRINK if self.bits <= 3 else ASYM_SHRINK[:4]

    def assemble(self, q: np.ndarray, scales: np.ndarray, mins: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Codes [rows, cols] + per-group scales (and mins) -> the stored parts."""
        dt = NUMPY_DTYPES[self.scale_dtype]
        parts = {**self._pack(q), "scales": scales.astype(dt)}
        if self.asymmetric:
            parts["mins"] = mins.astype(dt)
        return parts

    def group_params(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Error-minimizing (scale, min) of each row of one group w [rows, group]."""
        if self.asymmetric:
            _, s, m = quantize_asymmetric(w, self.bits, self.group, self.scale_dtype, shrink=self.shrink)
            return s[:, 0], m[:, 0]
        _, s = quantize_symmetric(w, self.bits, self.group, self.scale_dtype, SYMMETRIC_SEARCH[self.bits])
        return s[:, 0], None

    def round_column(self, w: np.ndarray, scale: np.ndarray, mn: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Codes and dequantized values of one column given its group's parameters."""
        qmax = (1 << self.bits) - 1
        inv = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
        if self.asymmetric:
            q = np.clip(np.rint((w - mn) * inv), 0, qmax)
            return q, q * scale + mn
        zero = 1 << (self.bits - 1)
        q = np.clip(np.rint(w * inv) + zero, 0, qmax)
        return q, (q - zero) * scale

    def _pack(self, q: np.ndarray) -> dict[str, np.ndarray]:
        """3-bit codes are stored as two bit planes (low 2 bits, high bit): u32 words
        then hold a whole number of codes and kernels keep shifts and masks simple."""
        if self.bits == 3:
            return {"qweight": pack_codes(q & 3, 2), "qhigh": pack_codes(q >> 2, 1)}
        return {"qweight": pack_codes(q, self.bits)}

    def _unpack(self, parts: dict[str, np.ndarray], rows: int) -> np.ndarray:
        if self.bits == 3:
            return unpack_codes(parts["qweight"].reshape(rows, -1), 2) | \
                (unpack_codes(parts["qhigh"].reshape(rows, -1), 1) << 2)
        return unpack_codes(parts["qweight"].reshape(rows, -1), self.bits)

    def decode(self, parts: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        """{part name: array} -> float32 array of `shape`."""
        if not self.quantized:
            return parts["weight"].astype(np.float32).reshape(shape)
        q = self._unpack(parts, shape[0])
        scales = parts["scales"].reshape(shape[0], -1)
        if self.asymmetric:
            return dequantize_asymmetric(q, scales, parts["mins"].reshape(shape[0], -1), self.group)
        return dequantize_symmetric(q, scales, self.bits, self.group)

    def encode_bytes(self, w: np.ndarray, method: str = "search"
                     ) -> tuple[list[tuple[str, int, int]], list[memoryview]]:
        return self.lay_out(self.encode(w, method))

    @staticmethod
    def lay_out(parts: dict[str, np.ndarray]) -> tuple[list[tuple[str, int, int]], list[memoryview]]:
        """Lay parts out back to back, each at a PART_ALIGN offset.

        Returns ([(part, offset, nbytes)], pieces): the tensor's bytes are the
        concatenation of `pieces` (parts and zero padding, without copying the parts)."""
        layout, pieces, pos = [], [], 0
        for name, arr in parts.items():
            pad = -pos % PART_ALIGN
            if pad:
                pieces.append(memoryview(bytes(pad)))
                pos += pad
            data = memoryview(np.ascontiguousarray(arr)).cast("B")
            layout.append((name, pos, data.nbytes))
            pieces.append(data)
            pos += data.nbytes
        return layout, pieces

    def decode_bytes(self, blob: memoryview | bytes, layout: list[dict], shape) -> np.ndarray:
        specs = {p.name: p for p in self.parts(shape)}
        parts = {}
        for entry in layout:
            spec = specs[entry["name"]]
            raw = blob[entry["offset"]: entry["offset"] + entry["bytes"]]
            parts[spec.name] = np.frombuffer(raw, dtype=NUMPY_DTYPES[spec.dtype]).reshape(spec.shape)
        return self.decode(parts, shape)


SYMMETRIC_SEARCH = {8: (1.0,)}

FORMATS: dict[str, Format] = {
    "f32": Format("f32", 32),
    "f16": Format("f16", 16),
    "q8f16": Format("q8f16", 8, 32, "f16"),
    "q4f16": Format("q4f16", 4, 32, "f16", asymmetric=True),
    "q4f32": Format("q4f32", 4, 32, "f32", asymmetric=True),
    "q3f16": Format("q3f16", 3, 64, "f16", asymmetric=True),
    "q2f16": Format("q2f16", 2, 64, "f16", asymmetric=True),
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown weight format {name!r}; known: {', '.join(FORMATS)}") from None
