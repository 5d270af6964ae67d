"""Per-tenant quotas: byte limits per tier, record limits, reserved shares, the status over gRPC, and
namespace deletes racing writers and shared-memory reservations."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from memstore import Client, TieredStore
from memstore.client import RemoteCapacityError
from memstore.errors import (
    QuotaExceededError,
    UnknownNamespaceError,
    UnknownReservationError,
)
from memstore.quota import Quota
from memstore.record import RecordMeta
from memstore_server import create_server
from tests.conftest import MiB, open_store

KiB = 1 << 10


def _value(rng: np.random.Generator, n: int = 64 * KiB) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def test_byte_limits_per_tier_hold_and_spare_other_tenants(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    quota = Quota(hot_bytes=512 * KiB, warm_bytes=512 * KiB, cold_bytes=2 * MiB)
    store = open_store(str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, quotas={"a": quota})
    try:
        store.create_namespace("a#x")
        store.create_namespace("b#x")
        b_values = {b"k%d" % i: _value(rng) for i in range(8)}
        store.put_many(b_values, ns="b#x")
        a_values = {b"k%d" % i: _value(rng) for i in range(80)}  # 5 MiB against 3 MiB of quota
        for k, v in a_values.items():
            store.put(k, v, ns="a#x")
            usage = store.stats()["tenants"]["a"]
            for tier in ("hot", "warm", "cold"):
                assert usage[f"{tier}_bytes"] <= quota.limit(tier)
        assert store.get(b"k79", ns="a#x") == a_values[b"k79"]  # the newest stays
        held = [k for k in a_values if store.get(k, ns="a#x") is not None]
        assert 0 < len(held) < len(a_values)  # the oldest made room; what is served is right
        assert all(store.get(k, ns="a#x") == a_values[k] for k in held)
        assert all(store.get(k, ns="b#x") == v for k, v in b_values.items())  # b untouched
        assert store.tiers_of(list(b_values), ns="b#x") == ["hot"] * 8
    finally:
        store.close()


def test_record_limit_refuses_new_keys_only(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    store = open_store(str(tmp_path / "s"), quotas={"a": Quota(records=10)})
    try:
        store.create_namespace("a#x")
        store.create_namespace("a#p", durability="persistent")
        for i in range(6):
            store.put(b"k%d" % i, _value(rng, 100), ns="a#x")
        for i in range(4):
            store.put(b"k%d" % i, _value(rng, 100), ns="a#p")  # the limit spans namespaces
        for ns in ("a#x", "a#p"):
            with pytest.raises(QuotaExceededError):
                store.put(b"new", b"v", ns=ns)
        assert store.get(b"new", ns="a#x") is None
        store.put(b"k0", b"overwrite", ns="a#x")  # an existing key is not a new record
        assert store.get(b"k0", ns="a#x") == b"overwrite"
        store.put(b"other", b"v", ns="default")  # another tenant is not counted
        assert store.delete(b"k1", ns="a#x")
        store.put(b"new", b"v", ns="a#x")
        assert store.stats()["tenants"]["a"]["records"] == 10
    finally:
        store.close()


def test_persistent_over_cold_quota_is_refused_and_loses_nothing(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    path = str(tmp_path / "s")
    store = open_store(path, quotas={"a": Quota(cold_bytes=1 * MiB)})
    store.create_namespace("a#p", durability="persistent")
    kept = {}
    with pytest.raises(QuotaExceededError):
        for i in range(40):
            v = _value(rng)
            store.put(b"k%d" % i, v, ns="a#p")
            kept[b"k%d" % i] = v
    assert 8 <= len(kept) < 40
    store.delete(b"k0", ns="a#p")  # room again: puts resume without a restart
    del kept[b"k0"]
    store.put(b"again", b"v", ns="a#p")
    kept[b"again"] = b"v"
    store.close()
    with TieredStore(path, hot_bytes=4 * MiB, prefault=False) as reopened:
        assert all(reopened.get(k, ns="a#p") == v for k, v in kept.items())


def test_reserved_share_survives_another_tenants_flood(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    quotas = {"b": Quota(reserved_hot_bytes=1 * MiB)}
    store = open_store(str(tmp_path / "s"), hot_bytes=4 * MiB, quotas=quotas)
    try:
        store.create_namespace("a#x")
        store.create_namespace("b#x")
        b_keys = [b"b%d" % i for i in range(12)]  # 768 KiB, inside the reservation
        store.put_many({k: _value(rng) for k in b_keys}, ns="b#x")
        for i in range(200):  # 12.5 MiB through a 4 MiB hot tier
            store.put(b"a%d" % i, _value(rng), ns="a#x")
        assert store.tiers_of(b_keys, ns="b#x") == ["hot"] * len(b_keys)
        assert store.stats()["hot"]["demotions"] > 100  # a's data did move through
    finally:
        store.close()


def test_quota_over_grpc_is_resource_exhausted_for_that_tenant_only(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    from memstore_server.auth import create_token

    tokens = str(tmp_path / "tokens")
    ta, tb = create_token(tokens, "alice", "write"), create_token(tokens, "bob", "write")
    store = open_store(str(tmp_path / "s"), quotas={"alice": Quota(records=3)})
    sock = f"unix:{tmp_path}/m.sock"
    running = create_server(store, sock, auth_tokens=tokens)
    try:
        with Client(sock, token=ta, local="never") as a, Client(sock, token=tb, local="never") as b:
            a.put_many([(b"k%d" % i, b"v") for i in range(3)])
            with pytest.raises(RemoteCapacityError) as err:
                a.put(b"k3", b"v")
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota" in err.value.details
            b.put_many([(b"k%d" % i, b"v") for i in range(10)])  # bob has no quota
            assert a.get(b"k2") == b"v" and b.get(b"k9") == b"v"
    finally:
        running.stop(1)
        store.close()


def test_quotas_file_is_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from memstore.quota import load_quotas
    from memstore_server.config import parse_size

    good = tmp_path / "q.json"
    good.write_text(json.dumps({"alice": {"hot_bytes": "1MiB", "records": 5, "reserved_hot_bytes": 4096}}))
    assert load_quotas(str(good), parse_size)["alice"] == Quota(
        hot_bytes=MiB, records=5, reserved_hot_bytes=4096
    )
    for bad in ({"alice": {"hot": 1}}, {"alice": {"records": -1}}, {"alice": 5}, [1]):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            load_quotas(str(path), parse_size)


def test_reservations_count_toward_the_hot_quota(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Arena space reserved for the shared-memory path counts from the reservation on: uncommitted
    reservations cannot take more than the tenant's hot quota, a commit does not count twice, and an
    abort gives the room back."""
    quota = Quota(hot_bytes=256 * KiB)
    store = open_store(str(tmp_path / "s"), hot_bytes=8 * MiB, quotas={"a": quota})
    try:
        store.create_namespace("a#x")
        held = []
        for i in range(8):  # 512 KiB asked against 256 KiB of quota, nothing committed
            r = store.local.reserve_put(b"k%d" % i, 64 * KiB, ns="a#x")
            if r is not None:
                held.append(r)
        assert 0 < len(held) < 8
        used = store.stats()["tenants"]["a"]["hot_bytes"]
        assert used <= quota.limit("hot")
        store.local.commit_put(held[0].token)
        assert store.stats()["tenants"]["a"]["hot_bytes"] == used
        assert store.local.abort_put(held[1].token)
        assert store.stats()["tenants"]["a"]["hot_bytes"] < used
        assert store.local.reserve_put(b"again", 64 * KiB, ns="a#x") is not None  # the aborted room is back
    finally:
        store.close()


