"""A numpy executor of a bundle: the oracle for the GPU and Wasm kernels.

It reads the bundle only (manifest + shards), dequantizes every weight to float32 with
quantization.formats, and runs the Llama forward pass with a KV cache: `prefill` for a
chunk of tokens after what is cached, `decode` for one more token.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from quantization.formats import get_format

from .bundle import BUNDLE_FORMAT, BUNDLE_VERSION
from .errors import PackError
from .rope import rope_cos_sin, rope_inv_freq
from .shards import read_tensor_bytes


def load_manifest(bundle: Path) -> dict:
    path = Path(bundle) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise PackError(f"{bundle} is not a bundle: manifest.json not found") from None
    except json.JSONDecodeError as e:
        raise PackError(f"{path}: invalid JSON ({e.msg})") from None
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("version") != BUNDLE_VERSION:
        raise PackError(f"{path}: not an {BUNDLE_FORMAT} v{BUNDLE_VERSION} manifest "
                        f"(format={manifest.get('format')!r}, version={manifest.get('version')!r})")
    return manifest


def verify_shards(bundle: Path, manifest: dict) -> None:
    for s in manifest["shards"]:
        h = hashlib.sha256()
        with open(Path(bundle) / s["file"], "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != s["sha256"]:
            raise PackError(f"shard {s['file']} is corrupt (sha256 mismatch)")


def load_weights(bundle: Path, manifest: dict) -> dict[str, np.ndarray]:
    """Every tensor of the bundle, dequantized to float32 in its logical shape."""
    out = {}
    for t in manifest["tensors"]:
        blob = read_tensor_bytes(Path(bundle), manifest["shards"], t)
        shape = tuple(t["shape"]) if len(t["shape"]) == 2 else (1, t["shape"][0])
        out[t["name"]] = get_format(t["format"]).decode_bytes(blob, t["parts"], shape).reshape(t["shape"])
    return out


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [heads, seq, head_dim]; rotate_half convention (first half pairs with second)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[None] + rotated * sin[None]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, past_len: int) -> np.ndarray:
    """Causal grouped-query attention. q [heads, n, d]; k, v [kv_heads, past_len + n, d]."""
    heads, n, d = q.shape
    group = heads // k.shape[0]
    k = np.repeat(k, group, axis=0)
    v = np.repeat(v, group, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d))
    total = k.shape[1]
    mask = np.arange(total)[None, :] > (past_len + np.arange(n))[:, None]
    scores = np.where(mask[None], np.float32(-np.inf), scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v


class ReferenceModel:
    """model = ReferenceModel(bundle); model.prefill(ids) -> logits [n, vocab]; model.decode(id)."""

    def __init__(self, bundle: Path, verify: bool = True):
        self.bundle = Path(bundle)
        self.manifest = load_manifest(self.bundle)
        if verify:
            verify_shards(self.bundle, self.manifest)
        self.cfg = self.manifest["model"]["config"]
        self.w = load_weights(self.bundle, self.manifest)
        self.context_window = self.manifest["memory"]["context_window"]
        self.inv_freq = rope_inv_freq(self.cfg["rope"], self.cfg["head_dim"])
        self.reset()

    def reset(self) -> None:
        c = self.cfg
        shape = (c["num_hidden_layers"], c["num_key_value_heads"], self.context_window, c["head_dim"])
        self.k_cache = np.zeros(shape, np.float32)
        self.v_cache = np.zeros(shape, np.float32)
        self.past_len = 0

    def prefill(self, tokens) -> np.ndarray:
        """Run `tokens` after the cached ones; return their logits [len(tokens), vocab]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        c, w, past, n = self.cfg, self.w, self.past_len, len(tokens)
        if past + n > self.context_window:
            raise PackError(f"context window of {self.context_window} tokens exceeded ({past} + {n})")
        if n == 0 or tokens.min() < 0 or tokens.max() >= c["vocab_size"]:
            raise PackError("token ids must be a non-empty list within the vocabulary")
        heads, kv_heads, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        cos, sin = rope_cos_sin(self.inv_freq, np.arange(past, past + n))
        h = w["model.embed_tokens.weight"][tokens]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            x = rms_norm(h, w[p + "input_layernorm.weight"], c["rms_norm_eps"])
            q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(n, heads, d).transpose(1, 0, 2)
            k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(n, kv_heads, d).transpose(1, 0, 2)
            v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(n, kv_heads, d).transpose(1, 0, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            self.k_cache[i, :, past:past + n] = k
            self.v_cache[i, :, past:past + n] = v
            o = attention(q, self.k_cache[i, :, :past + n], self.v_cache[i, :, :past + n], past)
            h = h + o.transpose(1, 0, 2).reshape(n, heads * d) @ w[p + "self_attn.o_proj.weight"].T
            x = rms_norm(h, w[p + "post_attention_layernorm.weight"], c["rms_norm_eps"])
            gate = x @ w[p + "mlp.gate_proj.weight"].T
            up = x @ w[p + "mlp.up_proj.weight"].T
            h = h + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
        h = rms_norm(h, w["model.norm.weight"], c["rms_norm_eps"])
        head = w["model.embed_tokens.weight"] if c["tie_word_embeddings"] else w["lm_head.weight"]
        self.past_len += n
        return h @ head.T

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_ids=()) -> list[int]:
        """Greedy continuation of `prompt` (after a reset)."""
        self.reset()
        logits = self.prefill(prompt)[-1]
        out = []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))
            out.append(tok)
            if tok in stop_ids:
                break
            logits = self.decode(tok)
        return out
