"""A hostile tenant against a real ``memstore serve``: hand-built protobuf bytes over raw gRPC as well as
the client, two or more tenants, and each class of attack on the tenant boundary and the per-call
limits: names that imitate another tenant's, the shared-memory path, declared sizes that were never
sent, stalled streams, a poisoned record, revoked tokens and statuses. Each test reads its figures from
the server's answers or /proc and asserts no time."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import xxhash
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memstore import Client, RemoteError
from memstore.local import LocalArena
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import parse_chunk
from memstore_server.auth import create_token
from tests.conftest import arena_of, rss_bytes, serve_command, served, status_of

MiB = 1 << 20
STORE = "/memstore.v1.Store/"
ROLES = {
    "alice": ("write", "admin"),
    "bob": ("read", "write", "admin"),
    "carol": ("write",),
    "dave": ("write",),
}


class Server:
    def __init__(self, tmp: Any, *extra: str) -> None:
        self.tokens_file = str(tmp / "tokens.jsonl")
        self.tokens = {
            (tenant, role): create_token(self.tokens_file, tenant, role)
            for tenant, roles in ROLES.items()
            for role in roles
        }
        quotas = tmp / "quotas.json"
        quotas.write_text('{"carol": {"records": 20}}')
        self.cmd, self.target = serve_command(
            tmp,
            "--auth-tokens",
            self.tokens_file,
            "--quotas",
            str(quotas),
            "--workers",
            "8",
            "--max-call-bytes",
            "32MiB",
            "--max-inflight-bytes",
            "48MiB",
            "--stream-idle-timeout",
            "3",
            *extra,
        )
        self.data_dir = tmp / "data"

    def client(self, tenant: str, role: str, **kw: Any) -> Client:
        return Client(self.target, token=self.tokens[tenant, role], local="never", retries=0, **kw)

    def md(self, tenant: str, role: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[tenant, role]}"),)

    def call(self, channel: grpc.Channel, method: str, request: bytes, who: tuple[str, str]) -> bytes:
        """One unary call with raw bytes in and out."""
        return channel.unary_unary(STORE + method)(request, metadata=self.md(*who), timeout=30)  # type: ignore[no-any-return]

    def get(
        self, channel: grpc.Channel, ns: str, keys: list[bytes], who: tuple[str, str]
    ) -> list[bytes | None]:
        """A raw Get: the values found, None for a miss."""
        req = pb.GetRequest(namespace=ns, keys=keys).SerializeToString()
        out: list[bytes | None] = [None] * len(keys)
        parts: dict[int, bytearray] = {}
        for raw in channel.unary_stream(STORE + "Get")(req, metadata=self.md(*who), timeout=30):
            chunk, data = parse_chunk(pb.GetChunk, raw)
            pos = 0
            for item in chunk.items:
                if item.found:
                    parts.setdefault(item.index, bytearray()).extend(data[pos : pos + item.length])
                pos += item.length
        for i, v in parts.items():
            out[i] = bytes(v)
        return out


def _encode(msg: pb.PutChunk, data: bytes) -> bytes:
    from memstore.wire import _DATA_TAG, varint

    return msg.SerializeToString() + (_DATA_TAG + varint(len(data)) + data if data else b"")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("adversary"))
    with served(srv.cmd, srv.target) as proc:
        srv.proc = proc  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


def test_no_chosen_name_reaches_another_tenants_namespace(server: Server, channel: grpc.Channel) -> None:
    with server.client("alice", "write") as alice:
        alice.create_namespace("x")
        alice.put(b"k", b"alice's secret", ns="x")
        alice.put(b"k", b"alice's default secret")
        alice.memory.put(("notes",), "k", {"secret": 1})
    imitations = [
        "x",
        "t.alice.x",
        "alice#x",
        "alice!memory",
        "memory",
        "alice#default",
        "default!memory",
        "!memory",
        "#x",
        "alice",
        "alice.x",
        "default",
    ]
    seen = []
    for ns in imitations:
        for who in (("bob", "admin"), ("bob", "read")):
            code = status_of(lambda ns=ns, who=who: seen.extend(server.get(channel, ns, [b"k"], who)))
            assert code in (None, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (ns, code)
        req = pb.KeysRequest(namespace=ns, keys=[b"k"]).SerializeToString()
        for method in ("Exists", "Lookup"):
            code = status_of(
                lambda m=method, r=req: seen.append(server.call(channel, m, r, ("bob", "admin")))
            )
            assert code in (None, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (ns, method)
        delete = pb.DeleteNamespaceRequest(name=ns).SerializeToString()
        assert status_of(lambda r=delete: server.call(channel, "DeleteNamespace", r, ("bob", "admin"))) in (
            None,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    assert not any(v is not None and b"secret" in v for v in seen if isinstance(v, bytes) or v is None)
    assert pb.ExistsResponse(exists=[True]).SerializeToString() not in seen
    with server.client("bob", "admin") as bob:
        assert bob.memory.list(("notes",))[0] == [] and bob.memory.get(("notes",), "k") is None
    with server.client("alice", "write") as alice:  # nothing of alice's was harmed
        assert alice.get(b"k", ns="x") == b"alice's secret"
        assert alice.get(b"k") == b"alice's default secret"
        assert alice.memory.get(("notes",), "k").value == {"secret": 1}


def test_agent_memory_counts_toward_its_tenants_quota(server: Server) -> None:
    with server.client("carol", "write") as carol:
        stored, refused = 0, 0
        for i in range(30):
            try:
                carol.memory.put(("facts",), f"f{i}", {"i": i})
                stored += 1
            except RemoteError as exc:
                assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                refused += 1
        assert stored == 20 and refused == 10  # the quota of 20 records holds for agent memory too
        st = carol.stats()
        assert st["scope"] == "carol" and list(st["tenants"]) == ["carol"]
        assert st["tenants"]["carol"]["records"] == 20 and st["tenants"]["carol"]["records_limit"] == 20


def test_the_local_path_is_admin_only_and_publishes_only_what_its_maker_wrote(
    server: Server, channel: grpc.Channel
) -> None:
    begin = pb.LocalPutBeginRequest(
        items=[pb.PutItem(key=b"r1", size=4096), pb.PutItem(key=b"r2", size=4096)]
    )
    for method, req, who in [
        ("OpenLocal", pb.OpenLocalRequest(), ("bob", "write")),
        ("LocalGet", pb.GetRequest(keys=[b"k"]), ("bob", "read")),
        ("LocalGet", pb.GetRequest(keys=[b"k"]), ("bob", "write")),
        ("LocalPutBegin", begin, ("bob", "write")),
        ("LocalPutCommit", pb.LocalPutCommitRequest(commit=[1], checksums=[0]), ("bob", "write")),
    ]:
        code = status_of(lambda m=method, r=req, w=who: server.call(channel, m, r.SerializeToString(), w))
        assert code == grpc.StatusCode.PERMISSION_DENIED, method
    opened = pb.OpenLocalResponse.FromString(
        server.call(channel, "OpenLocal", pb.OpenLocalRequest().SerializeToString(), ("alice", "admin"))
    )
    arena = LocalArena(
        opened.segment_path, opened.segment_size, server_boot_id=opened.boot_id, server_pid=opened.server_pid
    )
    try:
        # A secret is put and deleted: its arena space is free, still holding its bytes.
        with server.client("alice", "write") as alice:
            alice.put(b"old", b"S" * 4096)
            assert alice.delete(b"old")
        got = pb.LocalPutBeginResponse.FromString(
            server.call(channel, "LocalPutBegin", begin.SerializeToString(), ("alice", "admin"))
        ).reserved
        assert all(r.ok for r in got)
        t1, t2 = got[0].token, got[1].token
        assert t1 != t2 and abs(t1 - t2) != 1 and max(t1, t2) > 1 << 32  # not a counter
        commit = lambda tokens, sums, who: server.call(  # noqa: E731
            channel,
            "LocalPutCommit",
            pb.LocalPutCommitRequest(commit=tokens, checksums=sums).SerializeToString(),
            who,
        )
        # Another tenant's admin can neither publish nor cancel alice's reservation.
        assert status_of(lambda: commit([t1], [0], ("bob", "admin"))) == grpc.StatusCode.NOT_FOUND
        server.call(
            channel,
            "LocalPutCommit",
            pb.LocalPutCommitRequest(abort=[t1]).SerializeToString(),
            ("bob", "admin"),
        )
        # Committing unwritten space (whatever it held before) is refused; so is a commit without a checksum.
        assert status_of(lambda: commit([t1], [], ("alice", "admin"))) == grpc.StatusCode.INVALID_ARGUMENT
        zeros = xxhash.xxh3_64_intdigest(bytes(4096))
        assert (
            status_of(lambda: commit([t1], [zeros], ("alice", "admin")))
            == grpc.StatusCode.FAILED_PRECONDITION
        )
        assert server.get(channel, "default", [b"r1"], ("alice", "admin")) == [None]
        value = os.urandom(4096)
        arena.write(got[1].offset, memoryview(value))
        assert (
            status_of(lambda: commit([t2, t2], [0, 0], ("alice", "admin")))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        commit([t2], [xxhash.xxh3_64_intdigest(value)], ("alice", "admin"))
        assert server.get(channel, "default", [b"r2"], ("alice", "admin")) == [value]
        assert status_of(lambda: commit([t2], [xxhash.xxh3_64_intdigest(value)], ("alice", "admin"))) == (
            grpc.StatusCode.NOT_FOUND  # a second commit of one token
        )
        assert server.get(channel, "default", [b"r2"], ("bob", "admin")) == [None]  # still alice's alone
    finally:
        arena.close()


@pytest.mark.parametrize(
    "dtype,shape",
    [("<f2", [1] * 40), ("<f2", [1] * 256), ("|S0", [4]), ("|V0", [2]), ("|O", [1]), ("<f2", [1 << 62, 4])],
)
def test_one_validation_of_array_descriptions_on_every_path(
    server: Server, channel: grpc.Channel, dtype: str, shape: list[int]
) -> None:
    info = pb.ArrayInfo(dtype=dtype, shape=shape)
    begin = pb.LocalPutBeginRequest(items=[pb.PutItem(key=b"arr", size=2, array=info)]).SerializeToString()
    assert status_of(lambda: server.call(channel, "LocalPutBegin", begin, ("alice", "admin"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    put = _encode(_chunk("default", b"arr", 2, info), b"\0\0")
    code = status_of(
        lambda: channel.stream_unary(STORE + "Put")(
            iter([put]), metadata=server.md("alice", "write"), timeout=30
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    layout = pb.CreateNamespaceRequest(name="arrays", value_layout=info).SerializeToString()
    assert status_of(lambda: server.call(channel, "CreateNamespace", layout, ("alice", "write"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert server.get(channel, "default", [b"arr"], ("alice", "write")) == [None]


def _chunk(
    ns: str,
    key: bytes,
    size: int,
    array: pb.ArrayInfo | None = None,
    offset: int = 0,
    length: int | None = None,
) -> pb.PutChunk:
    msg = pb.PutChunk(namespace=ns)
    item = msg.items.add(key=key, size=size, offset=offset, length=size if length is None else length)
    if array is not None:
        item.array.CopyFrom(array)
    return msg


class _Held:
    """A raw Put stream that sends its messages, then waits until released (or forever)."""

    def __init__(
        self, server: Server, channel: grpc.Channel, messages: list[bytes], who: tuple[str, str]
    ) -> None:
        self.sent = threading.Event()
        self.release = threading.Event()

        def requests() -> Iterator[bytes]:
            yield from messages
            self.sent.set()
            self.release.wait(120)

        self.future = channel.stream_unary(STORE + "Put").future(
            requests(), metadata=server.md(*who), timeout=120
        )

    def code(self) -> grpc.StatusCode:
        try:
            self.future.result(timeout=90)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK


def test_declared_sizes_allocate_nothing_and_budgets_hold(server: Server, channel: grpc.Channel) -> None:
    pid = server.proc.pid  # type: ignore[attr-defined]
    huge = _encode(_chunk("default", b"big", 3 << 30, length=16), b"x" * 16)
    held = _Held(server, channel, [huge], ("dave", "write"))
    assert held.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # over the per-call limit, refused at once
    # 30 MiB declared (under the limit), 1 KiB sent, then the writer waits: nothing is allocated for it.
    base = rss_bytes(pid)
    streams = [
        _Held(
            server,
            channel,
            [_encode(_chunk("default", b"v%d" % i, 30 * MiB, length=1024), b"y" * 1024)],
            ("dave", "write"),
        )
        for i in range(6)  # the bulk streams the server takes at once (8 workers: 6)
    ]
    for s in streams:
        assert s.sent.wait(30)
    time.sleep(0.5)
    grew = rss_bytes(pid) - base
    assert grew < 32 * MiB, f"6 streams declaring 30 MiB each made the server grow {grew / MiB:.0f} MiB"
    # The writers stop sending: the watchdog ends their streams (idle limit 3 s), freeing the workers.
    assert [s.code() for s in streams] == [grpc.StatusCode.CANCELLED] * 6
    # The server-wide budget (48 MiB): two calls holding 25 MiB each cannot both go on.
    pieces = [
        _encode(_chunk("default", b"w", 30 * MiB, offset=n * MiB, length=MiB), b"z" * MiB) for n in range(25)
    ]
    first = _Held(server, channel, pieces, ("dave", "write"))
    assert first.sent.wait(60)
    second = _Held(server, channel, [m.replace(b"\n\x01w", b"\n\x01W") for m in pieces], ("alice", "write"))
    assert second.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.release.set()
    assert first.code() == grpc.StatusCode.INVALID_ARGUMENT  # the stream ended inside its value
    with server.client("dave", "write") as dave:
        assert dave.get_many([b"big", b"v0", b"w"]) == [None, None, None]


def test_stalled_readers_cannot_take_the_server(server: Server, channel: grpc.Channel) -> None:
    with server.client("bob", "write") as bob:
        bob.put_many([(b"r%d" % i, os.urandom(4 * MiB)) for i in range(4)])
    req = pb.GetRequest(keys=[b"r%d" % i for i in range(4)] * 2).SerializeToString()
    readers = [
        grpc.insecure_channel(server.target) for _ in range(20)
    ]  # each on its own connection, as separate engines would be
    try:
        calls = [
            ch.unary_stream(STORE + "Get")(req, metadata=server.md("bob", "read"), timeout=120)
            for ch in readers
        ]
        time.sleep(1.0)  # the streams start; nobody reads them
        health = health_pb2_grpc.HealthStub(channel)
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=20).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        with server.client("alice", "write", data="never") as alice:
            alice.stats(timeout=20)
            alice.create_namespace("control", timeout=20)
            assert alice.contains(b"k", timeout=20)
            with pytest.raises(RemoteError) as err:  # a bulk call beyond the limit is refused, not queued
                alice.put(b"more", b"bulk", timeout=20)
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with server.client("alice", "write") as alice:  # the data plane needs no gRPC worker
            alice.put(b"more", b"bulk", timeout=20)
            assert alice.get(b"more", timeout=20) == b"bulk"
        codes = []
        for call in calls:
            try:
                for _ in call:
                    pass
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        # 8 workers: 6 bulk streams at most; the rest are refused at once, the stalled ones end idle.
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 14
        assert set(codes) <= {
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.OK,
        }
    finally:
        for ch in readers:
            ch.close()
    with server.client("bob", "read") as bob:
        assert [len(v) for v in bob.get_many([b"r0", b"r1"])] == [4 * MiB, 4 * MiB]


def test_a_revoked_token_ends_its_open_stream(server: Server, channel: grpc.Channel) -> None:
    token = create_token(server.tokens_file, "erin", "write")
    md = (("authorization", f"Bearer {token}"),)
    go = threading.Event()

    def requests() -> Iterator[bytes]:
        yield _encode(_chunk("default", b"before", 3), b"abc")
        go.wait(60)
        yield _encode(_chunk("default", b"after", 3), b"def")

    future = channel.stream_unary(STORE + "Put").future(requests(), metadata=md, timeout=90)
    time.sleep(0.5)
    with open(server.tokens_file) as f:
        lines = f.read().splitlines()
    with open(server.tokens_file, "w") as f:
        f.write("\n".join(line for line in lines if '"erin"' not in line) + "\n")
    time.sleep(1.5)  # past the tokens file's reload interval
    go.set()
    with pytest.raises(grpc.RpcError) as err:
        future.result(timeout=60)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reissued = create_token(server.tokens_file, "erin", "write")
    time.sleep(1.5)
    with Client(server.target, token=reissued, local="never") as erin:
        assert erin.get(b"after") is None


def test_statuses_and_per_tenant_stats(server: Server, channel: grpc.Channel) -> None:
    delete = pb.DeleteNamespaceRequest(name="default").SerializeToString()
    assert status_of(lambda: server.call(channel, "DeleteNamespace", delete, ("alice", "admin"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    with server.client("alice", "write") as alice:
        alice.put(b"after-delete", b"ok")
        assert alice.get(b"after-delete") == b"ok"
    with server.client("bob", "read") as bob:
        st = bob.stats()
    assert st["scope"] == "bob" and set(st["tenants"]) == {"bob"}
    assert st["hot"]["bytes"] == st["tenants"]["bob"]["hot_bytes"]
    assert st["hot"]["hits"] == 0 and st["hot_segment"] == ""  # no store-wide figures for a tenant
    with server.client("bob", "admin") as admin:
        whole = admin.stats()
    assert whole["scope"] is None and {"alice", "bob", "carol"} <= set(whole["tenants"])
    assert whole["hot"]["bytes"] >= st["hot"]["bytes"]


def test_a_filter_nested_too_deep_is_invalid_argument(server: Server, channel: grpc.Channel) -> None:
    for depth in (40, 5000):
        deep = '{"a": ' * depth + "1" + "}" * depth
        req = pb.MemorySearchRequest(
            namespace_prefix=["notes"], query="q", filter_json=deep
        ).SerializeToString()
        search = channel.unary_unary("/memstore.v1.Memory/Search")
        code = status_of(lambda r=req, s=search: s(r, metadata=server.md("alice", "write"), timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, depth
    with server.client("alice", "write") as alice:  # a filter of ordinary depth still works
        assert alice.memory.search(("notes",), query="q", filter={"secret": {"$in": [1]}}) is not None


def test_a_poisoned_record_stays_with_its_owner(tmp_path: Any) -> None:
    """Bytes of alice's records are flipped in the arena; bob's flood demotes them: bob's puts all
    succeed, the bad records are quarantined and counted, SIGTERM still exits 0 and writes bob's down."""
    srv = Server(tmp_path)
    with served(srv.cmd, srv.target) as proc:
        with srv.client("alice", "write") as alice:
            alice.put_many([(b"a%d" % i, os.urandom(256 * 1024)) for i in range(8)])
        with grpc.insecure_channel(srv.target) as ch:
            opened = pb.OpenLocalResponse.FromString(
                srv.call(ch, "OpenLocal", pb.OpenLocalRequest().SerializeToString(), ("alice", "admin"))
            )
            located = pb.LocalGetResponse.FromString(
                srv.call(
                    ch,
                    "LocalGet",
                    pb.GetRequest(keys=[b"a%d" % i for i in range(8)]).SerializeToString(),
                    ("alice", "admin"),
                )
            ).locations
        arena = LocalArena(
            opened.segment_path,
            opened.segment_size,
            server_boot_id=opened.boot_id,
            server_pid=opened.server_pid,
        )
        for loc in located:
            assert loc.status == pb.LOCAL_FOUND
            pos = loc.offset + loc.header_len + 1000
            arena.write(pos, memoryview(bytes([arena.view[pos] ^ 0xFF])))
        arena.close()
        values = {b"b%d" % i: os.urandom(1 * MiB) for i in range(48)}
        with srv.client("bob", "write") as bob:
            for k, v in values.items():
                bob.put(k, v)  # demotes alice's records through warm to cold: never an error here
        with srv.client("bob", "admin") as admin:
            st = admin.stats()
        assert st["hot"]["checksum_failures"] + st["warm"]["checksum_failures"] >= 1
        with srv.client("alice", "write") as alice:
            got = alice.get_many([b"a%d" % i for i in range(8)])
        assert all(v is None for v in got)  # flipped records are never served
        segment = arena_of(srv.data_dir)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not os.path.exists(segment)
    with served(srv.cmd, srv.target), srv.client("bob", "read") as bob:
        last = list(values)[-8:]
        assert bob.get_many(last) == [values[k] for k in last]


