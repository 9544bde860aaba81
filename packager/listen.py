"""Opening the listening socket of the dev server and the registry server."""

from __future__ import annotations

import ipaddress
import socket

from .errors import PackError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or a one-line PackError."""
    if not 0 <= port <= 65535:
        raise PackError(f"--port {port} is not a TCP port; pass 1-65535 (or 0 for any free port)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PackError(f"cannot resolve --host {host!r}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise PackError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port "
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
