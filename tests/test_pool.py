"""The pool tier on a real Redis Cluster of three primaries: records put through one store (or one
``memstore serve``) come back byte for byte through another; a pool record that fails its checks is a
counted miss and leaves the pool; tenants and namespaces never share a pool key; a pool that goes away
turns into misses and counted errors, never into failed puts or gets."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from memstore import Client, TieredStore
from memstore.pool import Pool, connect
from tests.conftest import MiB, serve_command, served, wait_published
from tests.redis_cluster import Cluster, redis_cluster


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    with redis_cluster(tmp_path / "redis") as c:
        yield c


def _store(path: Path, cluster: Cluster, **kw: object) -> TieredStore:
    pool = Pool(lambda: connect(cluster.url, timeout=0.5))
    opts = {"hot_bytes": 8 * MiB, "warm_bytes": 8 * MiB, "cold_bytes": 64 * MiB, "prefault": False, **kw}
    return TieredStore(str(path), pool=pool, **opts)  # type: ignore[arg-type]


def _two_servers(tmp_path: Path, cluster: Cluster) -> list[tuple[list[str], str]]:
    """The command lines and targets of two ``memstore serve`` processes on one pool."""
    out = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        out.append(serve_command(tmp_path / name, "--pool", cluster.url))
    return out


def test_a_block_put_on_one_host_is_read_on_another(tmp_path: Path, cluster: Cluster, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = {b"blk-%d" % i: rng.standard_normal((2, 4, 16, 64)).astype("<f2") for i in range(40)}
    raw = {b"bytes-%d" % i: rng.bytes(int(rng.integers(1, 300_000))) for i in range(20)}
    with _store(tmp_path / "a", cluster) as a, _store(tmp_path / "b", cluster) as b:
        for s in (a, b):
            s.create_namespace("acme#kv", shared=True)
            s.create_namespace("acme#private")
        a.put_many(list(values.items()), ns="acme#kv")
        a.put_many(list(raw.items()), ns="acme#kv")
        a.put(b"blk-0", b"not shared", ns="acme#private")
        assert a.pool is not None
        a.pool.flush()
        assert a.stats()["pool"]["published"] == 60
        got = b.get_many(list(values), ns="acme#kv")  # one pipelined round trip for the batch
        for key, value in zip(values, got, strict=True):
            assert value.dtype == values[key].dtype and np.array_equal(value, values[key])
        assert b.get_many(list(raw), ns="acme#kv") == list(raw.values())
        assert b.get(b"blk-0", ns="acme#private") is None  # an unshared namespace stays on its host
        pool = b.stats()["pool"]
        assert pool["hits"] == 60 and pool["corrupt"] == 0
        assert b.tiers_of([b"blk-1"], ns="acme#kv") == ["hot"]  # promoted into the local tiers
        a.delete(b"bytes-0", ns="acme#kv")
        a.pool.flush()
        with _store(tmp_path / "c", cluster) as c:
            c.create_namespace("acme#kv", shared=True)
            assert c.get(b"bytes-0", ns="acme#kv") is None  # deleted from the pool too
            assert c.get(b"bytes-1", ns="acme#kv") == raw[b"bytes-1"]


def test_a_damaged_pool_record_is_a_counted_miss_and_leaves_the_pool(
    tmp_path: Path, cluster: Cluster
) -> None:
    from redis.cluster import ClusterNode, RedisCluster

    direct = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    with _store(tmp_path / "a", cluster) as a, _store(tmp_path / "b", cluster) as b:
        for s in (a, b):
            s.create_namespace("kv", shared=True)
        a.put_many([(b"k%d" % i, bytes([i]) * 5000) for i in range(10)], ns="kv")
        assert a.pool is not None
        a.pool.flush()
        key = Pool.key(b"\x02kv" + b"k3")
        record = bytearray(direct.get(key))
        record[-1] ^= 0x40  # one bit of the payload
        direct.set(key, bytes(record))
        direct.set(Pool.key(b"\x02kv" + b"k4"), b"garbage")
        got = b.get_many([b"k%d" % i for i in range(10)], ns="kv")
        assert got[3] is None and got[4] is None
        assert all(got[i] == bytes([i]) * 5000 for i in range(10) if i not in (3, 4))
        assert b.stats()["pool"]["corrupt"] == 2
        assert b.pool is not None
        b.pool.flush()
        assert direct.get(key) is None  # removed, so no other host is served it either
    direct.close()


def test_tenants_and_namespaces_never_share_a_pool_key(tmp_path: Path, cluster: Cluster) -> None:
    with _store(tmp_path / "a", cluster) as a, _store(tmp_path / "b", cluster) as b:
        for s in (a, b):
            for name in ("alice#kv", "bob#kv", "alice#other"):
                s.create_namespace(name, shared=True)
        a.put(b"same-key", b"alice's", ns="alice#kv")
        assert a.pool is not None
        a.pool.flush()
        assert b.get(b"same-key", ns="bob#kv") is None
        assert b.get(b"same-key", ns="alice#other") is None
        assert b.get(b"same-key", ns="alice#kv") == b"alice's"


def test_a_pool_that_goes_away_turns_into_misses_not_failures(tmp_path: Path, cluster: Cluster) -> None:
    with _store(tmp_path / "a", cluster) as a, _store(tmp_path / "b", cluster) as b:
        for s in (a, b):
            s.create_namespace("kv", shared=True)
        a.put_many([(b"k%d" % i, bytes([i]) * 1000) for i in range(30)], ns="kv")
        assert a.pool is not None
        a.pool.flush()
        for port in list(cluster.procs):
            cluster.kill(port)
        start = time.monotonic()
        a.put(b"after", b"still stored locally", ns="kv")  # the put never waits for the pool
        assert b.get_many([b"k%d" % i for i in range(30)], ns="kv") == [None] * 30
        again = b.get_many([b"k%d" % i for i in range(30)], ns="kv")  # the breaker skips the pool now
        elapsed = time.monotonic() - start
        assert again == [None] * 30 and a.get(b"after", ns="kv") == b"still stored locally"
        assert b.stats()["pool"]["errors"] >= 1
        assert elapsed < 30  # bounded by the socket timeout, not by a hung call


def test_two_servers_share_one_cluster(tmp_path: Path, cluster: Cluster) -> None:
    (cmd_a, sock_a), (cmd_b, sock_b) = _two_servers(tmp_path, cluster)
    values = {b"v%d" % i: bytes([i % 256]) * (i * 1000 + 1) for i in range(50)}
    with served(cmd_a, sock_a), served(cmd_b, sock_b):
        with Client(sock_a, local="never") as a, Client(sock_b, local="never") as b:
            assert a.create_namespace("kv", shared=True)["shared"] is True
            b.create_namespace("kv", shared=True)
            a.put_many(list(values.items()), ns="kv")
            wait_published(a, len(values))
            assert b.get_many(list(values), ns="kv") == list(values.values())
            pool = b.stats()["pool"]
            assert pool["hits"] == len(values) and pool["errors"] == 0
        out = subprocess.run([*cmd_b[:3], "stats", sock_b], capture_output=True, text=True, timeout=60)
        rows = [line.split() for line in out.stdout.splitlines()]
        assert out.returncode == 0 and rows[5][:2] == ["pool", "0"], out.stdout + out.stderr  # its table row
        assert "pool: 0 records published, 0 errors" in out.stdout  # b only read from the pool


def test_lookup_sees_the_pool_and_lookahead_brings_the_prefix_home(tmp_path: Path, cluster: Cluster) -> None:
    with _store(tmp_path / "a", cluster) as a, _store(tmp_path / "b", cluster) as b:
        for s in (a, b):
            s.create_namespace("kv", shared=True)
        keys = [b"blk-%d" % i for i in range(8)]
        a.put_many([(k, k * 100) for k in keys], ns="kv")
        assert a.pool is not None
        a.pool.flush()
        b.put(b"blk-0", b"blk-0" * 100, ns="kv")  # one block b computed itself
        assert b.tiers_of([*keys, b"never"], ns="kv") == ["hot"] + ["pool"] * 7 + [None]
        b.tiers_of(keys, ns="kv", lookahead=True)  # the leading run below hot is fetched in the background
        deadline = time.monotonic() + 30
        while b.tiers_of(keys, ns="kv") != ["hot"] * 8:
            assert time.monotonic() < deadline, b.tiers_of(keys, ns="kv")
            time.sleep(0.02)
        assert b.get_many(keys, ns="kv") == [k * 100 for k in keys]


@pytest.mark.parametrize("local", ["never", "always"])
def test_kv_blocks_computed_on_one_server_are_found_by_another(
    tmp_path: Path, cluster: Cluster, local: str
) -> None:
    """Through gRPC, and through the same-host path (its puts reserve and commit arena space)."""
    from memstore.kv import KVCache, KVIdentity

    ident = KVIdentity(model_id="tiny", num_layers=2, num_kv_heads=2, head_dim=8, block_tokens=4)
    tokens = list(range(40))
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 1 << 16, ident.block_shape, dtype=np.uint16) for _ in range(10)]
    (cmd_a, sock_a), (cmd_b, sock_b) = _two_servers(tmp_path, cluster)
    with (
        served(cmd_a, sock_a),
        served(cmd_b, sock_b),
        Client(sock_a, local=local) as a,
        Client(sock_b, local=local) as b,
    ):
        KVCache(a, ident).put_blocks(tokens, blocks)
        wait_published(a, len(blocks))
        on_b = KVCache(b, ident)
        hit = on_b.lookup(tokens)
        assert hit.blocks == 10 and set(hit.tiers) <= {"pool", "hot"}  # lookahead may have run already
        got = on_b.get_blocks(tokens)
        assert all(np.array_equal(g, w) for g, w in zip(got, blocks, strict=True))
        assert KVCache(b, ident, shared=False).lookup(tokens).blocks == 10  # now local on b too


def test_a_primary_killed_under_load_costs_misses_never_wrong_bytes(tmp_path: Path, seed: int) -> None:
    with redis_cluster(tmp_path / "redis", primaries=3, replicas=1) as cluster:
        rng = np.random.default_rng(seed)
        values = {b"k%d" % i: rng.bytes(int(rng.integers(100, 20_000))) for i in range(300)}
        with _store(tmp_path / "a", cluster) as a:
            a.create_namespace("kv", shared=True)
            a.put_many(list(values.items()), ns="kv")
            assert a.pool is not None
            a.pool.flush()
            assert a.stats()["pool"]["published"] == len(values)
        victim = cluster.primaries()[0]
        reads = wrong = 0
        hits_after = 0
        start = time.monotonic()
        killed = False
        while time.monotonic() - start < 12:
            with _store(tmp_path / f"b{reads}", cluster) as b:  # a fresh host: nothing local
                b.create_namespace("kv", shared=True)
                keys = list(values)[:60]
                got = b.get_many(keys, ns="kv")  # never raises, whatever the pool does
                wrong += sum(g is not None and g != values[k] for k, g in zip(keys, got, strict=True))
                if killed and time.monotonic() - start > 8:
                    hits_after += sum(g is not None for g in got)
            reads += 1
            if not killed and time.monotonic() - start > 1:
                cluster.kill(victim)  # SIGKILL: its replica takes over after the node timeout
                killed = True
        assert wrong == 0 and reads >= 3 and hits_after > 0
        deadline = time.monotonic() + 30
        alive = next(iter(cluster.procs))
        while "cluster_state:ok" not in cluster.cli(alive, "cluster", "info"):
            assert time.monotonic() < deadline, "no failover"
            time.sleep(0.2)
        with _store(tmp_path / "after", cluster) as c:
            c.create_namespace("kv", shared=True)
            for _ in range(20):  # the client finds the new primary after its first miss there
                got = c.get_many(list(values), ns="kv", promote=False)
                if all(g is not None for g in got):
                    break
                time.sleep(0.5)
            assert got == list(values.values())  # the replica had every record: nothing lost, nothing wrong


def test_two_tenants_on_two_servers_never_meet_in_the_pool(tmp_path: Path, cluster: Cluster) -> None:
    """One tokens file, two servers on one pool: acme's shared records put through A are found by
    acme through B and never by bolt, neither through the client (same namespace and key names) nor
    with raw gRPC bytes naming acme's namespace."""
    import grpc

    from memstore.v1 import memstore_pb2 as pb
    from memstore_server.auth import create_token

    tokens = str(tmp_path / "tokens.jsonl")
    acme, bolt = create_token(tokens, "acme", "write"), create_token(tokens, "bolt", "write")
    admin = create_token(tokens, "ops", "admin")  # the pool's figures are the server's, not a tenant's
    (cmd_a, a), (cmd_b, b) = (
        serve_command(tmp_path / n, "--pool", cluster.url, "--auth-tokens", tokens) for n in ("a", "b")
    )
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with (
        served(cmd_a, a),
        served(cmd_b, b),
        Client(a, token=acme) as acme_a,
        Client(b, token=acme) as acme_b,
        Client(b, token=bolt) as bolt_b,
        Client(a, token=admin) as admin_a,
    ):
        for c in (acme_a, acme_b, bolt_b):
            c.create_namespace("kv", shared=True)
        acme_a.put_many([(b"k%d" % i, b"acme's %d" % i) for i in range(10)], ns="kv")
        wait_published(admin_a, 10)
        keys = [b"k%d" % i for i in range(10)]
        assert bolt_b.tiers(keys, ns="kv") == [None] * 10  # not even "pool"
        assert bolt_b.get_many(keys, ns="kv") == [None] * 10
        assert acme_b.tiers(keys, ns="kv") == ["pool"] * 10
        with grpc.insecure_channel(b) as channel:
            metadata = (("authorization", f"Bearer {bolt}"),)
            for namespace in ("acme#kv", "acme!kv", "kv"):
                raw = pb.KeysRequest(namespace=namespace, keys=keys).SerializeToString()
                try:
                    answer = channel.unary_unary("/memstore.v1.Store/Lookup")(raw, metadata=metadata)
                except grpc.RpcError as exc:
                    assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
                    continue
                assert list(pb.LookupResponse.FromString(answer).tiers) == [pb.TIER_NONE] * 10
        assert acme_b.get_many(keys, ns="kv") == [b"acme's %d" % i for i in range(10)]


