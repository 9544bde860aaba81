"""manifest.json: the format's identity, and reading and verifying a bundle on disk.
The schema is documented in docs/bundle.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import PackError

BUNDLE_FORMAT = "llmpack-bundle"
BUNDLE_VERSION = 1


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
