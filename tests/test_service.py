"""The gRPC service and clients: a real server on a real socket, bad input, deadlines, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from memstore import AsyncClient, Client, RemoteError, TieredStore
from memstore.v1 import memstore_pb2 as pb
from memstore_server import create_server
from tests.conftest import MiB, serve_command, served, wait_serving

METHODS = ["CreateNamespace", "Put", "Get", "Delete", "Exists", "Stats"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = str(tmp_path_factory.mktemp("svc") / "store")
    store = TieredStore(path, hot_bytes=16 * MiB, warm_bytes=32 * MiB, cold_bytes=512 * MiB, prefault=False)
    sock = str(tmp_path_factory.mktemp("sock") / "memstore.sock")
    tcp = create_server(store, "127.0.0.1:0")
    uds = create_server(store, f"unix:{sock}")
    yield {"tcp": f"127.0.0.1:{tcp.port}", "unix": f"unix:{sock}", "running": tcp}
    tcp.stop(1)
    uds.stop(1)
    store.close()


@pytest.fixture(params=[("tcp", "never"), ("unix", "never"), ("tcp", "always")], ids=lambda p: "-".join(p))
def client(request, server):  # type: ignore[no-untyped-def]
    """gRPC over TCP and a unix socket, and the shared-memory local path."""
    transport, local = request.param
    with Client(server[transport], timeout=60, local=local) as c:
        yield c


@pytest.mark.parametrize("size", [0, 1, 4 * MiB, 64 * MiB])
def test_round_trip_sizes(client, size, seed) -> None:  # type: ignore[no-untyped-def]
    value = np.random.default_rng(seed).bytes(size)
    key = b"size-%d" % size
    client.put(key, value)
    assert client.get(key) == value
    assert client.contains(key)
    assert client.delete(key) and client.get(key) is None


def test_arrays_batches_and_misses(client, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    values = {
        b"f16": (rng.standard_normal((4, 8, 64)) * 2).astype(np.float16),
        b"bf16": rng.integers(0, 1 << 16, size=(3, 1000), dtype=np.uint16),
        b"f32": rng.standard_normal(300_000).astype(np.float32),  # spans two messages
        b"scalar": np.array(7, dtype=np.int64),
        b"raw": b"plain bytes",
    }
    assert client.put_many(values) == len(values)
    got = client.get_many([*values, b"absent"])
    assert got[-1] is None
    for (k, want), have in zip(values.items(), got, strict=False):
        if isinstance(want, np.ndarray):
            assert have.dtype == want.dtype and have.shape == want.shape and np.array_equal(have, want), k
        else:
            assert have == want
    assert client.delete_many([b"raw", b"absent"]) == [True, False]


def test_many_client_threads(server, seed) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        rng = np.random.default_rng(seed + n)
        try:
            with Client(server["tcp"]) as c:
                for i in range(30):
                    v = rng.bytes(int(rng.integers(1, 300_000)))
                    c.put(b"t%d-%d" % (n, i % 5), v)
                    assert c.get(b"t%d-%d" % (n, i % 5)) == v
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


def _status(fn) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteError) as info:
        fn()
    return info.value.code


def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(client) -> None:  # type: ignore[no-untyped-def]
    client.put(b"keep", b"safe")
    bad = grpc.StatusCode.INVALID_ARGUMENT
    assert _status(lambda: client.put(b"", b"v")) == bad
    assert _status(lambda: client.put(b"k" * 401, b"v")) == bad
    assert _status(lambda: client.get(b"")) == bad
    assert _status(lambda: client.create_namespace("bad name!")) == bad
    assert _status(lambda: client.create_namespace("x", warm_codec="lzma")) == bad
    assert _status(lambda: client.get(b"k", ns="never-created")) == grpc.StatusCode.NOT_FOUND
    # dtype/shape that disagree with the byte length, sent as a hand-made PutChunk
    item = pb.PutItem(key=b"arr", size=8, array=pb.ArrayInfo(dtype="<f4", shape=[3]), length=8)
    chunk = pb.PutChunk(items=[item], data=b"\0" * 8)
    put = client._channel.stream_unary("/memstore.v1.Store/Put")
    with pytest.raises(grpc.RpcError) as info:
        put(iter([chunk.SerializeToString()]))
    assert info.value.code() == bad
    for dtype in ("O", "(1000000000,)f4", "nonsense"):
        item = pb.PutItem(key=b"arr", size=8, array=pb.ArrayInfo(dtype=dtype, shape=[2]), length=8)
        chunk = pb.PutChunk(items=[item], data=b"\0" * 8)
        with pytest.raises(grpc.RpcError) as info:
            put(iter([chunk.SerializeToString()]))
        assert info.value.code() == bad, dtype
    # a declared size larger than any tier
    chunk = pb.PutChunk(items=[pb.PutItem(key=b"huge", size=1 << 50, length=1)], data=b"x")
    with pytest.raises(grpc.RpcError) as info:
        put(iter([chunk.SerializeToString()]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # pieces that lie about their lengths or order
    for items, data in (
        ([pb.PutItem(key=b"a", size=4, length=4)], b"xy"),
        ([pb.PutItem(key=b"a", size=4, length=2), pb.PutItem(key=b"b", size=2, length=2)], b"xxyy"),
        ([pb.PutItem(key=b"a", size=4, offset=2, length=2)], b"xx"),
        ([pb.PutItem(key=b"a", size=4, length=2)], b"xx"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            put(iter([pb.PutChunk(items=items, data=data).SerializeToString()]))
        assert info.value.code() == bad, items
    assert client.get(b"keep") == b"safe"
    assert client.get_many([b"arr", b"huge", b"a", b"b"]) == [None] * 4


@pytest.mark.parametrize("method", METHODS)
def test_garbage_bytes_to_every_method(client, method, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    path = f"/memstore.v1.Store/{method}"
    ch = client._channel
    for _ in range(20):
        junk = rng.bytes(int(rng.integers(1, 200)))
        try:
            if method == "Put":
                ch.stream_unary(path)(iter([junk]), timeout=5)
            elif method == "Get":
                list(ch.unary_stream(path)(junk, timeout=5))
            else:
                ch.unary_unary(path)(junk, timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), exc
    assert client.stats()["hot"]["capacity_bytes"] == 16 * MiB  # still serving


def test_deadline_exceeded(server, seed) -> None:  # type: ignore[no-untyped-def]
    keys = [b"dl-%d" % i for i in range(8)]
    with Client(server["tcp"], local="never") as client:  # 640 MiB through gRPC cannot fit in 10 ms
        client.put_many([(k, np.random.default_rng(seed).bytes(4 * MiB)) for k in keys])
        assert _status(lambda: client.get_many(keys * 20, timeout=0.01)) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert client.get(b"dl-0") is not None


def test_retries_only_unavailable(server) -> None:  # type: ignore[no-untyped-def]
    running = server["running"]
    running.service.shutting_down.set()
    threading.Timer(0.3, running.service.shutting_down.clear).start()
    with Client(server["tcp"], retries=8, backoff=0.05) as c:
        assert c.get(b"whatever") is None  # succeeded after the server came back
    running.service.shutting_down.set()
    try:
        with Client(server["tcp"], retries=1, backoff=0.01) as c:
            assert _status(lambda: c.get(b"x")) == grpc.StatusCode.UNAVAILABLE
    finally:
        running.service.shutting_down.clear()


def test_health_and_reflection(server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server["tcp"]) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = list(
            stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        names = {s.name for s in answers[0].list_services_response.service}
        assert "memstore.v1.Store" in names and "grpc.health.v1.Health" in names


@pytest.mark.parametrize("local", ["never", "always"])
def test_async_client(server, seed, local) -> None:  # type: ignore[no-untyped-def]
    value = np.random.default_rng(seed).standard_normal((2, 700_000)).astype(np.float32)

    async def main() -> None:
        async with AsyncClient(server["unix"], local=local) as c:
            assert await c.local() == (local == "always")
            await c.put(b"async", value)
            got = await c.get(b"async")
            assert np.array_equal(got, value) and got.dtype == value.dtype
            assert await c.get_many([b"async-miss"]) == [None]
            out = np.empty_like(value)
            assert await c.get_into([b"async"], [out]) == [value.nbytes]
            assert np.array_equal(out, value)
            assert await c.contains(b"async")
            assert await c.delete(b"async")
            assert (await c.stats())["cold"]["capacity_bytes"] > 0
            with pytest.raises(RemoteError):
                await c.put(b"", b"x")

    asyncio.run(main())


def test_memstore_serve_sigterm_and_restart(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    cmd, sock = serve_command(tmp_path, "--grace", "5", "--policy", "prefix-gd")
    values = {b"v%d" % i: np.random.default_rng(seed + i).bytes(1 * MiB) for i in range(20)}
    with served(cmd, sock, stderr=subprocess.PIPE, text=True) as proc:
        with Client(sock) as c:
            c.put_many(values)  # 20 MiB: more than hot, so some of it lives in warm at shutdown
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "memstore serving on" in log and "hot_bytes=8MiB" in log and "policy=prefix-gd" in log
    with served(cmd, sock) as proc:
        with Client(sock) as c:
            assert c.get_many(list(values)) == list(values.values())
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0


def test_graceful_shutdown_under_load(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while four clients write persistent values: exit 0, every acknowledged put is there after
    a restart, and calls the shutdown cut off fail with a status, never with wrong data."""
    cmd, sock = serve_command(tmp_path, "--grace", "5")
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    acked: dict[bytes, bytes] = {}
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        wait_serving(sock)
        with Client(sock, local="never") as c:
            c.create_namespace("p", durability="persistent")

        def writer(w: int) -> None:
            rng = np.random.default_rng(seed + w)
            with Client(sock, local="never", retries=0) as c:
                i = 0
                while not stop.is_set():
                    key, value = b"w%d-%d" % (w, i), rng.bytes(int(rng.integers(1, 64 << 10)))
                    try:
                        c.put(key, value, ns="p")
                    except RemoteError as exc:
                        with lock:
                            failures.append(exc.code.name)
                        return
                    with lock:
                        acked[key] = value
                    i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert len(acked) > 20
    assert set(failures) <= {"UNAVAILABLE"}, failures  # calls in flight finish; only new ones are refused
    with served(cmd, sock) as proc:
        with Client(sock, local="never") as c:
            keys = list(acked)
            assert c.get_many(keys, ns="p") == [acked[k] for k in keys]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
