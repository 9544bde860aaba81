"""Content-addressed shard files: writing a byte stream cut at tensor boundaries, and
reading a tensor's bytes back. The rules are in docs/bundle.md ("Shards")."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from quantization.formats import PART_ALIGN

SHARD_DIR = "shards"


class ShardWriter:
    """Appends tensor blobs to shards of about `shard_size` bytes under `root/shards/`.

    Each shard is written to a temporary name, hashed as it is written, and renamed to
    `<sha256>.bin` when it is complete."""

    def __init__(self, root: Path, shard_size: int):
        if shard_size < PART_ALIGN or shard_size % PART_ALIGN:
            raise ValueError(f"shard size must be a positive multiple of {PART_ALIGN} bytes")
        self.dir = root / SHARD_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.shards: list[dict] = []
        self._file = None
        self._hash = None
        self._pos = 0

    def _open(self) -> None:
        self._file = open(self.dir / f".partial-{len(self.shards)}", "wb")
        self._hash = hashlib.sha256()
        self._pos = 0

    def _write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._pos += len(data)

    def _finish(self) -> None:
        if self._file is None:
            return
        self._file.close()
        digest = self._hash.hexdigest()
        partial = Path(self._file.name)
        final = self.dir / f"{digest}.bin"
        if final.exists():  # identical shard already written: keep one copy
            partial.unlink()
        else:
            os.replace(partial, final)
        self.shards.append({"file": f"{SHARD_DIR}/{final.name}", "bytes": self._pos, "sha256": digest})
        self._file = None

    def append(self, pieces: list[memoryview]) -> tuple[int, int]:
        """Store the concatenation of `pieces` (one tensor); return (index of the shard it
        starts in, offset in that shard)."""
        n = sum(p.nbytes for p in pieces)
        if self._file is not None:
            pad = -self._pos % PART_ALIGN
            if self._pos + pad + n > self.shard_size:
                self._finish()
            elif pad:
                self._write(bytes(pad))
        if self._file is None:
            self._open()
        start = (len(self.shards), self._pos)
        for view in pieces:
            while len(view):
                if self._pos == self.shard_size:  # only a tensor larger than a shard gets here
                    self._finish()
                    self._open()
                room = self.shard_size - self._pos
                self._write(view[:room])
                view = view[room:]
        return start

    def close(self) -> list[dict]:
        self._finish()
        return self.shards

    def abandon(self) -> None:
        """Close the shard being written without keeping it (packaging failed): an open
        descriptor would hold the space of a deleted file (ENOSPC) until exit."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_tensor_bytes(root: Path, shards: list[dict], record: dict) -> bytes:
    """The bytes of one tensor record, following it across shards if it spans them."""
    out, need, index, offset = [], record["bytes"], record["shard"], record["offset"]
    while need:
        with open(root / shards[index]["file"], "rb") as f:
            f.seek(offset)
            chunk = f.read(min(need, shards[index]["bytes"] - offset))
        if not chunk:
            raise ValueError(f"shard {shards[index]['file']} is shorter than the manifest says")
        out.append(chunk)
        need -= len(chunk)
        index, offset = index + 1, 0
    return b"".join(out)