def test_a_dead_node_costs_only_its_own_keys(tmp_path: Path, cluster: Cluster) -> None:
    """Three primaries, no replicas; one SIGKILLed: a batch still hits every key the two live nodes
    serve, call after call, and misses (counted) the dead node's; puts still succeed and still reach the
    live nodes."""
    from redis.cluster import ClusterNode, RedisCluster

    values = {b"k%d" % i: b"v%d" % i * 500 for i in range(90)}
    with _store(tmp_path / "a", cluster) as a:
        a.create_namespace("kv", shared=True)
        a.put_many(list(values.items()), ns="kv")
        assert a.pool is not None
        a.pool.flush()
        full_key = a._namespaces.named("kv").full_key
    direct = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
    node_of = {k: direct.get_node_from_key(Pool.key(full_key(k))).port for k in values}
    direct.close()
    victim = cluster.ports[0]
    cluster.kill(victim)
    live = [k for k in values if node_of[k] != victim]
    assert 0 < len(live) < len(values)
    for round_ in range(3):  # a fresh host each round: nothing local
        with _store(tmp_path / f"b{round_}", cluster) as b:
            b.create_namespace("kv", shared=True)
            for _ in range(2):  # call after call: the dead node is skipped, not the whole pool
                got = b.get_many(list(values), ns="kv", promote=False)
                assert [k for k, g in zip(values, got, strict=True) if g is not None] == live
                assert all(g == values[k] for k, g in zip(values, got, strict=True) if g is not None)
            assert b.stats()["pool"]["errors"] >= 1
            if round_ == 2:  # puts succeed; those the live nodes serve reach the pool
                b.put_many([(b"new-%d" % i, b"x" * 100) for i in range(30)], ns="kv")
                assert b.pool is not None
                b.pool.flush()
                assert 0 < b.stats()["pool"]["published"] < 30


