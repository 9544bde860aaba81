"""The one user-error base class: every command prints it as one line and exits non-zero."""

from __future__ import annotations

import errno
from pathlib import Path


class UserError(Exception):
    """Bad input or an impossible request: the message says what and what to do."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NOT_CREATABLE = (errno.ENOENT, errno.ENOTDIR, errno.EEXIST)  # under /proc, below a file


def write_failure(e: OSError, where: Path | str, needed_bytes: int | None = None, *,
                  creating: bool = False, error: type[UserError] = UserError) -> UserError | None:
    """The one-line error for a write into `where` that failed with `e`: a full disk, a
    read-only file system, no permission (and, with `creating`, a place where no folder
    can be made). None for any other failure, which stays a bug to report."""
    if e.errno in _NO_SPACE:
        need = f": needs about {max(1, round(needed_bytes / 1e6))} MB" if needed_bytes else ""
        return error(f"no space left on the device of {where}{need}; free some space or choose another place")
    if e.errno == errno.EROFS:
        return error(f"{where} is on a read-only file system; choose another place")
    if e.errno in (errno.EACCES, errno.EPERM):
        return error(f"no permission to write to {where}; choose another place")
    if creating and e.errno in _NOT_CREATABLE:
        return error(f"cannot create a folder in {where} ({e.strerror}: {e.filename}); choose another place")
    return None
