"""`llmpack eval`: perplexity and KL of bundles, run by the numpy reference executor.

Given a bundle, it is evaluated (and compared with --reference when given). Given a
checkpoint, it is packaged to f32 (the reference) and to each requested scheme in a
temporary directory, and all are evaluated on the same token windows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bundle_contract.card import quality_record, write_quality
from bundle_contract.manifest import MANIFEST_NAME, load
from quantization.quality import default_text, evaluate, token_windows

from .bundle import package_model
from .errors import PackError
from .reference import ReferenceModel

DEFAULT_WINDOW = 256


def is_bundle(path: Path) -> bool:
    return (Path(path) / MANIFEST_NAME).exists()


def encode_text(bundle: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(bundle) / "tokenizer.json")).encode(text).ids


def _row(bundle: Path, metrics: dict, label: str) -> dict:
    m = load(bundle)
    q = m.quantization
    return {"model": label, "scheme": q.scheme, "quantizer": q.quantizer, "mb": round(m.memory.weights_bytes / 1e6, 1),
            "bits_per_weight": q.bits_per_weight, **metrics}


def run_eval(src: Path, *, quants: list[str], reference: Path | None = None, text_file: Path | None = None,
             window: int = DEFAULT_WINDOW, max_windows: int | None = None, quantizer: str = "auto",
             progress: bool = False) -> dict:
    text = text_file.read_text(encoding="utf-8") if text_file else default_text()
    if window < 2:
        raise PackError("--window must be at least 2 tokens")
    with tempfile.TemporaryDirectory(prefix="llmpack-eval-") as tmp:
        if is_bundle(src):
            bundles = [(Path(src), Path(src).name)]
            ref_bundle = None
            if reference is not None:
                ref_bundle = reference if is_bundle(reference) else _package(reference, "f32", tmp, "search", progress)
        else:
            ref_bundle = _package(src, "f32", tmp, "search", progress)
            bundles = [(ref_bundle, "f32")] + [(_package(src, q, tmp, quantizer, progress), q)
                                               for q in quants if q != "f32"]
        ids = encode_text(bundles[0][0], text)
        windows = token_windows(ids, window, max_windows)
        if not windows:
            raise PackError(f"the text has {len(ids)} tokens, fewer than one window of {window}; "
                            "give a longer --text or a smaller --window")
        ref_model = ReferenceModel(ref_bundle) if ref_bundle else None
        rows = []
        for bundle, label in bundles:
            model = ref_model if bundle == ref_bundle else ReferenceModel(bundle)
            metrics = evaluate(model, windows, ref_model)
            rows.append(_row(bundle, metrics, label))
    base = next((r["perplexity"] for r in rows if r["scheme"] == "f32"), None)
    for r in rows:
        if base:
            r["perplexity_increase"] = r["perplexity"] / base - 1
    return {"text": str(text_file) if text_file else "built-in held-out English (quantization/data/heldout_en.txt)",
            "window": window, "windows": len(windows), "tokens": rows[0]["tokens"], "rows": rows}


def record_quality(bundle: Path, result: dict, reference: Path | None) -> Path:
    """Write the bundle's quality.json (bundle_contract.card) from `llmpack eval BUNDLE`'s result,
    for the model card the registry publishes with it."""
    manifest = load(bundle)
    row = result["rows"][0]
    return write_quality(bundle, quality_record(manifest, row, text=result["text"], window=result["window"],
                                                reference=None if reference is None else Path(reference).name))


def _package(src: Path, quant: str, tmp: str, quantizer: str, progress: bool) -> Path:
    out = Path(tmp) / f"{quant}-{quantizer}"
    package_model(src, out, quant=quant, quantizer=quantizer, progress=progress)
    return out