def test_deleting_a_namespace_cancels_its_open_reservations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = open_store(str(tmp_path / "s"), hot_bytes=1 * MiB, warm_bytes=1 * MiB)
    try:
        store.create_namespace("gone")
        r = store.local.reserve_put(b"k", 64 * KiB, ns="gone")
        assert r is not None
        store.delete_namespace("gone")
        with pytest.raises(UnknownReservationError):
            store.local.commit_put(r.token)
        for i in range(40):  # enough to push everything out of hot and warm: no record of no namespace
            store.put(b"f%d" % i, bytes(64 * KiB))
        assert store.stats()["hot"]["items"] + store.stats()["warm"]["items"] > 0
    finally:
        store.close()


@pytest.mark.parametrize("durability", ["cache", "persistent"])
def test_a_writer_that_raced_a_namespace_delete_is_refused(tmp_path, durability) -> None:  # type: ignore[no-untyped-def]
    """Writers look their namespace up before taking the store's lock: one deleted (even recreated)
    in between is refused under the lock, so no record of a dead namespace is ever indexed."""
    store = open_store(str(tmp_path / "s"))
    try:
        store.create_namespace("x", durability=durability)
        looked_up = store._namespaces.named("x")  # what a put holds between its lookup and the lock
        store.delete_namespace("x")
        store.create_namespace("x", durability=durability)
        raw = memoryview(b"v" * 100)
        meta = RecordMeta(0, 100)
        put = store._put_persistent if durability == "persistent" else store._put_cache
        with pytest.raises(UnknownNamespaceError):  # NOT_FOUND over gRPC
            put(looked_up, looked_up.prefix + b"k", raw, meta, None)
        store.put(b"k", b"fresh", ns="x")  # the live namespace takes writes
        assert store.get(b"k", ns="x") == b"fresh"
    finally:
        store.close()