def test_a_tls_pool_with_a_password_from_a_file(tmp_path: Path) -> None:
    """``rediss://`` to a redis-server that serves TLS only and wants a password: two servers given the
    password in a file and the CA share records; one given a wrong password still serves its puts and
    gets locally and counts errors."""
    import shutil
    import socket

    from tests.redis_cluster import require_redis
    from tests.test_tls import _certs

    require_redis()
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    (tmp_path / "certs").mkdir()
    certs = _certs(tmp_path / "certs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port", "0",
            "--tls-port", str(port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", certs["server.pem"],
            "--tls-key-file", certs["server.key"],
            "--tls-ca-cert-file", certs["ca.pem"],
            "--tls-auth-clients", "no",
            "--requirepass", "s3cret pass",
            "--save", "",
            "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        (tmp_path / "password").write_text("s3cret pass\n")
        (tmp_path / "wrong").write_text("guess\n")
        url = f"rediss://127.0.0.1:{port}"
        servers = []
        for name, password in (("a", "password"), ("b", "password"), ("c", "wrong")):
            (tmp_path / name).mkdir()
            servers.append(
                serve_command(
                    tmp_path / name,
                    *("--pool", url),
                    *("--pool-password-file", str(tmp_path / password)),
                    *("--pool-ca", certs["ca.pem"]),
                )
            )
        (cmd_a, a), (cmd_b, b), (cmd_c, c) = servers
        with (
            served(cmd_a, a),
            served(cmd_b, b),
            served(cmd_c, c),
            Client(a) as ca,
            Client(b) as cb,
            Client(c) as cc,
        ):
            for client in (ca, cb, cc):
                client.create_namespace("kv", shared=True)
            ca.put_many([(b"k%d" % i, b"v%d" % i * 1000) for i in range(20)], ns="kv")
            wait_published(ca, 20)
            assert cb.get_many([b"k%d" % i for i in range(20)], ns="kv") == [
                b"v%d" % i * 1000 for i in range(20)
            ]
            assert cb.stats()["pool"]["hits"] == 20
            cc.put(b"mine", b"kept here", ns="kv")  # the pool refuses c: its calls still succeed
            assert cc.get(b"k1", ns="kv") is None and cc.get(b"mine", ns="kv") == b"kept here"
            deadline = time.monotonic() + 30
            while cc.stats()["pool"]["errors"] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert cc.stats()["pool"]["published"] == 0
    finally:
        redis.kill()
        redis.wait()
