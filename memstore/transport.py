"""Socket helpers both ends of the data plane use: scatter-gather sends, exact receives, buffer sizes."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Sequence
from typing import Any

UNIX_BUFFER = 4 << 20


def send_parts(sock: socket.socket, parts: Sequence[Any]) -> None:
    """Send buffers back to back: scatter-gather (sendmsg) on a plain socket, one by one over TLS."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    if isinstance(sock, ssl.SSLSocket):
        for v in views:
            sock.sendall(v)
        return
    while views:
        sent = sock.sendmsg(views[:512])
        while sent:
            if sent >= len(views[0]):
                sent -= len(views.pop(0))
            else:
                views[0] = views[0][sent:]
                sent = 0


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from the socket; EOFError if the peer closes first."""
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:])
        if not k:
            raise EOFError(f"the peer closed the connection {got} bytes into {len(view)}")
        got += k


def discard(sock: socket.socket, n: int) -> None:
    """Read and drop ``n`` bytes (a refused frame's data), so the next frame can be read."""
    scratch = memoryview(bytearray(min(n, 1 << 20)))
    while n:
        k = sock.recv_into(scratch[: min(n, len(scratch))])
        if not k:
            raise EOFError("the peer closed the connection inside a frame")
        n -= k


def unix_buffers(sock: socket.socket, size: int = UNIX_BUFFER) -> None:
    """Unix sockets get small buffers by default (about 200 KiB), which cuts a large value into many
    wake-ups; TCP tunes its own."""
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
