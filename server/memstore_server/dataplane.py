"""The data plane's server: framed connections beside gRPC that carry values (docs/dataplane.md).

A client asks gRPC's ``OpenData`` for a ticket, which stands for that call's credential (tenant and
role), then opens TCP (TLS whenever gRPC serves TLS) or, on the same host, a unix socket, and presents
the ticket in its HELLO frame. From then on each GET or PUT frame is served as the Get or Put RPC would
be, in the ticket's tenant, with the same checks and bounds:

- a frame's sections are bounded by the header before any byte of them is read; a PUT's data over the
  per-call limit is refused, and its values take the server-wide byte budget as their bytes arrive;
- memory for a value grows with its received bytes, in steps of at most ``STEP`` bytes;
- a PUT is stored only once all its bytes arrived, so a client that goes away mid-frame leaves nothing;
- a peer that stalls inside a frame for the stream idle time, or sends no frame for the connection
  idle time, is disconnected; connections over the limit are refused;
- a revoked or expired credential ends its connections at their next frame.

One thread serves each connection: frames are answered in order, and a client may pipeline them.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from memstore import dataplane as dp
from memstore.local import boot_id
from memstore.readpath import UNREAD
from memstore.transport import discard, recv_into_exact, send_parts, unix_buffers
from memstore.v1 import memstore_pb2 as pb
from memstore_server.auth import ROLES, Principal, acting_as
from memstore_server.errors import Abort, status_for

if TYPE_CHECKING:
    from memstore_server.servicer import StoreService

log = logging.getLogger("memstore.server")
STEP = 8 << 20  # a value's buffer grows by at most this much before its bytes arrive
TICKET_TTL = 30.0
MAX_TICKETS = 4096


class Tickets:
    """Open tickets, by the SHA-256 of their secret; each admits connections until it expires."""

    def __init__(self, ttl: float = TICKET_TTL) -> None:
        self.ttl = ttl
        self._open: OrderedDict[bytes, tuple[float, Principal, Callable[[], bool]]] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, principal: Principal, valid: Callable[[], bool]) -> bytes:
        secret = secrets.token_bytes(32)
        now = time.monotonic()
        with self._lock:
            while self._open and (len(self._open) >= MAX_TICKETS or next(iter(self._open.values()))[0] < now):
                self._open.popitem(last=False)
            self._open[hashlib.sha256(secret).digest()] = (now + self.ttl, principal, valid)
        return secret

    def redeem(self, secret: bytes) -> tuple[Principal, Callable[[], bool]] | None:
        with self._lock:
            entry = self._open.get(hashlib.sha256(secret).digest())
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1], entry[2]


def recv_exact(sock: socket.socket, n: int, step: int = STEP) -> bytearray:
    """``n`` bytes, the buffer growing by at most ``step`` before they arrive."""
    buf = bytearray()
    while len(buf) < n:
        piece = bytearray(min(step, n - len(buf)))
        recv_into_exact(sock, memoryview(piece))
        if not buf and len(piece) == n:
            return piece
        buf += piece
    return buf


def recv_value(sock: socket.socket, n: int) -> memoryview | bytearray:
    """A value's ``n`` bytes; up to ``STEP`` into a buffer that is not zeroed first (numpy's empty: its
    pages are written once, by the receive), larger ones as ``recv_exact`` grows them."""
    if n > STEP:
        return recv_exact(sock, n)
    view = memoryview(np.empty(n, dtype=np.uint8))  # type: ignore[arg-type]
    recv_into_exact(sock, view)
    return view


class DataPlane:
    """The listeners, the tickets and the connections of one server's data plane."""

    def __init__(
        self,
        service: StoreService,
        *,
        tcp: tuple[str, int] | None = ("127.0.0.1", 0),
        unix: bool = True,
        tls: ssl.SSLContext | None = None,
        max_connections: int = 64,
        connection_idle: float = 300.0,
    ) -> None:
        self.service = service
        self.tls = tls
        self.max_connections = max_connections
        self.connection_idle = connection_idle
        self.tickets = Tickets()
        self.connections: set[socket.socket] = set()
        self.frames: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, code)
        self.bytes_in = self.bytes_out = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._listeners: list[socket.socket] = []
        self.tcp_host, self.tcp_port = "", 0
        if tcp is not None:
            family = socket.AF_INET6 if ":" in tcp[0] else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(tcp)
            host = tcp[0]
            self.tcp_host = "" if host in ("0.0.0.0", "::", "") else host
            self.tcp_port = listener.getsockname()[1]
            self._listeners.append(listener)
        self.unix_path = ""
        self._unix_dir = ""
        if unix:
            self._unix_dir = tempfile.mkdtemp(prefix="memstore-data-")
            os.chmod(self._unix_dir, 0o755)
            self.unix_path = os.path.join(self._unix_dir, "data.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.unix_path)
            os.chmod(self.unix_path, 0o666)  # a ticket, not the file's mode, admits a caller
            self._listeners.append(listener)
        self._threads = []
        for listener in self._listeners:
            listener.listen(128)
            t = threading.Thread(
                target=self._accept, args=(listener,), name="memstore-data-accept", daemon=True
            )
            t.start()
            self._threads.append(t)

    def answer(self, principal: Principal, valid: Callable[[], bool]) -> pb.OpenDataResponse:
        """The OpenData answer: a new ticket for the caller's credential and where to connect."""
        return pb.OpenDataResponse(
            ticket=self.tickets.issue(principal, valid),
            ticket_ttl_ms=int(self.tickets.ttl * 1000),
            tcp_port=self.tcp_port,
            tcp_host=self.tcp_host,
            tls=self.tls is not None,
            unix_path=self.unix_path,
            boot_id=boot_id(),
            max_frame_data=self.service.limits.call_bytes,
            max_frame_meta=dp.MAX_META,
            max_value=self.service.max_value_bytes,
        )

    def _accept(self, listener: socket.socket) -> None:
        while not self._closing.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(0.01)  # out of descriptors, say: try again
                continue
            if sock.family == socket.AF_UNIX:
                unix_buffers(sock)
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock,), name="memstore-data", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            full = len(self.connections) >= self.max_connections
            if not full:
                self.connections.add(sock)
        try:
            sock.settimeout(self.service.limits.stream_idle)
            if self.tls is not None and sock.family != socket.AF_UNIX:
                plain = sock
                sock = self.tls.wrap_socket(sock, server_side=True)  # takes over plain's descriptor
                with self._lock:
                    self.connections.discard(plain)
                    if not full:
                        self.connections.add(sock)  # so that close() can end it
            conn = Connection(self, sock)
            if full:
                conn.refuse(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self.max_connections} data-plane connections are open, the most this server "
                    "takes: retry later",
                )
                return
            conn.run()
        except (OSError, EOFError, ssl.SSLError) as exc:
            log.debug("data-plane connection ended: %s", exc)
        except Exception:
            log.exception("unexpected error on a data-plane connection; it is closed")
        finally:
            with self._lock:
                self.connections.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def count(self, kind: str, code: str, received: int, sent: int) -> None:
        with self._lock:
            self.frames[(kind, code)] += 1
            self.bytes_in += received
            self.bytes_out += sent

    def figures(self) -> tuple[dict[tuple[str, str], int], int, int, int]:
        """(frames by kind and code, value bytes received, value bytes sent, connections open)."""
        with self._lock:
            return dict(self.frames), self.bytes_in, self.bytes_out, len(self.connections)

    def close(self) -> None:
        """Stop accepting, end every connection, remove the unix socket."""
        self._closing.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for t in self._threads:
            t.join(timeout=2)
        with self._lock:
            open_now = list(self.connections)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._unix_dir:
            shutil.rmtree(self._unix_dir, ignore_errors=True)


