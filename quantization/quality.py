"""Quality metrics of a quantized model: perplexity and KL divergence against a reference.

Works on any model object with `reset()` and `prefill(tokens) -> logits [n, vocab]`
(the numpy reference executor is one), so the metrics know nothing about bundles.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

DEFAULT_TEXT = "heldout_en.txt"


def default_text() -> str:
    """A held-out English text written for this project (Apache-2.0, ~1700 words):
    four short essays that no model was trained on."""
    return resources.files("quantization").joinpath("data", DEFAULT_TEXT).read_text(encoding="utf-8")


def token_windows(ids: list[int], window: int, max_windows: int | None = None) -> list[list[int]]:
    """Consecutive non-overlapping windows of `window` tokens (the tail is dropped)."""
    n = len(ids) // window
    if max_windows:
        n = min(n, max_windows)
    return [ids[i * window:(i + 1) * window] for i in range(n)]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def evaluate(model, windows: list[list[int]], reference=None) -> dict:
    """Perplexity of `model` over `windows` (each run from an empty cache, every token
    but the first predicted), and if `reference` is given the mean KL(reference || model)
    of the next-token distributions at the same positions."""
    nll, kl, count = 0.0, 0.0, 0
    for w in windows:
        model.reset()
        logp = log_softmax(model.prefill(w))[:-1]
        targets = np.asarray(w[1:])
        nll -= float(logp[np.arange(len(targets)), targets].sum())
        if reference is not None:
            reference.reset()
            ref_logp = log_softmax(reference.prefill(w))[:-1]
            kl += float((np.exp(ref_logp) * (ref_logp - logp)).sum())
        count += len(targets)
    out = {"tokens": count, "windows": len(windows), "nll": nll / count, "perplexity": float(np.exp(nll / count))}
    if reference is not None:
        out["kl"] = kl / count
    return out
