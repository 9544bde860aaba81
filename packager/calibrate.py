"""Calibration for GPTQ: the input statistics (X^T X) of every linear layer.

A short built-in text is run through the model one decoder layer at a time, in step
with the packager's streaming: when the first tensor of layer i is about to be
quantized, layer i is read in float and run on the hidden states that came out of the
*quantized* layers before it (so each layer compensates the error of the ones before,
as GPTQ does); once layer i's weights are quantized, the hidden states are pushed
through the quantized layer. Memory holds one layer and the calibration activations.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint
from .models import ModelConfig, definition
from .reference import run_ops
from .rope import rope_cos_sin, rope_inv_freq

CALIBRATION_TEXT = "calibration_en.txt"
SEQ_LEN = 256
MAX_SEQS = 8


def calibration_tokens(tokenizer_dir: Path, vocab_size: int) -> list[np.ndarray]:
    from tokenizers import Tokenizer

    text = resources.files("quantization").joinpath("data", CALIBRATION_TEXT).read_text(encoding="utf-8")
    ids = np.asarray(Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).encode(text).ids)
    ids = ids[ids < vocab_size]
    n = max(1, min(MAX_SEQS, len(ids) // SEQ_LEN))
    return [ids[i * SEQ_LEN:(i + 1) * SEQ_LEN] for i in range(n)]


class Calibrator:
    def __init__(self, ck: Checkpoint, config: ModelConfig):
        self.ck, self.config = ck, config
        graph = definition(config.architecture).graph(config)
        (embed,) = graph.embed  # the token table's rows are the first hidden states
        self.embedding, self.stream = embed.weight, embed.out
        self.embed_scale = np.float32(1.0 if embed.scale is None else embed.scale)  # Gemma: sqrt(hidden_size)
        self.layer_ops = graph.layers
        self.layer_of = {op.weight: i for i, ops in enumerate(graph.layers) for op in ops if op.weight}
        self.linear_layer = {op.weight: i for i, ops in enumerate(graph.layers) for op in ops if op.kind == "linear"}
        self.seqs = calibration_tokens(ck.tokenizer_dir, config.vocab_size)
        self.hidden: list[np.ndarray] | None = None
        self.layer = -1
        self.hessians: dict[str, np.ndarray] = {}  # by the first linear weight that reads an input
        self.hessian_of: dict[str, str] = {}  # linear weight -> key in hessians
        self.quantized: dict[str, np.ndarray] = {}
        inv = rope_inv_freq(config.rope, config.head_dim)
        self.rope = [rope_cos_sin(inv, np.arange(len(s)), config.rope.attention_scaling) for s in self.seqs]

    def weights(self, layer: int) -> list[str]:
        return [name for name, i in self.layer_of.items() if i == layer]

    def hessian(self, name: str) -> np.ndarray | None:
        """X^T X of the inputs of linear layer `name` (None for other tensors)."""
        layer = self.linear_layer.get(name)
        if layer is None or self.hidden is None:
            return None
        if layer != self.layer:
            self._start_layer(layer)
        return self.hessians[self.hessian_of[name]]

    def wants(self, name: str) -> bool:
        """Whether `record` uses this tensor (the token table and the layers' tensors)."""
        return name == self.embedding or name in self.layer_of

    def record(self, name: str, dequantized: np.ndarray) -> None:
        """Tell the calibrator what a tensor became after quantization."""
        if name == self.embedding:
            self.hidden = [dequantized[s] * self.embed_scale for s in self.seqs]
            return
        layer = self.layer_of.get(name)
        if layer is None or self.hidden is None:
            return
        if layer != self.layer:
            self._start_layer(layer)
        self.quantized[name] = dequantized
        if len(self.quantized) == len(self.weights(layer)):
            self.hidden = self._run_layer(self.quantized)
            self.quantized = {}

    def _start_layer(self, layer: int) -> None:
        self.layer, self.quantized = layer, {}
        float_w = {name: self.ck.stored(name) for name in self.weights(layer)}
        self.hessians, self.hessian_of = {}, {}
        self._run_layer(float_w, self.hessians)

    def _run_layer(self, weights: dict, hessians: dict | None = None) -> list[np.ndarray]:
        c = self.config
        out = []
        for h, cos_sin in zip(self.hidden, self.rope):
            n = h.shape[0]
            kc = np.zeros((c.num_key_value_heads, n, c.head_dim), np.float32)
            vc = np.zeros_like(kc)
            taps = {} if hessians is not None else None
            env = {self.stream: h}
            run_ops(self.layer_ops[self.layer], env, weights, c, cos_sin, kc, vc, 0, taps)
            out.append(env[self.stream])
            if taps is not None:
                first: dict[int, str] = {}  # linear layers reading the same input share its X^T X
                for name, x in taps.items():
                    key = self.hessian_of[name] = first.setdefault(id(x), name)
                    if key == name:
                        xtx = x.T.astype(np.float32) @ x.astype(np.float32)
                        hessians[key] = hessians[key] + xtx if key in hessians else xtx
        return out
