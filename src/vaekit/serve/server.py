"""Serving the explorer with uvicorn on a socket vaekit binds itself, so a busy port is a clear error and port 0
picks a free one whose address can be printed before the first request."""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket

from ..errors import VaekitError
from ..extras import install_hint
from .explorer import Explorer

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or a VaekitError naming the fix."""
    if not 0 <= port <= 65535:
        raise VaekitError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise VaekitError(f"--host {host!r} is not an address of this machine: use 127.0.0.1 (or 0.0.0.0 for all)") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this. Without it a response written in two parts (headers, body) waits for the
    # client's delayed acknowledgement: 44 ms per request on loopback here, against 3 ms with it
    # (benchmarks/explore_latency.py).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise VaekitError(f"port {port} on {host} is in use (another explorer?): choose another with --port, or "
                              "--port 0 for any free one") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise VaekitError(f"no permission to listen on port {port}: choose a port above 1023 with --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise VaekitError(f"--host {host} is not an address of this machine: use 127.0.0.1") from None
        raise VaekitError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --host or --port") from None
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(explorer: Explorer, sock: socket.socket, log_level: str = "warning", host: str | None = None) -> None:
    """Answer requests on `sock` until interrupted (Ctrl-C). On a loopback address only requests naming it (or
    localhost, or `host`: the name it was bound by) in their Host header are answered."""
    try:
        import uvicorn
    except ImportError as exc:
        raise VaekitError(f"the explorer needs uvicorn ({exc.name} is missing): {install_hint('explore')}") from None
    from .app import create_app

    from .app import LOOPBACK_HOSTS

    bound = sock.getsockname()[0]
    # e.g. 127.0.1.1, a Debian hostname's, and that hostname itself
    hosts = (*LOOPBACK_HOSTS, bound, *([host] if host else [])) if is_loopback(bound) else None
    config = uvicorn.Config(create_app(explorer, hosts), log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        explorer.close()
        sock.close()
