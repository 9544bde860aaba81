"""Bundles as the registry reads them, on top of the bundle contract (bundle_contract).

The contract parses and checks a manifest (its shard and file lists are what the
registry stores, and their paths are safe storage keys); what is added here is the
registry's side: a bundle folder's files the manifest does not list (not published),
and the contract's errors as RegistryError, the one error the registry raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from bundle_contract.card import QUALITY_NAME
from bundle_contract.manifest import (
    MANIFEST_NAME,
    Blob,
    BundleError,
    Manifest,
    ManifestError,
    load,
    parse_json,
    verify_blobs,
)

from .errors import RegistryError


@dataclass
class LocalBundle:
    root: Path
    manifest: Manifest
    unlisted: list[str] = field(default_factory=list)  # files in the folder the manifest does not list


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Parse and check manifest bytes; `where` names the manifest in error messages."""
    try:
        return parse_json(raw, where)
    except ManifestError as e:
        raise RegistryError(str(e)) from None


def read_bundle(path: Path) -> LocalBundle:
    """Open a bundle folder and check its manifest (hashes are checked by `check_hashes`)."""
    root = Path(path)
    if not root.exists():
        raise RegistryError(f"bundle {root} does not exist; create it with `llmpack package SRC --out {root}`")
    if not root.is_dir():
        raise RegistryError(f"{root} is not a bundle folder (a bundle is a directory with {MANIFEST_NAME})")
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        raise RegistryError(f"{root} is not a bundle: it has no {MANIFEST_NAME} "
                            f"(create one with `llmpack package SRC --out {root}`)")
    try:
        manifest = load(root)
    except ManifestError as e:
        raise RegistryError(str(e)) from None
    # quality.json: `llmpack eval`'s record, published in the model card rather than as a file
    listed = {MANIFEST_NAME, QUALITY_NAME} | {b.path for b in manifest.shards} | {b.path for b in manifest.files}
    unlisted = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and p.relative_to(root).as_posix() not in listed)
    return LocalBundle(root, manifest, unlisted)


def check_hashes(bundle: LocalBundle, blobs: Iterable[Blob], on_bytes: Callable[[int], None] | None = None) -> None:
    """Hash each blob's local file; raise on the first one missing, of the wrong size or content."""
    try:
        verify_blobs(bundle.root, blobs, on_bytes)
    except BundleError as e:
        raise RegistryError(str(e)) from None
