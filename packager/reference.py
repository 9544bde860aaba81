"""A numpy executor of a bundle: the oracle for the GPU and Wasm kernels.

It reads the bundle only (manifest + shards), dequantizes every weight to float32 with
quantization.formats, and runs the graph of the model's architecture (packager.models)
op by op with a KV cache: `prefill` for a chunk of tokens after what is cached, `decode`
for one more token. The calibrator (packager/calibrate.py) runs decoder layers through
the same `run_ops`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bundle_contract.manifest import load, verify_shards
from quantization.formats import get_format

from .errors import PackError
from .models import ModelConfig, config_from_manifest, definition
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
    """x [heads, seq, head_dim]; rotate_half convention (first half pairs with second) over
    the first cos.shape[-1] values of each head (the rotary dims); the rest pass unchanged."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = np.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    out = x_rot * cos[None] + rotated * sin[None]
    return out if rot == x.shape[-1] else np.concatenate([out, x_pass], axis=-1)


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    """tanh(x / cap) * cap (Gemma's soft-capping of attention scores and logits)."""
    return (np.tanh(x / np.float32(cap)) * np.float32(cap)).astype(np.float32)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """PyTorch's gelu(approximate="tanh")."""
    return 0.5 * x * (1.0 + np.tanh(np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x ** 3)))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, past_len: int, scale: float | None = None,
              cap: float = 0.0, window: int = 0) -> np.ndarray:
    """Causal grouped-query attention. q [heads, n, d]; k, v [kv_heads, past_len + n, d].
    scale: of q.k (default d ** -0.5); cap: soft-capping of the scores (0: none); window:
    a query at position i sees the keys at positions > i - window only (0: all)."""
    heads, n, d = q.shape
    group = heads // k.shape[0]
    k = np.repeat(k, group, axis=0)
    v = np.repeat(v, group, axis=0)
    if scale is None:
        scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d))
    else:
        scores = q @ k.transpose(0, 2, 1) * np.float32(scale)
    if cap:
        scores = softcap(scores, cap)
    total = k.shape[1]
    pos = past_len + np.arange(n)
    mask = np.arange(total)[None, :] > pos[:, None]
    if window:
        mask |= np.arange(total)[None, :] <= (pos - window)[:, None]
    scores = np.where(mask[None], np.float32(-np.inf), scores)
    scores = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v


def _heads(x: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """[n, heads * head_dim] -> [heads, n, head_dim] (a view); rope's outputs already are."""
    return x if x.ndim == 3 else x.reshape(x.shape[0], heads, head_dim).transpose(1, 0, 2)


def run_ops(ops, env: dict, weights: dict, c: ModelConfig, cos_sin=None, k_cache=None, v_cache=None,
            past: int = 0, taps: dict | None = None) -> None:
    """Run graph ops (packager.models.base.Op) on the activations in `env` (name -> array
    [n, width]; rope leaves q and k head-major, [heads, n, head_dim], for attention).

    cos_sin: the RoPE tables of the n positions after `past` (a rope op with its own Rope
    computes its own); attention appends the chunk's
    keys and values to k_cache / v_cache [kv_heads, window, head_dim] at `past`. If `taps` is
    a dict, the input of every linear op is stored in it under the op's weight name (the
    same array for ops that share an input), for calibration."""
    NH, NKV, HD = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    for op in ops:
        a = [env[name] for name in op.inputs]
        if op.kind == "embedding":
            rows = weights[op.weight][a[0]]
            env[op.out] = rows if op.scale is None else rows * np.float32(op.scale)
        elif op.kind == "rmsnorm":  # over runs of len(weight) values: a token's row, or each of its heads
            w = weights[op.weight]
            x = a[0].reshape(a[0].shape[0], -1, w.shape[0])
            env[op.out] = rms_norm(x, w, c.rms_norm_eps).reshape(a[0].shape)
        elif op.kind == "linear":
            if taps is not None:
                taps[op.weight] = a[0]
            w = weights[op.weight] if op.rows is None else weights[op.weight][op.rows[0]:op.rows[1]]
            env[op.out] = a[0] @ w.T
        elif op.kind == "bias_add":
            env[op.out] = a[0] + weights[op.weight]
        elif op.kind == "rope":
            if op.rope is None:
                cos, sin = cos_sin
            else:  # the op's own RoPE (Gemma 3's sliding layers)
                positions = np.arange(past, past + a[0].shape[0])
                cos, sin = rope_cos_sin(rope_inv_freq(op.rope, HD), positions, op.rope.attention_scaling)
            for name, x, heads in zip(op.inputs, a, (NH, NKV)):
                env[name] = apply_rope(_heads(x, heads, HD), cos, sin)
        elif op.kind == "attention":
            q, k, v = (_heads(x, heads, HD) for x, heads in zip(a, (NH, NKV, NKV)))
            n = q.shape[1]
            k_cache[:, past:past + n] = k
            v_cache[:, past:past + n] = v
            o = attention(q, k_cache[:, :past + n], v_cache[:, :past + n], past, op.scale, op.cap, op.window)
            env[op.out] = o.transpose(1, 0, 2).reshape(n, NH * HD)
        elif op.kind == "add":
            env[op.out] = a[0] + a[1]
        elif op.kind == "silu_mul":
            env[op.out] = silu(a[0]) * a[1]
        elif op.kind == "gelu_tanh_mul":
            env[op.out] = gelu_tanh(a[0]) * a[1]
        elif op.kind == "softcap":
            env[op.out] = softcap(a[0], op.cap)
        else:
            raise PackError(f"the reference executor has no op {op.kind!r}")


class ReferenceModel:
    """model = ReferenceModel(bundle); model.prefill(ids) -> logits [n, vocab]; model.decode(id)."""

    def __init__(self, bundle: Path, verify: bool = True):
        self.bundle = Path(bundle)
        manifest = load(self.bundle)
        if verify:
            verify_shards(self.bundle, manifest)
        self.manifest = manifest.data
        self.config = config_from_manifest(self.manifest)
        self.graph = definition(self.config.architecture).graph(self.config)
        self.w = load_weights(self.bundle, self.manifest)
        self.context_window = self.config.context_window
        self.inv_freq = rope_inv_freq(self.config.rope, self.config.head_dim)
        self.reset()

    def reset(self) -> None:
        c = self.config
        shape = (c.num_hidden_layers, c.num_key_value_heads, self.context_window, c.head_dim)
        self.k_cache = np.zeros(shape, np.float32)
        self.v_cache = np.zeros(shape, np.float32)
        self.past_len = 0

    def prefill(self, tokens) -> np.ndarray:
        """Run `tokens` after the cached ones; return their logits [len(tokens), vocab]."""
        tokens = np.asarray(tokens, dtype=np.int64)
        c, g, past, n = self.config, self.graph, self.past_len, len(tokens)
        if past + n > self.context_window:
            raise PackError(f"context window of {self.context_window} tokens exceeded ({past} + {n})")
        if n == 0 or tokens.min() < 0 or tokens.max() >= c.vocab_size:
            raise PackError("token ids must be a non-empty list within the vocabulary")
        cos_sin = rope_cos_sin(self.inv_freq, np.arange(past, past + n), self.config.rope.attention_scaling)
        env = {"tokens": tokens}
        run_ops(g.embed, env, self.w, c)
        for i, ops in enumerate(g.layers):
            run_ops(ops, env, self.w, c, cos_sin, self.k_cache[i], self.v_cache[i], past)
        run_ops(g.head, env, self.w, c)  # (the plan computes the head for the last token only)
        self.past_len += n
        return env["logits"]

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
