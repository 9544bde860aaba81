"""HTTP for bundles, shared by `llmpack serve` and `llmpack registry serve`: file
responses and the listening socket.

One implementation of what both servers promise for a file: MIME types (including
`application/wasm`, which `WebAssembly.instantiateStreaming` insists on), single-range
`Range` requests (206, 416), `If-Range`, `ETag` / `If-None-Match` (304), `HEAD`, the
cache policy (content-addressed files are immutable, everything else is revalidated),
and `X-Content-Type-Options: nosniff`. Where the bytes come from is the caller's
business: a callable that opens the file for reading. `bind` opens the listening socket
(loopback by default; a taken port or an unknown host is a one-line UserError), and
`HostCheck` answers only requests whose Host header names this server (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import re
import socket
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterable, Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .errors import UserError

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
    m = re.fullmatch(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", header)
    if not m or m.group(1) == m.group(2) == "":
        return None
    first, last = m.groups()
    if first == "":
        n = _at_most(last, size)
        return (size - n, size - 1) if n > 0 and size > 0 else "unsatisfiable"
    start = _at_most(first, size)
    if last and _at_most(last, size) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(_at_most(last, size), size - 1) if last else size - 1


def _at_most(digits: str, cap: int) -> int:
    """min(int(digits), cap) without converting thousands of digits (which Python refuses)."""
    significant = digits.lstrip("0")
    return cap if len(significant) > len(str(cap)) else min(int(significant or "0"), cap)


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


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or a one-line UserError."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port; pass 1-65535 (or 0 for any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port "
                        "(--port 0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# a Host header: a name or an IPv4 address, or a bracketed IPv6 address; an optional port
_HOST_HEADER = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{1,5})?")


def served_host_names(bound: str, allowed: Iterable[str] = ()) -> frozenset[str]:
    """The Host names a server bound to `bound` answers to: that address, the loopback
    names when it is a loopback or wildcard address, and the `--allowed-host` names."""
    names = {bound.lower().strip("[]"), *(a.lower().strip("[]") for a in allowed)}
    if is_loopback(bound) or bound in WILDCARD_HOSTS:
        names.update(LOOPBACK_NAMES)
    names.discard("")
    return frozenset(names)


class HostCheck:
    """ASGI wrapper that refuses (421) HTTP requests whose Host header names another
    server. A page on a DNS-rebound name (evil.example resolving to 127.0.0.1) reaches
    this port with its own name as the Host: without this check it could read every
    served file, and the JSON API would build its URLs from that name. After the check
    the Host header holds one of `names`, so URLs built from it point at this server.

    An IP-address Host is accepted when the server listens on a wildcard address (any
    of the machine's addresses may carry the request): an address cannot be rebound."""

    def __init__(self, app, names: Iterable[str], *, any_address: bool = False):
        self.app, self.names, self.any_address = app, frozenset(names), any_address

    def accepts(self, host: str) -> bool:
        m = _HOST_HEADER.fullmatch(host.lower())
        if not m:
            return False
        name = m.group(1).strip("[]")
        if name in self.names:
            return True
        if not self.any_address:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            hosts = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"]
            # no Host at all (HTTP/1.0 tools) is not a browser: URLs then use the socket address
            if len(hosts) > 1 or (hosts and not self.accepts(hosts[0])):
                shown = hosts[0][:100] if hosts else ""
                body = json.dumps({"detail": f"this server does not answer to the host name {shown!r}; start it "
                                             f"with --allowed-host NAME to allow a name (it answers to: "
                                             f"{', '.join(sorted(self.names))})"}).encode()
                await send({"type": "http.response.start", "status": 421,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"x-content-type-options", b"nosniff")]})
                await send({"type": "http.response.body", "body": body})
                return
            if hosts:  # the checked name, lowercased: what the app builds its URLs from
                headers = [(k, v.lower() if k == b"host" else v) for k, v in scope["headers"]]
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def host_check(app, bound: str, allowed: Iterable[str] = ()) -> HostCheck:
    """`app` answering only to the Host names of a server bound to `bound` (HostCheck)."""
    return HostCheck(app, served_host_names(bound, allowed), any_address=bound in WILDCARD_HOSTS)
