"""A numpy executor of a bundle: the oracle for the GPU and Wasm kernels.

It reads the bundle only (manifest + shards), dequantizes every weight to float32 with
quantization.formats, and runs the Llama forward pass with a KV cache: `prefill` for a
chunk of tokens after what is cached, `decode` for one more token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bundle_contract.manifest import load, verify_shards
from quantization.formats import get_format

from .errors import PackError
from .rope import rope_cos_sin, rope_inv_freq
from .shards import read_tensor_bytes


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


class LayerWeights:
    """w["q_proj"] -> the weights of layer i by short name (e.g. self_attn.q_proj)."""

    SHORT = {"input_layernorm": "input_layernorm.weight", "q_proj": "self_attn.q_proj.weight",
             "k_proj": "self_attn.k_proj.weight", "v_proj": "self_attn.v_proj.weight",
             "o_proj": "self_attn.o_proj.weight", "post_attention_layernorm": "post_attention_layernorm.weight",
             "gate_proj": "mlp.gate_proj.weight", "up_proj": "mlp.up_proj.weight", "down_proj": "mlp.down_proj.weight"}

    def __init__(self, weights: dict, layer: int):
        self.weights, self.prefix = weights, f"model.layers.{layer}."

    def __getitem__(self, short: str) -> np.ndarray:
        return self.weights[self.prefix + self.SHORT[short]]


def decoder_layer(h, w, c: dict, cos, sin, k_cache, v_cache, past: int, taps: dict | None = None) -> np.ndarray:
    """One Llama decoder layer on h [n, hidden] after `past` cached positions.

    Writes this chunk's keys/values into k_cache/v_cache [kv_heads, window, head_dim].
    If `taps` is a dict, the inputs of the linear layers are stored in it (for
    calibration): "attn_in" (q/k/v), "o_in", "mlp_in" (gate/up), "down_in"."""
    n = h.shape[0]
    heads, kv_heads, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    x = rms_norm(h, w["input_layernorm"], c["rms_norm_eps"])
    q = (x @ w["q_proj"].T).reshape(n, heads, d).transpose(1, 0, 2)
    k = (x @ w["k_proj"].T).reshape(n, kv_heads, d).transpose(1, 0, 2)
    v = (x @ w["v_proj"].T).reshape(n, kv_heads, d).transpose(1, 0, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k_cache[:, past:past + n] = k
    v_cache[:, past:past + n] = v
    o = attention(q, k_cache[:, :past + n], v_cache[:, :past + n], past).transpose(1, 0, 2).reshape(n, heads * d)
    h = h + o @ w["o_proj"].T
    x2 = rms_norm(h, w["post_attention_layernorm"], c["rms_norm_eps"])
    m = silu(x2 @ w["gate_proj"].T) * (x2 @ w["up_proj"].T)
    if taps is not None:
        taps.update(attn_in=x, o_in=o, mlp_in=x2, down_in=m)
    return h + m @ w["down_proj"].T


class ReferenceModel:
    """model = ReferenceModel(bundle); model.prefill(ids) -> logits [n, vocab]; model.decode(id)."""

    def __init__(self, bundle: Path, verify: bool = True):
        self.bundle = Path(bundle)
        manifest = load(self.bundle)
        if verify:
            verify_shards(self.bundle, manifest)
        self.manifest = manifest.data
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
        cos, sin = rope_cos_sin(self.inv_freq, np.arange(past, past + n))
        h = w["model.embed_tokens.weight"][tokens]
        for i in range(c["num_hidden_layers"]):
            h = decoder_layer(h, LayerWeights(w, i), c, cos, sin, self.k_cache[i], self.v_cache[i], past)
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
