"""The blocking client of the data plane: connections that move values beside gRPC (docs/dataplane.md).

``DataPlane`` holds a few connections to one server, opened with tickets from gRPC's ``OpenData``;
a call takes an idle one (or opens one), so threads sharing a client use several at once. A GET batch
goes out as several frames before any answer is read (pipelined), and values are received straight into
caller buffers (``get_into``) or into one new buffer each; PUT frames are sent with scatter-gather
writes from the caller's own buffers. Anything that breaks a connection raises ``DataPlaneUnavailable``,
on which ``memstore.Client`` falls back to gRPC for that call.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np

from memstore import dataplane as dp
from memstore.client_core import RemoteError, error_of
from memstore.errors import MemstoreError
from memstore.local import boot_id
from memstore.transport import discard, recv_into_exact, send_parts, unix_buffers
from memstore.v1 import memstore_pb2 as pb

KEYS_PER_FRAME = 8
# Answers whose values average at most this many bytes are received in one piece and sliced (one
# system call, not one per value); larger values go straight into buffers of their own.
SMALL_VALUE = 64 << 10
IDLE_CONNECTIONS = 16  # kept open for reuse; threads beyond this open and close their own


class DataPlaneUnavailable(MemstoreError):
    """The data plane cannot be used for this call (closed port, broken connection, shutting down)."""


def _set_timeout(sock: socket.socket, timeout: float | None) -> None:
    """Blocking mode with kernel send and receive timeouts, so a receive can wait for all its bytes."""
    sock.settimeout(None)
    if timeout:
        tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class Connection:
    """One data-plane connection; one call at a time."""

    def __init__(self, sock: socket.socket, answer: pb.OpenDataResponse) -> None:
        self.sock = sock
        self.max_data = answer.max_frame_data or (256 << 20)
        self.max_meta = answer.max_frame_meta or dp.MAX_META
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.in_step = True  # False while an exchange is under way: its answers are not all read
        self.deadline = float("inf")
        self.timeout: float | None = None
        self._next = 1

    @classmethod
    def open(
        cls,
        answer: pb.OpenDataResponse,
        host: str,
        tls: ssl.SSLContext | None,
        timeout: float | None,
        unix: bool = True,
    ) -> Connection:
        sock = None
        if unix and answer.unix_path and answer.boot_id and answer.boot_id == boot_id():
            local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix_buffers(local)
            try:
                local.settimeout(timeout)
                local.connect(answer.unix_path)
                sock = local
            except OSError:  # another filesystem namespace (a container): TCP instead
                local.close()
        if sock is None:
            if not answer.tcp_port:
                raise DataPlaneUnavailable("the server offers no TCP data plane")
            tcp = socket.create_connection((answer.tcp_host or host, answer.tcp_port), timeout=timeout)
            tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if answer.tls:
                if tls is None:
                    tcp.close()
                    raise DataPlaneUnavailable(
                        "the data plane speaks TLS and this client has no TLS settings"
                    )
                tcp = tls.wrap_socket(tcp, server_hostname=host)
            sock = tcp
        _set_timeout(sock, timeout)
        conn = cls(sock, answer)
        conn.timeout = timeout
        try:
            send_parts(sock, [dp.frame(dp.HELLO, 0, pb.DataHello(ticket=answer.ticket))])
            _, result = conn._result(0)
            if result.code != dp.OK:
                raise DataPlaneUnavailable(f"the data plane refused the connection: {result.message}")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _ids(self, n: int) -> int:
        first = self._next
        self._next = (self._next + n) % (1 << 31) or 1
        return first

    def _recv_into(self, view: memoryview) -> None:
        recv_into_exact(self.sock, view)

    def _recv_bytes(self, n: int) -> bytes:
        if self.tls:  # no MSG_WAITALL over TLS
            buf = bytearray(n)
            self._recv_into(memoryview(buf))
            return bytes(buf)
        data = self.sock.recv(n, socket.MSG_WAITALL)
        if len(data) == n:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            piece = self.sock.recv(n - got, socket.MSG_WAITALL)
            if not piece:
                raise EOFError("the server closed the connection")
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def _result(self, request: int) -> tuple[dp.Header, pb.DataResult]:
        hdr = dp.read_header(self._recv_bytes(dp.HEADER.size), max_meta=self.max_meta, max_data=self.max_data)
        if hdr.kind != dp.RESULT:
            raise dp.FrameError(f"the server sent a {dp.KINDS[hdr.kind]} frame")
        result = dp.parse_meta(pb.DataResult, self._recv_bytes(hdr.meta_len))
        if hdr.request != request:
            if hdr.request == 0 and result.code != dp.OK:  # the server is closing the connection
                raise DataPlaneUnavailable(f"{dp.status_of(result).name}: {result.message}")
            raise dp.FrameError(f"an answer to request {hdr.request} where {request} was due")
        return hdr, result

    def _value(self, item: pb.DataItem, out: memoryview | None) -> Any:
        if time.monotonic() > self.deadline:
            raise TimeoutError("the call's deadline passed")
        size = item.size
        if out is not None:
            if len(out) < size:
                discard(self.sock, size)
                return ValueError(f"a buffer of {len(out)} bytes for a value of {size}")
            self._recv_into(out[:size])
            return size
        if item.HasField("array"):  # received into an array of its own, not zeroed first
            buf = np.empty(size, dtype=np.uint8)
            self._recv_into(memoryview(buf))  # type: ignore[arg-type]
            return buf.view(np.dtype(item.array.dtype)).reshape(tuple(item.array.shape))
        return self._recv_bytes(size)

    def get_many(
        self, ns: str, keys: Sequence[bytes], promote: bool, outs: Sequence[memoryview] | None
    ) -> list[Any]:
        """Values (or, with ``outs``, sizes) of ``keys``; None for a miss."""
        self.in_step = False
        values: list[Any] = [None] * len(keys)
        pending = list(range(len(keys)))
        failure: BaseException | None = None
        while pending:
            per_frame = max(KEYS_PER_FRAME, len(pending) // 4)
            frames = dp.get_frames(ns, [keys[i] for i in pending], promote, self._ids(0), per_frame)
            self._ids(len(frames))
            send_parts(self.sock, [head for head, _ in frames])
            deferred = []
            for head, part in frames:
                hdr, result = self._result(_request_of(head))
                if result.code != dp.OK:
                    failure = failure or _remote(result)
                    continue
                sizes = dp.check_result(result, len(part), hdr.data_len)
                small = outs is None and sizes and hdr.data_len <= SMALL_VALUE * len(sizes)
                section = memoryview(self._recv_bytes(hdr.data_len)) if small else None
                pos = 0
                for j, item in zip(part, result.items, strict=True):
                    index = pending[j]
                    if item.deferred:
                        deferred.append(index)
                    elif item.found and section is not None:  # small values: one receive for all
                        values[index] = _value_of(item, section[pos : pos + item.size])
                        pos += item.size
                    elif item.found:
                        value = self._value(item, outs[index] if outs is not None else None)
                        if isinstance(value, ValueError):
                            failure = failure or value
                        else:
                            values[index] = value
            if failure is not None:
                self.in_step = True
                raise failure
            pending = deferred
        self.in_step = True
        return values

    def put_many(self, ns: str, items: Sequence[tuple[bytes, Any, bytes | None]]) -> int:
        frames = dp.put_frames(ns, items, self._ids(0), self.max_data)
        self._ids(len(frames))
        self.in_step = False
        for f in frames:  # all sent before any answer is read; answers are small, they wait in buffers
            send_parts(self.sock, [f.head, *f.data])
        stored = 0
        failure: BaseException | None = None
        for f in frames:
            _, result = self._result(_request_of(f.head))
            if result.code != dp.OK:
                failure = failure or _remote(result)
            stored += result.stored
        self.in_step = True
        if failure is not None:
            raise failure
        return int(stored)


def _array(item: pb.DataItem, buf: bytearray) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.dtype(item.array.dtype)).reshape(tuple(item.array.shape))


def _value_of(item: pb.DataItem, raw: memoryview) -> Any:
    """A value from its slice of a received data section: its own bytes, or a writable array."""
    return _array(item, bytearray(raw)) if item.HasField("array") else bytes(raw)


def _request_of(head: bytes) -> int:
    request: int = dp.HEADER.unpack_from(head)[3]
    return request


def _remote(result: pb.DataResult) -> BaseException:
    code = dp.status_of(result)
    if code == grpc.StatusCode.UNAVAILABLE:
        return DataPlaneUnavailable(f"UNAVAILABLE: {result.message}")
    return error_of(code, result.message)


MODES = ("auto", "always", "tcp", "never")  # "tcp": never the unix socket, as from another host


def tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The client's TLS for the data plane, from the same files as its gRPC channel's."""
    if not (ca or cert):
        return None
    ctx = ssl.create_default_context(cafile=ca or None)
    if cert:
        ctx.load_cert_chain(cert, key or None)
    return ctx


