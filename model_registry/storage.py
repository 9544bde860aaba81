"""Registry storage over fsspec: atomic writes, verified uploads, and the publisher lock.

Three kinds of backend are told apart because they differ in what "atomic" costs:

- local file systems: every file is written to a temporary name in its final folder,
  fsynced and renamed into place, so a reader (or a crash) never sees half a file;
- memory:// (tests): a file opened for writing is visible while it is written, so
  uploads are assembled in memory and stored with one call;
- everything else (s3://, gs://, ...): object stores make an object visible only when
  its upload completes, so files are streamed straight to their final key;
- http(s):// (a static host serving a registry folder): read-only; files are read as
  streams, since a plain static server need not answer Range requests.

The lock serializes index updates. On a local file system it is an flock(2) on
`index.lock`: the kernel drops it when its holder dies, even by SIGKILL, so a killed
publisher never leaves a stale lock behind. Elsewhere it is a lease object created with
`pipe_file(mode="create")` (a conditional create where the backend offers one) holding
an owner token and an expiry; see docs/registry.md for what that guarantees.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import BinaryIO, Callable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from bundle_contract.manifest import CHUNK, hash_stream

from .errors import RegistryError

LOCK_NAME = "index.lock"
# How long a command waits for the lock, and (object stores) how long a lock object is
# honoured before a waiter may break it. The wait outlasts the lease, so a lock left by a
# killed publisher delays the next one instead of failing it.
LOCK_TIMEOUT_S = float(os.environ.get("LLMPACK_REGISTRY_LOCK_TIMEOUT", "360"))
LEASE_S = float(os.environ.get("LLMPACK_REGISTRY_LOCK_LEASE", "300"))
LEASE_MARGIN_S = 5.0  # a holder commits only with at least this much lease left

UMASK = os.umask(0)
os.umask(UMASK)

# One in-process lock per registry location, so that threads of one process queue up
# before they reach the backend's lock (memory:// has no cross-thread atomic create).
_PROCESS_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


class HashMismatch(Exception):
    def __init__(self, sha256: str, size: int):
        super().__init__(f"sha256 {sha256} ({size} bytes)")
        self.sha256, self.size = sha256, size


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """A registry location: an fsspec file system and the root path inside it."""

    def __init__(self, url: str):
        self.url = str(url)
        target = self.url
        if "://" not in target and not target.startswith("file:"):
            target = os.path.abspath(os.path.expanduser(target))
        try:
            fs, root = fsspec.core.url_to_fs(target)
        except ImportError as e:
            raise RegistryError(f"cannot open registry {self.url}: {e}") from None
        except (ValueError, TypeError) as e:
            raise RegistryError(f"cannot open registry {self.url}: {e} "
                                "(use a local path or an fsspec URL such as s3://bucket/prefix)") from None
        self.fs = fs
        self.root = root.rstrip("/") if root not in ("/", "") else root
        self.is_local = isinstance(fs, LocalFileSystem)
        self.is_memory = isinstance(fs, MemoryFileSystem)
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        self.read_only = bool({"http", "https"} & set(protocols))
        if self.is_local and os.path.exists(self.root) and not os.path.isdir(self.root):
            raise RegistryError(f"registry {self.url} is a file, not a folder")

    # -- paths ---------------------------------------------------------------------

    def path(self, rel: str) -> str:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"unsafe registry path {rel!r}")
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def display(self, rel: str = "") -> str:
        base = self.url.rstrip("/")
        return f"{base}/{rel}" if rel else base

    # -- reading -------------------------------------------------------------------

    def read_bytes(self, rel: str) -> bytes:
        """The file's bytes; FileNotFoundError if it does not exist."""
        return self.fs.cat_file(self.path(rel))

    def size(self, rel: str) -> int | None:
        """The file's size, or None if there is no such file."""
        try:
            info = self.fs.info(self.path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return int(info["size"]) if info.get("type") == "file" and info.get("size") is not None else None

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def open_read(self, rel: str) -> BinaryIO:
        if self.read_only:  # one streamed GET: no Range requests, which a static host may not answer
            return self.fs.open(self.path(rel), "rb", block_size=0)
        return self.fs.open(self.path(rel), "rb")

    def check_writable(self, command: str) -> None:
        if self.read_only:
            raise RegistryError(f"cannot {command}: registry {self.url} is read-only over HTTP (a static host "
                                "serving a registry folder); run it on the folder or bucket that host serves")

    def hash_file(self, rel: str, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
        """sha256 and size of a stored file (FileNotFoundError if missing)."""
        with self.open_read(rel) as f:
            return hash_stream(f.read, on_bytes)

    def listdir(self, rel: str) -> list[dict]:
        """Entries directly under `rel` as {"name": basename, "type", "size", "mtime"}; [] if none."""
        try:
            entries = self.fs.ls(self.path(rel), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = self.path(rel).rstrip("/")
        out = []
        for e in entries:
            name = e["name"].rstrip("/")
            if name == base:  # some backends list a file as itself
                continue
            mtime = e.get("mtime") or e.get("LastModified") or e.get("created")
            if isinstance(mtime, datetime):
                mtime = mtime.timestamp()
            out.append({"name": name.rsplit("/", 1)[-1], "type": e.get("type"),
                        "size": int(e.get("size") or 0), "mtime": mtime})
        return out

    # -- writing -------------------------------------------------------------------

    def _local_parent(self, rel: str) -> str:
        final = self.path(rel)
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        return parent

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Store `data` at `rel` so that readers see either the old file or the new one."""
        if self.is_local:
            parent = self._local_parent(rel)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(rel)}.", suffix=".tmp", dir=parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~UMASK)
                os.replace(tmp, self.path(rel))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            _fsync_dir(parent)
        else:
            self.fs.pipe_file(self.path(rel), data)

    def upload(self, rel: str, src: BinaryIO, sha256: str, on_bytes: Callable[[int], None] | None = None) -> None:
        """Copy `src` to `rel`, hashing on the way; raise HashMismatch (and store nothing
        under `rel`) unless the copied bytes have the expected sha256."""
        h = hashlib.sha256()
        n = 0

        def chunks() -> Iterator[bytes]:
            nonlocal n
            while chunk := src.read(CHUNK):
                h.update(chunk)
                n += len(chunk)
                if on_bytes:
                    on_bytes(len(chunk))
                yield chunk

        if self.is_local:
            parent = self._local_parent(rel)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(rel)}.", suffix=".tmp", dir=parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in chunks():
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                if h.hexdigest() != sha256:
                    raise HashMismatch(h.hexdigest(), n)
                os.chmod(tmp, 0o666 & ~UMASK)
                os.replace(tmp, self.path(rel))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        elif self.is_memory:
            data = b"".join(chunks())
            if h.hexdigest() != sha256:
                raise HashMismatch(h.hexdigest(), n)
            self.fs.pipe_file(self.path(rel), data)
        else:
            path = self.path(rel)
            with self.fs.open(path, "wb") as f:
                for chunk in chunks():
                    f.write(chunk)
            if h.hexdigest() != sha256:  # the source changed while it was read
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)
                raise HashMismatch(h.hexdigest(), n)

    def upload_bytes(self, rel: str, data: bytes) -> None:
        self.write_atomic(rel, data)

    def rm(self, rel: str, recursive: bool = False) -> None:
        with contextlib.suppress(FileNotFoundError):
            if recursive:
                self.fs.rm(self.path(rel), recursive=True)
            else:
                self.fs.rm_file(self.path(rel))

    # -- locking -------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, purpose: str, timeout: float | None = None) -> Iterator["LeaseLock | None"]:
        """Hold the registry's publisher lock for the body of the `with`."""
        timeout = LOCK_TIMEOUT_S if timeout is None else timeout
        key = (type(self.fs).__name__, self.root)
        with _PROCESS_LOCKS_GUARD:
            plock = _PROCESS_LOCKS.setdefault(key, threading.Lock())
        if not plock.acquire(timeout=timeout):
            raise RegistryError(f"registry {self.url} stayed locked by another thread for {timeout:.0f}s; retry later")
        try:
            if self.is_local:
                with _flock(self.path(LOCK_NAME), self.url, purpose, timeout):
                    yield None
            else:
                lease = LeaseLock(self, purpose, timeout)
                lease.acquire()
                try:
                    yield lease
                finally:
                    lease.release()
        finally:
            plock.release()


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _holder_text(info: dict) -> str:
    return (f"{info.get('purpose', 'an update')} by pid {info.get('pid', '?')} on {info.get('host', '?')} "
            f"since {info.get('since', '?')}")


@contextlib.contextmanager
def _flock(path: str, url: str, purpose: str, timeout: float) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~UMASK)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if time.monotonic() > deadline:
                try:
                    info = json.loads(os.pread(fd, 4096, 0) or b"{}")
                except (OSError, ValueError):
                    info = {}
                raise RegistryError(f"registry {url} is locked ({_holder_text(info)}); "
                                    "wait for that command to finish, then retry")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        # who holds it, for the message above; the lock itself is the flock
        info = json.dumps({"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname(),
                           "since": utc_now()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class LeaseLock:
    """A lock object with an owner token and an expiry, for backends without flock.

    Acquire = create `index.lock` only if absent (`pipe_file(mode="create")`), then read
    it back to confirm the token (which catches backends whose create-if-absent is a
    check-then-write). A lock whose lease has run out is deleted by the next waiter, so
    a killed publisher blocks others for at most the lease. Before committing the index
    the holder calls `check()`, which fails if its lease ran out or the lock changed
    hands, so a holder that stalled past its lease does not overwrite another's commit.
    """

    def __init__(self, store: Store, purpose: str, timeout: float, lease: float | None = None):
        self.store, self.purpose, self.timeout = store, purpose, timeout
        self.lease = LEASE_S if lease is None else lease
        self.token = uuid.uuid4().hex
        self.expires = 0.0

    def _read(self) -> dict | None:
        try:
            info = json.loads(self.store.read_bytes(LOCK_NAME))
            return info if isinstance(info, dict) else {}
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def acquire(self) -> None:
        path = self.store.path(LOCK_NAME)
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            self.expires = time.time() + self.lease
            body = json.dumps({"owner": self.token, "purpose": self.purpose, "pid": os.getpid(),
                               "host": socket.gethostname(), "since": utc_now(),
                               "expires": self.expires}).encode()
            try:
                self._create(path, body)
                info = self._read()
                if info and info.get("owner") == self.token:
                    return
            except FileExistsError:
                info = self._read()
            if info is not None:
                expires = info.get("expires")
                if not isinstance(expires, (int, float)) or expires < time.time():
                    # stale or unreadable: break it (a concurrent breaker may win; the
                    # create-if-absent above decides who gets the lock next)
                    self.store.rm(LOCK_NAME)
                    continue
            if time.monotonic() > deadline:
                raise RegistryError(f"registry {self.store.url} is locked ({_holder_text(info or {})}); wait for "
                                    "that command to finish, or after its lease ends delete "
                                    f"{self.store.display(LOCK_NAME)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _create(self, path: str, body: bytes) -> None:
        """Create `path` only if absent (FileExistsError otherwise)."""
        try:
            self.store.fs.pipe_file(path, body, mode="create")
        except TypeError:  # a backend that predates fsspec's mode="create": check, then write
            if self.store.fs.exists(path):
                raise FileExistsError(path) from None
            self.store.fs.pipe_file(path, body)

    def check(self) -> None:
        info = self._read()
        if time.time() + min(LEASE_MARGIN_S, self.lease / 10) >= self.expires or not info \
                or info.get("owner") != self.token:
            raise RegistryError(f"lost the lock on registry {self.store.url} (lease of {self.lease:.0f}s ran out); "
                                "the index was not changed, retry the command")

    def release(self) -> None:
        info = self._read()
        if info and info.get("owner") == self.token:
            self.store.rm(LOCK_NAME)
