"""Model cards: what a user reads before loading a model (docs/registry.md, "Model cards").

A card is built from the manifest's facts (architecture, parameters, format, bits/weight,
license, the checkpoint's name and sha256) and, when `llmpack eval` was run on the
bundle, its quality (perplexity, KL against a reference). `llmpack eval BUNDLE` records
the quality in `BUNDLE/quality.json`, tied to the manifest by its sha256: a record of
another manifest (the bundle was re-packaged since) is not used.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from .manifest import Manifest

CARD_VERSION = 1
QUALITY_NAME = "quality.json"
QUALITY_FORMAT = "llmpack-quality"
_QUALITY_NUMBERS = ("perplexity", "kl", "perplexity_increase", "reference_perplexity")
_QUALITY_COUNTS = ("tokens", "windows", "window")


def make_card(manifest: Manifest, quality: dict | None = None) -> dict:
    """The card of a bundle: its manifest's facts and, if given, its recorded quality."""
    m, q = manifest.model, manifest.quantization
    return {
        "card_version": CARD_VERSION,
        "name": m.name,
        "architecture": m.architecture,
        "hf_architecture": m.hf_architecture,
        "parameters": m.parameters,
        "format": q.scheme,
        "compute": q.compute,
        "bits_per_weight": q.bits_per_weight,
        "quantizer": q.quantizer,
        "context_window": manifest.memory.context_window,
        "weights_bytes": manifest.memory.weights_bytes,
        "license": m.license,
        "source": None if m.source is None else {"kind": m.source.kind, "name": m.source.name,
                                                 "sha256": m.source.sha256},
        "quality": None if quality is None else quality_for_card(quality),
        "manifest_sha256": manifest.sha256,
        "created": manifest.created,
        "generator": manifest.generator,
    }


def quality_for_card(record: dict) -> dict:
    """The parts of a quality record a card shows (numbers and what they were measured on)."""
    out = {k: record[k] for k in _QUALITY_NUMBERS if isinstance(record.get(k), (int, float))}
    out.update({k: record[k] for k in _QUALITY_COUNTS if type(record.get(k)) is int})
    for k in ("text", "reference", "evaluated"):
        if isinstance(record.get(k), str):
            out[k] = record[k]
    return out


def quality_record(manifest: Manifest, row: dict, *, text: str, window: int, reference: str | None) -> dict:
    """What `llmpack eval BUNDLE` writes to BUNDLE/quality.json from one result row."""
    record = {"format": QUALITY_FORMAT, "version": 1, "manifest_sha256": manifest.sha256,
              "evaluated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "text": text, "window": window, "reference": reference}
    record.update({k: row[k] for k in (*_QUALITY_NUMBERS, "tokens", "windows") if k in row})
    return record


def write_quality(bundle_dir: Path | str, record: dict) -> Path:
    """Write BUNDLE/quality.json in one step (a temporary file renamed over it)."""
    path = Path(bundle_dir) / QUALITY_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{QUALITY_NAME}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_quality(bundle_dir: Path | str, manifest: Manifest) -> dict | None:
    """BUNDLE/quality.json when it exists, is readable and was measured on this manifest; else None."""
    try:
        with open(Path(bundle_dir) / QUALITY_NAME, "rb") as f:
            record = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("format") != QUALITY_FORMAT:
        return None
    if manifest.sha256 is None or record.get("manifest_sha256") != manifest.sha256:
        return None
    return record