@pytest.fixture
def small_disk(tmp_path: Any) -> Iterator[Any]:
    """A 24 MiB tmpfs: a real filesystem that fills up (needs the right to mount, as root in CI has)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_is_resource_exhausted_naming_it_and_loses_nothing(small_disk: Any) -> None:
    """Persistent puts onto a disk smaller than the cold budget: the first that does not fit is
    RESOURCE_EXHAUSTED (not UNAVAILABLE, which clients retry) naming the disk; every acknowledged record
    reads back, before and after a SIGTERM and a restart on the still-full disk."""
    srv = Server(small_disk)
    acked: dict[bytes, bytes] = {}
    with served(srv.cmd, srv.target) as proc:
        with srv.client("alice", "admin") as admin:
            admin.create_namespace("p", durability="persistent")
        with srv.client("alice", "write") as alice:
            for i in range(64):
                key, value = b"k%d" % i, os.urandom(MiB)
                try:
                    alice.put(key, value, ns="p")
                except RemoteError as exc:
                    error = exc
                    break
                acked[key] = value
            else:
                pytest.fail("64 MiB went onto a 24 MiB disk")
            assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert "disk holding" in str(error) and str(small_disk) in str(error), error
            assert 4 <= len(acked) < 24
            assert alice.get_many(list(acked), ns="p") == list(acked.values())
            alice.put(b"small", b"a cache put still works")
            assert alice.get(b"small") == b"a cache put still works"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    with served(srv.cmd, srv.target), srv.client("alice", "write") as alice:
        assert alice.get_many(list(acked), ns="p") == list(acked.values())
