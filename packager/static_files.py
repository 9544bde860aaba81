"""File responses shared by `llmpack serve` and `llmpack registry serve`.

One implementation of what both servers promise for a file: MIME types (including
`application/wasm`, which `WebAssembly.instantiateStreaming` insists on), single-range
`Range` requests (206, 416), `If-Range`, `ETag` / `If-None-Match` (304), `HEAD`, the
cache policy (content-addressed files are immutable, everything else is revalidated),
and `X-Content-Type-Options: nosniff`. Where the bytes come from is the caller's
business: a callable that opens the file for reading.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

IMMUTABLE = "public, max-age=31536000, immutable"  # content-addressed: the name pins the bytes
REVALIDATE = "no-cache"  # may be cached, but must be revalidated (ETag) before each use
READ_CHUNK = 1 << 20

_MEDIA_TYPES = {
    ".json": "application/json",
    ".bin": "application/octet-stream",
    ".wasm": "application/wasm",
    ".wgsl": "text/wgsl; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".map": "application/json",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".jinja": "text/plain; charset=utf-8",
    ".model": "application/octet-stream",
}

Opener = Callable[[], ContextManager[BinaryIO]]


def media_type(path: str) -> str:
    """Content-Type for a file name; application/octet-stream when unknown."""
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot > path.rfind("/") else ""
    return _MEDIA_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """A single `bytes=` range -> (first, last) inclusive; "unsatisfiable"; or None to
    ignore the header and send the whole file (multiple ranges, malformed headers)."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.groups()
    if first == "":
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


def file_response(request: Request, name: str, size: int, open_file: Opener, *, etag: str | None = None,
                  cache: str = REVALIDATE) -> Response:
    """The response to GET or HEAD of a file of `size` bytes called `name` (for the MIME
    type). `etag` (unquoted) enables 304s and `If-Range`."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if etag:
        headers["ETag"] = f'"{etag}"'
        tags = [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]
        if "*" in tags or headers["ETag"] in tags:
            return Response(status_code=304, headers=headers)
    start, length, status = 0, size, 200
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if header and (if_range is None or (etag and if_range.strip() == headers["ETag"])):
        r = parse_range(header, size)
        if r == "unsatisfiable":
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        if r is not None:
            start, length, status = r[0], r[1] - r[0] + 1, 206
            headers["Content-Range"] = f"bytes {r[0]}-{r[1]}/{size}"
    headers["Content-Length"] = str(length)
    mtype = media_type(name)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=mtype)
    return StreamingResponse(_read(open_file, start, length), status_code=status, headers=headers, media_type=mtype)


def local_file_response(request: Request, path: Path, *, etag: str | None = None,
                        cache: str = REVALIDATE) -> Response:
    """file_response for a file on disk; without `etag`, one made of its size and mtime."""
    st = path.stat()
    return file_response(request, path.name, st.st_size, lambda: open(path, "rb"),
                         etag=etag or f"{st.st_size:x}-{st.st_mtime_ns:x}", cache=cache)


def _read(open_file: Opener, start: int, length: int) -> Iterator[bytes]:
    with open_file() as f:
        f.seek(start)
        left = length
        while left > 0:
            chunk = f.read(min(READ_CHUNK, left))
            if not chunk:
                break  # the file shrank under us; a client that checks hashes will say so
            left -= len(chunk)
            yield chunk