def target_host(target: str) -> str:
    """The host of a gRPC target ("HOST:PORT", "[V6]:PORT", "dns:///HOST:PORT"); a unix target's is
    the loopback address."""
    if target.startswith("unix:"):
        return "127.0.0.1"
    target = target.split("///", 1)[-1]
    host = target.rsplit(":", 1)[0] if ":" in target else target
    return host.strip("[]")


class DataPlane:
    """The connections of one client to one server's data plane."""

    def __init__(
        self,
        open_data: Callable[[], pb.OpenDataResponse],
        host: str,
        tls: ssl.SSLContext | None,
        timeout: float | None,
        unix: bool = True,
    ) -> None:
        self._open_data = open_data
        self.unix = unix
        self.host = host
        self.tls = tls
        self.timeout = timeout
        self._idle: list[Connection] = []
        self._answer: pb.OpenDataResponse | None = None
        self._answer_until = 0.0
        self._lock = threading.Lock()
        self.opened = 0

    def _ticket(self) -> pb.OpenDataResponse:
        with self._lock:
            if self._answer is not None and time.monotonic() < self._answer_until:
                return self._answer
        answer = self._open_data()
        with self._lock:
            self._answer = answer
            self._answer_until = time.monotonic() + answer.ticket_ttl_ms / 1000 * 0.5
        return answer

    def _take(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            conn = Connection.open(self._ticket(), self.host, self.tls, self.timeout, self.unix)
        except (OSError, EOFError, dp.FrameError) as exc:
            raise DataPlaneUnavailable(f"cannot open a data-plane connection: {exc}") from exc
        self.opened += 1
        return conn

    def _give(self, conn: Connection) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def call(self, fn: Callable[[Connection], Any], timeout: float | None) -> Any:
        """``fn`` on a connection, within ``timeout`` seconds (DEADLINE_EXCEEDED past it)."""
        conn = self._take()
        if timeout != conn.timeout:
            _set_timeout(conn.sock, timeout)
            conn.timeout = timeout
        conn.deadline = time.monotonic() + timeout if timeout else float("inf")
        try:
            result = fn(conn)
        except BaseException as exc:
            if conn.in_step and not isinstance(exc, DataPlaneUnavailable):
                self._give(conn)  # an answer with an error status: every answer was read
                raise
            conn.close()  # its stream is out of step or gone
            if isinstance(exc, OSError) and time.monotonic() > conn.deadline:
                raise RemoteError(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed") from None
            if isinstance(exc, OSError | EOFError | dp.FrameError):
                raise DataPlaneUnavailable(f"the data-plane connection broke: {exc}") from exc
            raise
        self._give(conn)
        return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
