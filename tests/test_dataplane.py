"""The data plane on a real server: round trips over TCP, unix and TLS, many threads, a hostile peer's
frames as raw bytes, the bounds, the fallback to gRPC, and the tenant boundary."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest

from memstore import Client, RemoteError, TieredStore
from memstore import dataplane as dp
from memstore.dataplane_client import DataPlaneUnavailable
from memstore.v1 import memstore_pb2 as pb
from memstore_server import create_server
from memstore_server.auth import create_token, revoke_token
from memstore_server.servicer import Limits
from tests.conftest import MiB, rss_bytes

STORE = "/memstore.v1.Store/"


@dataclass
class Served:
    target: str
    running: Any
    store: TieredStore
    tokens: dict[tuple[str, str], str]
    tokens_file: str

    def client(self, tenant: str = "acme", role: str = "write", **kw: Any) -> Client:
        kw.setdefault("local", "never")
        kw.setdefault("data", "always")
        return Client(self.target, token=self.tokens[tenant, role], retries=0, **kw)

    def ticket(self, tenant: str = "acme", role: str = "write") -> pb.OpenDataResponse:
        with grpc.insecure_channel(self.target) as ch:
            raw = ch.unary_unary(STORE + "OpenData")(
                b"", metadata=(("authorization", f"Bearer {self.tokens[tenant, role]}"),), timeout=10
            )
        return pb.OpenDataResponse.FromString(raw)

    def raw(self, tenant: str = "acme", role: str = "write", hello: bool = True) -> Peer:
        answer = self.ticket(tenant, role)
        peer = Peer(socket.create_connection(("127.0.0.1", answer.tcp_port), timeout=30))
        if hello:
            peer.send(dp.frame(dp.HELLO, 0, pb.DataHello(ticket=answer.ticket)))
            assert peer.result() == (0, 0)
        return peer


class Peer:
    """A hostile client: frames as bytes, answers read by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, *parts: bytes) -> None:
        self.sock.sendall(b"".join(parts))

    def recv(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            piece = self.sock.recv(n - len(out))
            if not piece:
                raise EOFError(f"closed after {len(out)} of {n} bytes")
            out += piece
        return out

    def result(self) -> tuple[int, int]:
        """(request id, code) of the next RESULT; its data is left unread."""
        self.last = self.answer()
        return self.last[0], self.last[1].code

    def answer(self) -> tuple[int, pb.DataResult, bytes]:
        _, _, kind, request, meta_len, data_len = dp.HEADER.unpack(self.recv(dp.HEADER.size))
        assert kind == dp.RESULT
        result = pb.DataResult.FromString(self.recv(meta_len))
        return request, result, self.recv(data_len)

    def closed(self) -> bool:
        """Whether the server closed the connection (waits for it, up to the socket's timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def put(self, request: int, items: list[tuple[bytes, bytes]], ns: str = "default") -> bytes:
        msg = pb.DataPut(namespace=ns, items=[pb.DataPutItem(key=k, size=len(v)) for k, v in items])
        return dp.frame(dp.PUT, request, msg, sum(len(v) for _, v in items)) + b"".join(v for _, v in items)

    def get(self, request: int, keys: list[bytes], ns: str = "default") -> bytes:
        return dp.frame(dp.GET, request, pb.DataGet(namespace=ns, keys=keys))


def _serve(tmp_path: Any, **kw: Any) -> Iterator[Served]:
    os.makedirs(tmp_path, exist_ok=True)
    tokens_file = str(tmp_path / "tokens.jsonl")
    tokens = {
        (t, r): create_token(tokens_file, t, r)
        for t, r in [("acme", "write"), ("acme", "read"), ("bolt", "write"), ("acme", "admin")]
    }
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=16 * MiB, warm_bytes=32 * MiB, cold_bytes=512 * MiB, prefault=False
    )
    limits = Limits(call_bytes=80 * MiB, inflight_bytes=120 * MiB, stream_idle=1.0)
    running = create_server(store, "127.0.0.1:0", auth_tokens=tokens_file, limits=limits, data_idle=2.0, **kw)
    try:
        yield Served(f"127.0.0.1:{running.port}", running, store, tokens, tokens_file)
    finally:
        running.stop(0)
        store.close()


@pytest.fixture
def served(tmp_path):  # type: ignore[no-untyped-def]
    yield from _serve(tmp_path)


def _until(cond: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def _values(seed: int) -> list[tuple[bytes, Any]]:
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 100, 64 << 10, MiB + 3, 9 * MiB, 64 * MiB]
    out: list[tuple[bytes, Any]] = [(b"v%d" % n, rng.bytes(n)) for n in sizes]
    out.append((b"array", rng.integers(0, 1 << 16, size=(3, 5, 7), dtype=np.uint16)))
    return out


@pytest.mark.parametrize("mode", ["tcp", "auto"])
def test_round_trips_from_empty_to_64_mib(served, mode, seed) -> None:  # type: ignore[no-untyped-def]
    values = _values(seed)
    with served.client(data=mode) as c:
        for key, value in values:  # one per call, and then all in one batch
            c.put(key, value)
        assert c.put_many(values) == len(values)
        got = c.get_many([k for k, _ in values] + [b"absent"])
        for (key, value), back in zip(values, got, strict=False):
            if isinstance(value, np.ndarray):
                assert back.dtype == value.dtype and back.shape == value.shape and (back == value).all()
                back[0, 0, 0] = 1  # an answer is the caller's own, writable array
            else:
                assert isinstance(back, bytes) and back == value, key
        assert got[-1] is None
        outs = [bytearray(max(1, len(v) if isinstance(v, bytes) else v.nbytes)) for _, v in values]
        sizes = c.get_into([k for k, _ in values], outs)
        assert sizes == [len(v) if isinstance(v, bytes) else v.nbytes for _, v in values]
        assert bytes(outs[5]) == values[5][1]
        with pytest.raises(ValueError):  # a buffer too small for its value; the connection stays usable
            c.get_into([b"v%d" % (MiB + 3)], [bytearray(10)])
        assert c.get(b"v1") == values[1][1]
        family = c._data._idle[0].sock.family
        assert family == (socket.AF_INET if mode == "tcp" else socket.AF_UNIX)
        assert "data_fallbacks" not in c.local_stats


def test_many_client_threads_share_connections(served, seed) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    with served.client() as c:

        def work(t: int) -> None:
            rng = np.random.default_rng(seed + t)
            try:
                for i in range(30):
                    items = [
                        (b"t%d-%d-%d" % (t, i, j), rng.bytes(int(rng.integers(0, 300_000)))) for j in range(4)
                    ]
                    c.put_many(items)
                    assert c.get_many([k for k, _ in items]) == [v for _, v in items]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert 1 < c._data.opened <= 8  # threads ran calls on connections of their own


def test_tls_and_mutual_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    from tests.test_tls import _certs

    certs = _certs(tmp_path)
    for mutual in (False, True):
        tls = (certs["server.pem"], certs["server.key"], certs["ca.pem"] if mutual else None)
        store = TieredStore(
            str(tmp_path / f"s{mutual}"),
            hot_bytes=8 * MiB,
            warm_bytes=8 * MiB,
            cold_bytes=64 * MiB,
            prefault=False,
        )
        running = create_server(store, "127.0.0.1:0", tls=tls)
        try:
            extra = {"tls_cert": certs["client.pem"], "tls_key": certs["client.key"]} if mutual else {}
            with Client(
                f"localhost:{running.port}", tls_ca=certs["ca.pem"], local="never", data="tcp", **extra
            ) as c:
                value = os.urandom(5 * MiB)
                c.put_many([(b"big", value), (b"small", b"s")])
                assert c.get_many([b"big", b"small"]) == [value, b"s"]
                assert isinstance(c._data._idle[0].sock, ssl.SSLSocket)
            # The TCP port speaks TLS only: a plain HELLO gets no answer but a closed connection.
            with socket.create_connection(("127.0.0.1", running.dataplane.tcp_port), timeout=10) as s:
                s.sendall(dp.frame(dp.HELLO, 0, pb.DataHello(ticket=b"x" * 32)))
                try:
                    answer = s.recv(20)
                except ConnectionResetError:
                    answer = b""
                assert answer == b""
        finally:
            running.stop(0)
            store.close()


def test_frames_that_break_the_protocol_close_only_their_connection(served) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (b"XX" + dp.frame(dp.GET, 1, pb.DataGet())[2:], grpc.StatusCode.INVALID_ARGUMENT),  # magic
        (struct.pack("<2sBBIIQ", b"MD", 2, dp.GET, 1, 0, 0), grpc.StatusCode.INVALID_ARGUMENT),  # version
        (struct.pack("<2sBBIIQ", b"MD", 1, 9, 1, 0, 0), grpc.StatusCode.INVALID_ARGUMENT),  # kind
        (dp.header(dp.RESULT, 1, 0, 0), grpc.StatusCode.INVALID_ARGUMENT),  # a server's frame
        (dp.header(dp.GET, 1, 1 << 30, 0), grpc.StatusCode.RESOURCE_EXHAUSTED),  # meta of 1 GiB declared
        (dp.header(dp.PUT, 1, 0, 1 << 40), grpc.StatusCode.RESOURCE_EXHAUSTED),  # data of 1 TiB declared
        (dp.header(dp.GET, 1, 0, 5) + b"12345", grpc.StatusCode.INVALID_ARGUMENT),  # a GET with data
    ]
    lying = pb.DataPut(items=[pb.DataPutItem(key=b"k", size=10)])  # sizes add up to 10, data says 4
    cases.append((dp.frame(dp.PUT, 1, lying, 4) + b"abcd", grpc.StatusCode.INVALID_ARGUMENT))
    base = rss_bytes()
    for frame, code in cases:
        peer = served.raw()
        peer.send(frame)
        assert peer.result() == (0, code.value[0]), frame[:24]
        assert peer.closed()
    assert rss_bytes() - base < 64 * MiB  # no declared length was allocated
    # A first frame that is not a HELLO, and a HELLO with a ticket nobody issued.
    for first in (Peer.get(None, 1, [b"k"]), dp.frame(dp.HELLO, 0, pb.DataHello(ticket=os.urandom(32)))):  # type: ignore[arg-type]
        peer = served.raw(hello=False)
        peer.send(first)
        code = peer.result()[1]
        assert code in (grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.UNAUTHENTICATED.value[0])
        assert peer.closed()
    with served.client() as c:  # the server serves on, and nothing was stored
        assert c.get_many([b"k"]) == [None]


def test_bad_requests_are_answered_and_the_connection_goes_on(served) -> None:  # type: ignore[no-untyped-def]
    peer = served.raw()
    garbage = b"\xff" * 7
    peer.send(dp.header(dp.PUT, 1, len(garbage), 3) + garbage + b"abc")  # meta that does not parse
    assert peer.result() == (1, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    # One bad key in a frame: nothing of the frame is stored.
    peer.send(peer.put(2, [(b"good", b"1"), (b"x" * 1000, b"2")]))
    assert peer.result() == (2, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    peer.send(peer.put(3, [(b"ok", b"v")], ns="nope"))  # an unknown namespace
    assert peer.result() == (3, grpc.StatusCode.NOT_FOUND.value[0])
    peer.send(peer.get(4, [b"k"] * (dp.MAX_GET_KEYS + 1)))
    assert peer.result() == (4, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    peer.send(peer.put(5, [(b"fine", b"stored")]), peer.get(6, [b"good", b"fine"]))  # pipelined
    assert peer.result() == (5, 0)
    request, result, data = peer.answer()
    assert request == 6 and [i.found for i in result.items] == [False, True] and data == b"stored"


def test_a_peer_that_leaves_or_stalls_mid_frame_stores_nothing(served) -> None:  # type: ignore[no-untyped-def]
    two = [(b"first", os.urandom(MiB)), (b"second", os.urandom(2 * MiB))]
    frame = Peer.put(None, 1, two)  # type: ignore[arg-type]
    peer = served.raw()
    peer.send(frame[: len(frame) - MiB])  # the first value whole, half the second, then gone
    peer.sock.close()
    stalled = served.raw()
    stalled.send(frame[: len(frame) - 10])  # all but 10 bytes, then nothing
    assert stalled.closed()  # disconnected once idle inside the frame (1 s here)
    idle = served.raw()
    assert idle.closed()  # a connection that sends no frame is closed too (2 s here)
    with served.client() as c:
        assert c.get_many([b"first", b"second"]) == [None, None]
        c.put_many(two)
        assert c.get_many([b"first", b"second"]) == [v for _, v in two]


def test_the_server_wide_budget_holds_across_connections(served) -> None:  # type: ignore[no-untyped-def]
    # 120 MiB for all calls: one connection holds 70 MiB of a frame it has not finished, so another's
    # 60 MiB cannot be held as well; once the first is cut off for stalling, it can.
    first = served.raw()
    values = [(b"a%d" % i, b"a" * (10 * MiB)) for i in range(8)]
    frame = first.put(1, values)
    first.send(frame[: len(frame) - 5 * MiB])
    _until(lambda: served.running.service.limits.budget.held >= 70 * MiB)
    second = served.raw()
    second.send(second.put(1, [(b"b%d" % i, b"b" * (10 * MiB)) for i in range(6)]))
    assert second.result() == (1, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert first.closed()
    second.send(second.put(2, [(b"b%d" % i, b"b" * (10 * MiB)) for i in range(6)]))
    assert second.result() == (2, 0)


def test_connections_over_the_limit_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for served in _serve(tmp_path, data_connections=2):
        held = [served.raw(), served.raw()]
        extra = served.raw(hello=False)
        assert extra.result() == (0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        assert extra.closed()
        held[0].sock.close()
        plane = served.running.dataplane
        _until(lambda plane=plane: len(plane.connections) < 2)
        with served.client() as c:  # a slot is free again
            c.put(b"k", b"v")


def test_fallback_to_grpc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for served in _serve(tmp_path):
        with served.client(data="auto") as c:
            c.put(b"k", b"before")
            assert c.data_plane
            served.running.dataplane.close()  # the port closes; gRPC still serves
            assert c.get(b"k") == b"before"  # the idle connection is gone: this call goes over gRPC
            c.put(b"k", b"after")
            assert c.get(b"k") == b"after"
            assert c.local_stats["data_fallbacks"] >= 2
        with served.client(data="always") as c, pytest.raises(DataPlaneUnavailable):
            c.get(b"k")
    for served in _serve(tmp_path / "off", data_listen="off"):
        with served.client(data="auto") as c:
            c.put(b"k", b"grpc")
            assert c.get(b"k") == b"grpc" and not c.data_plane


def test_tenants_roles_and_revocation_on_the_data_plane(served) -> None:  # type: ignore[no-untyped-def]
    with served.client("acme", "write") as acme:
        acme.create_namespace("kv")
        acme.put_many([(b"secret", b"acme's")], ns="kv")
        acme.put(b"secret", b"acme default")
    with served.client("bolt", "write") as bolt:
        assert bolt.get(b"secret") is None
        with pytest.raises(RemoteError) as info:
            bolt.get(b"secret", ns="kv")  # bolt has no namespace kv: NOT_FOUND, not acme's
        assert info.value.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    peer = served.raw("bolt", "write")
    for n, ns in enumerate(["acme#kv", "acme!kv", "acme/kv", "../acme#kv", "acme\x00kv"], start=1):
        peer.send(peer.get(n, [b"secret"], ns=ns))
        request, result, data = peer.answer()
        assert request == n and data == b""
        assert result.code != 0 or not result.items[0].found, ns
    with served.client("acme", "read") as reader:  # a read-only credential cannot PUT
        assert reader.get(b"secret") == b"acme default"
        with pytest.raises(RemoteError) as info:
            reader.put(b"secret", b"overwritten")
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    with served.client("acme", "write") as acme:
        assert acme.get(b"secret") == b"acme default"
    peer = served.raw("acme", "write")
    revoke_token(served.tokens_file, served.tokens["acme", "write"])

    def refused() -> bool:  # the server rereads its tokens file within a second
        try:
            served.ticket("acme", "write")
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    _until(refused)
    peer.send(peer.get(1, [b"secret"]))
    assert peer.result() == (0, grpc.StatusCode.UNAUTHENTICATED.value[0])
    assert peer.closed()
