"""Putting a finished directory in place of another in one step."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` to `out`. An existing `out` is moved aside first
    and put back if the rename fails, so `out` is never half-replaced."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / "previous")
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old / "previous", out)
        raise
    shutil.rmtree(old, ignore_errors=True)