class Connection:
    """One client's connection: its HELLO, then its frames in order."""

    def __init__(self, plane: DataPlane, sock: socket.socket) -> None:
        self.plane = plane
        self.service = plane.service
        self.sock = sock
        self.limits = plane.service.limits
        self.unread = 0  # data bytes of the frame being served not read yet
        self.sent = 0  # data bytes sent in answers to the frame being served

    def send(self, request: int, result: pb.DataResult, data: Sequence[Any] = ()) -> None:
        used = sum(len(d) for d in data)
        self.sent += used
        send_parts(self.sock, [dp.frame(dp.RESULT, request, result, used), *data])

    def refuse(self, code: grpc.StatusCode, message: str) -> None:
        with contextlib.suppress(OSError):
            self.send(0, dp.error_result(code, message))

    def read_header(self, max_meta: int, idle: float) -> dp.Header:
        self.sock.settimeout(idle)
        raw = recv_exact(self.sock, dp.HEADER.size)
        self.sock.settimeout(self.limits.stream_idle)
        return dp.read_header(raw, max_meta=max_meta, max_data=self.limits.call_bytes)

    def run(self) -> None:
        try:
            hdr = self.read_header(dp.MAX_HELLO_META, self.limits.stream_idle)
            if hdr.kind != dp.HELLO or hdr.data_len:
                raise dp.FrameError("the first frame must be a HELLO with no data")
            hello = dp.parse_meta(pb.DataHello, recv_exact(self.sock, hdr.meta_len))
            admitted = self.plane.tickets.redeem(hello.ticket)
            if admitted is None:
                raise dp.FrameError(
                    "unknown or expired ticket: ask OpenData for a new one", grpc.StatusCode.UNAUTHENTICATED
                )
            principal, valid = admitted
            self.send(hdr.request, pb.DataResult(code=dp.OK))
            with acting_as(principal, valid):
                while self.serve_one(principal, valid):
                    pass
        except dp.FrameError as exc:
            self.refuse(exc.code, str(exc))
        except Abort as exc:
            self.refuse(exc.code, str(exc))
        except TimeoutError:
            log.info("closing a data-plane connection idle or stalled past its limit")

    def serve_one(self, principal: Principal, valid: Callable[[], bool]) -> bool:
        """Answer one frame; False once the peer closed."""
        try:
            hdr = self.read_header(dp.MAX_META, self.plane.connection_idle)
        except EOFError:
            return False
        if hdr.kind not in dp.REQUESTS:
            raise dp.FrameError(f"a client may send GET or PUT frames, not {dp.KINDS[hdr.kind]}")
        meta = recv_exact(self.sock, hdr.meta_len)
        self.unread = hdr.data_len
        if self.plane._closing.is_set():
            raise Abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if not valid():
            raise Abort(grpc.StatusCode.UNAUTHENTICATED, "the connection's credential was revoked or expired")
        need = "read" if hdr.kind == dp.GET else "write"
        self.sent, code = 0, grpc.StatusCode.OK
        try:
            if ROLES[principal.role] < ROLES[need]:
                raise Abort(grpc.StatusCode.PERMISSION_DENIED, f"this frame needs the {need} role")
            with self.service.serving():
                if hdr.kind == dp.GET:
                    self.get(hdr, meta)
                else:
                    self.put(hdr, meta)
        except Exception as exc:
            code = exc.code if isinstance(exc, Abort | dp.FrameError) else status_for(exc)
            if isinstance(exc, TimeoutError | OSError | EOFError):
                code = grpc.StatusCode.CANCELLED  # the peer stalled or left: nothing is answered
                raise
            if isinstance(exc, dp.FrameError) and exc.fatal:
                raise
            if code == grpc.StatusCode.INTERNAL:
                log.exception("unexpected error serving a data-plane frame")
            self.drain(self.unread)
            self.send(hdr.request, dp.error_result(code, str(exc) or type(exc).__name__))
            if code == grpc.StatusCode.UNAVAILABLE:
                return False
        finally:
            self.plane.count(dp.KINDS[hdr.kind], code.name, hdr.data_len, self.sent)
        return True

    def drain(self, n: int) -> None:
        """Read and drop a refused frame's data, so the next frame can be read."""
        self.unread = 0
        discard(self.sock, n)

    def get(self, hdr: dp.Header, meta: bytearray) -> None:
        from memstore_server.servicer import value_bytes

        if hdr.data_len:
            raise dp.FrameError("a GET frame carries no data")
        req = dp.parse_meta(pb.DataGet, meta)
        if len(req.keys) > dp.MAX_GET_KEYS:
            raise dp.FrameError(f"a GET of at most {dp.MAX_GET_KEYS} keys", fatal=False)
        ns = self.service._ns(req.namespace)
        out = pb.DataResult(code=dp.OK)
        parts: list[memoryview] = []
        # Values are read until they reach the per-call limit; the keys after are deferred.
        values = self.service.store.get_many(
            req.keys, ns=ns, promote=not req.no_promote, max_bytes=self.limits.call_bytes
        )
        add = out.items.add
        for value in values:
            if value is UNREAD:
                add(deferred=True)
            elif value is None:
                add(found=False)
            else:
                data, info = value_bytes(value)
                if info is None:
                    add(found=True, size=len(data))
                else:
                    add(found=True, size=len(data), array=info)
                parts.append(data)
        held = self.limits.budget.call(self.limits.call_bytes + self.service.max_value_bytes)
        try:
            held.take(sum(len(p) for p in parts))  # the server-wide budget, shared with gRPC calls
            self.send(hdr.request, out, parts)
        finally:
            held.release()

    def put(self, hdr: dp.Header, meta: bytearray) -> None:
        from memstore_server.servicer import array_value

        req = dp.parse_meta(pb.DataPut, meta)
        sizes = dp.check_put(req, hdr.data_len, self.service.max_value_bytes)
        ns = self.service._ns(req.namespace)
        held = self.limits.budget.call(self.limits.call_bytes)
        try:
            batch: list[tuple[bytes, Any]] = []
            for item, size in zip(req.items, sizes, strict=True):
                held.take(size)  # within the frame's bound, checked already; the server-wide one here
                raw = recv_value(self.sock, size)
                self.unread -= size
                batch.append((item.key, array_value(raw, item.array) if item.HasField("array") else raw))
            parents = [item.parent or None for item in req.items]
            if batch:
                self.service.store.put_many(batch, ns=ns, parents=parents)
            self.send(hdr.request, pb.DataResult(code=dp.OK, stored=len(batch)))
        finally:
            held.release()
