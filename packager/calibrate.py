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
from .reference import LayerWeights, decoder_layer
from .rope import rope_cos_sin, rope_inv_freq

CALIBRATION_TEXT = "calibration_en.txt"
SEQ_LEN = 256
MAX_SEQS = 8

# tensor short name -> which recorded input feeds it
TAP_OF = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "o_in",
          "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "down_in"}
SHORT_OF = {v: k for k, v in LayerWeights.SHORT.items()}


def calibration_tokens(tokenizer_dir: Path, vocab_size: int) -> list[np.ndarray]:
    from tokenizers import Tokenizer

    text = resources.files("quantization").joinpath("data", CALIBRATION_TEXT).read_text(encoding="utf-8")
    ids = np.asarray(Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).encode(text).ids)
    ids = ids[ids < vocab_size]
    n = max(1, min(MAX_SEQS, len(ids) // SEQ_LEN))
    return [ids[i * SEQ_LEN:(i + 1) * SEQ_LEN] for i in range(n)]


def _split(name: str) -> tuple[int, str] | None:
    """'model.layers.3.mlp.up_proj.weight' -> (3, 'up_proj')."""
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[0] == "model" and parts[1] == "layers":
        return int(parts[2]), SHORT_OF.get(parts[3], "")
    return None


class Calibrator:
    def __init__(self, ck: Checkpoint, cfg: dict):
        self.ck, self.cfg = ck, cfg
        self.seqs = calibration_tokens(ck.tokenizer_dir, cfg["vocab_size"])
        self.hidden: list[np.ndarray] | None = None
        self.layer = -1
        self.hessians: dict[str, np.ndarray] = {}
        self.quantized: dict[str, np.ndarray] = {}
        inv = rope_inv_freq(cfg["rope"], cfg["head_dim"])
        self.rope = [rope_cos_sin(inv, np.arange(len(s))) for s in self.seqs]

    def hessian(self, name: str) -> np.ndarray | None:
        """X^T X of the inputs of linear layer `name` (None for other tensors)."""
        where = _split(name)
        if where is None or where[1] not in TAP_OF or self.hidden is None:
            return None
        layer, short = where
        if layer != self.layer:
            self._start_layer(layer)
        return self.hessians[TAP_OF[short]]

    def wants(self, name: str) -> bool:
        """Whether `record` uses this tensor (the token table and the layers' tensors)."""
        return name == "model.embed_tokens.weight" or _split(name) is not None

    def record(self, name: str, dequantized: np.ndarray) -> None:
        """Tell the calibrator what a tensor became after quantization."""
        if name == "model.embed_tokens.weight":
            self.hidden = [dequantized[s] for s in self.seqs]
            return
        where = _split(name)
        if where is None or self.hidden is None:
            return
        if where[0] != self.layer:
            self._start_layer(where[0])
        self.quantized[where[1]] = dequantized
        if len(self.quantized) == len(LayerWeights.SHORT):
            self.hidden = self._run_layer(self.quantized)
            self.quantized = {}

    def _start_layer(self, layer: int) -> None:
        self.layer, self.quantized = layer, {}
        prefix = f"model.layers.{layer}."
        float_w = {short: self.ck.read(prefix + full) for short, full in LayerWeights.SHORT.items()}
        sums: dict[str, np.ndarray] = {}
        self._run_layer(float_w, sums)
        self.hessians = sums

    def _run_layer(self, weights: dict, hessians: dict | None = None) -> list[np.ndarray]:
        c = self.cfg
        w = LayerWeights({f"model.layers.{self.layer}." + LayerWeights.SHORT[k]: v for k, v in weights.items()},
                         self.layer)
        out = []
        for h, (cos, sin) in zip(self.hidden, self.rope):
            n = h.shape[0]
            kc = np.zeros((c["num_key_value_heads"], n, c["head_dim"]), np.float32)
            vc = np.zeros_like(kc)
            taps = {} if hessians is not None else None
            out.append(decoder_layer(h, w, c, cos, sin, kc, vc, 0, taps))
            if taps is not None:
                for key, x in taps.items():
                    xtx = x.T.astype(np.float32) @ x.astype(np.float32)
                    hessians[key] = hessians[key] + xtx if key in hessians else xtx
        return out
