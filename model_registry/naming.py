"""Model ids, version names and `ID[@VERSION]` specs.

Ids and versions become path segments on every backend (local disks, S3 keys, URLs),
so they are restricted to characters that mean the same thing everywhere: lowercase
ASCII letters, digits, '.', '_' and '-'. Lowercase only, because a case-insensitive
file system (macOS, Windows) would otherwise merge two ids that differ in case.
"""

from __future__ import annotations

import re

from .errors import RegistryError

_ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?")
_VERSION_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_ID_RULE = "1-100 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
_VERSION_RULE = "1-64 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit"


def is_valid_id(text: str) -> bool:
    return bool(_ID_RE.fullmatch(text)) and ".." not in text


def is_valid_version(text: str) -> bool:
    return bool(_VERSION_RE.fullmatch(text)) and ".." not in text


def check_id(text: str) -> str:
    if not isinstance(text, str) or not is_valid_id(text):
        raise RegistryError(f"invalid model id {text!r}: use {_ID_RULE}")
    return text


def check_version(text: str) -> str:
    if not isinstance(text, str) or not is_valid_version(text):
        raise RegistryError(f"invalid version {text!r}: use {_VERSION_RULE}")
    return text


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`ID` -> (ID, None); `ID@VERSION` -> (ID, VERSION); both checked."""
    model_id, sep, version = spec.partition("@")
    if sep and not version:
        raise RegistryError(f"{spec!r} names no version after '@': write ID or ID@VERSION")
    check_id(model_id)
    return model_id, (check_version(version) if sep else None)


def id_from_name(name: str) -> str | None:
    """The id a bundle suggests through its manifest's model name, or None if it has none.

    "SmolLM2-135M-Instruct" -> "smollm2-135m-instruct"; runs of other characters
    become a single '-'.
    """
    if not isinstance(name, str):
        return None
    text = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower())
    text = re.sub(r"\.{2,}", ".", text).strip("._-")[:100].rstrip("._-")
    return text if is_valid_id(text) else None
