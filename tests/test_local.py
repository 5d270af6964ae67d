"""The local path: copies out of the server's arena that never accept torn or stale bytes."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import time

import numpy as np
import pytest

import memstore.local
from memstore import Client, TieredStore
from memstore.local import LocalUnavailable
from memstore_server import create_server
from tests.conftest import MiB


@pytest.fixture
def served(tmp_path):  # type: ignore[no-untyped-def]
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=2 * MiB, warm_bytes=8 * MiB, cold_bytes=256 * MiB, prefault=False
    )
    sock = f"unix:{tmp_path}/m.sock"
    running = create_server(store, sock)
    yield store, sock
    running.stop(1)
    store.close()


def _value(key: bytes, version: int, size: int) -> bytes:
    head = b"%s|%d|" % (key, version)
    return head + random.Random(hashlib.sha256(head).digest()).randbytes(size - len(head))


def test_eviction_and_reuse_between_lookup_and_copy_is_never_accepted(served, seed) -> None:  # type: ignore[no-untyped-def]
    store, target = served
    rng = random.Random(seed)
    keys = [b"key-%02d" % i for i in range(12)]
    latest: dict[bytes, int] = {}
    with Client(target, local="always") as c:
        for k in keys:
            latest[k] = 0
            c.put(k, _value(k, 0, 100_000))
        reading: list[bytes] = []

        def meddle(slot: int) -> None:  # runs after the client located the record, before it copies
            key = reading[0]
            roll = rng.random()
            if roll < 0.3:  # overwrite: the old slot is freed, its space reused
                latest[key] += 1
                store.put(key, _value(key, latest[key], 100_000))
            elif roll < 0.5:  # flood: evicts the located record from the arena
                for i in range(25):
                    store.put(b"flood-%d" % i, rng.randbytes(100_000))
            elif roll < 0.6:
                store.delete(key)
                latest[key] = -1

        c._local_arena().before_copy = meddle  # type: ignore[union-attr]
        stale = 0
        for _ in range(300):
            key = rng.choice(keys)
            reading[:] = [key]
            got = c.get(key)
            want = None if latest[key] < 0 else _value(key, latest[key], 100_000)
            stale += got != want
            if latest[key] < 0 and rng.random() < 0.5:  # bring deleted keys back
                latest[key] = 0
                store.put(key, _value(key, 0, 100_000))
        c._local_arena().before_copy = None  # type: ignore[union-attr]
        assert stale == 0
        assert c.local_stats["local_retries"] > 20  # the meddling was seen and refused
        assert c.local_stats["local_copies"] > 100


def test_bytes_identical_to_grpc_for_every_dtype(served, seed) -> None:  # type: ignore[no-untyped-def]
    _, target = served
    rng = np.random.default_rng(seed)
    values = {
        f"{dt}".encode(): (rng.standard_normal((3, 257)) * 50).astype(dt)
        for dt in ("u1", "i1", "<u2", "<f2", "<i4", "<f4", "<f8", "<i8", ">f4", "?", "<c8")
    }
    values[b"bytes"] = rng.bytes(12345)
    with Client(target, local="always") as local, Client(target, local="never") as remote:
        local.put_many(values)
        via_local = local.get_many(list(values))
        via_grpc = remote.get_many(list(values))
        for (k, want), a, b in zip(values.items(), via_local, via_grpc, strict=True):
            if isinstance(want, np.ndarray):
                assert a.dtype == b.dtype == want.dtype and a.shape == b.shape == want.shape, k
                assert a.tobytes() == b.tobytes() == want.tobytes(), k
            else:
                assert a == b == want
        outs = [np.empty_like(v) if isinstance(v, np.ndarray) else bytearray(len(v)) for v in values.values()]
        assert local.get_into(list(values), outs) == [
            len(memoryview(v).cast("B")) if not isinstance(v, np.ndarray) else v.nbytes
            for v in values.values()
        ]
        assert all(
            bytes(memoryview(o).cast("B")) == (v.tobytes() if isinstance(v, np.ndarray) else v)
            for o, v in zip(outs, values.values(), strict=True)
        )
        with pytest.raises(ValueError):
            local.get_into([b"bytes"], [bytearray(10)])  # too small: refused, nothing half-written claimed


def test_repeated_gets_need_no_call(served, seed) -> None:  # type: ignore[no-untyped-def]
    store, target = served
    with Client(target, local="always") as c:
        c.put(b"k", b"v" * 1000)
        assert c.get(b"k") == b"v" * 1000
        hits = store.stats()["hot"]["hits"]
        for _ in range(10):
            assert c.get(b"k") == b"v" * 1000
        assert store.stats()["hot"]["hits"] == hits  # served from cached locations, no LocalGet
        c.put(b"k", b"w" * 1000)  # the overwrite moves the record: the cached location is refused
        assert c.get(b"k") == b"w" * 1000


def test_values_that_do_not_fit_the_arena_go_over_grpc(served, seed) -> None:  # type: ignore[no-untyped-def]
    store, target = served
    big = np.random.default_rng(seed).bytes(3 * MiB)  # hot holds at most 1 MiB per value
    with Client(target, local="always") as c:
        c.put(b"big", big)
        assert store.stats()["hot"]["items"] == 0
        assert c.get(b"big") == big
        assert c.local_stats["grpc_fallbacks"] == 1


def test_fallback_when_the_arena_is_elsewhere(served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, target = served
    monkeypatch.setattr(memstore.local, "boot_id", lambda: "another-host")
    with Client(target) as c:
        assert not c.local
        c.put(b"k", b"v")
        assert c.get(b"k") == b"v"
    with Client(target, local="always") as c, pytest.raises(LocalUnavailable):
        c.get(b"k")
    with Client(target, local="never") as c:
        assert not c.local and c.get(b"k") == b"v"


CHILD = """
import sys, time
from memstore import Client
from memstore.v1 import memstore_pb2 as pb
c = Client(sys.argv[1], local="always")
assert c.local
req = pb.LocalPutBeginRequest(lease_ms=300)
req.items.add(key=b"half-written", size=500_000)
ans = pb.LocalPutBeginResponse.FromString(c._local_put_begin(req.SerializeToString()))
assert ans.reserved[0].ok
c._arena.write(ans.reserved[0].offset, memoryview(b"x" * 1000))
print("reserved", flush=True)
time.sleep(60)
"""


def test_a_killed_writer_leaves_nothing_visible_and_no_leaked_space(served) -> None:  # type: ignore[no-untyped-def]
    store, target = served
    base = store.stats()["hot"]["bytes"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, target], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "reserved"
    assert store.stats()["hot"]["bytes"] > base  # the reservation holds arena space
    child.kill()
    child.wait()
    assert store.get(b"half-written") is None
    time.sleep(0.4)  # past the lease
    with Client(target, local="always") as c:
        c.put(b"after", b"y" * 10)  # any reservation reaps expired ones
        assert c.get(b"half-written") is None
    st = store.stats()["hot"]
    assert st["expired_reservations"] == 1
    assert st["bytes"] == base + 64 + 0  # only the new 10-byte record (one 64-byte block) is added
    with pytest.raises(Exception, match="no open reservation"):
        store.local.commit_put(1)


def test_persistent_puts_from_a_local_client_go_through_a_synced_commit(served) -> None:  # type: ignore[no-untyped-def]
    store, target = served
    with Client(target, local="always") as c:
        c.create_namespace("facts", durability="persistent")
        c.put_many({b"a": b"1" * 1000, b"b": b"2"}, ns="facts")
        assert c.get_many([b"a", b"b"], ns="facts") == [b"1" * 1000, b"2"]
    assert store.tiers_of([b"a", b"b"], ns="facts") == ["hot", "hot"]
    assert store.stats()["cold"]["items"] >= 2  # written to LMDB before the put returned


def test_bytes_changed_in_place_under_an_unchanged_generation_are_never_accepted(served, seed) -> None:  # type: ignore[no-untyped-def]
    """Between locating and copying, one byte of the record's payload is flipped where it sits: the slot
    generation does not change, so only the checksum can tell. The client never returns those bytes."""
    store, target = served
    rng = random.Random(seed)
    keys = [b"inplace-%d" % i for i in range(6)]
    with Client(target, local="always") as c:
        for k in keys:
            c.put(k, _value(k, 0, 50_000))
        reading: list[bytes] = []
        flipped: dict[bytes, bytes] = {}

        def meddle(slot: int) -> None:
            key = reading[0]
            (loc,) = store.local.locate_many([key])
            pos = loc.offset + loc.header_len + rng.randrange(50_000)
            store.hot.arena.view[pos] ^= 0x20
            value = bytearray(_value(key, 0, 50_000))
            value[pos - loc.offset - loc.header_len] ^= 0x20
            flipped[key] = bytes(value)

        c._local_arena().before_copy = meddle  # type: ignore[union-attr]
        for k in keys:
            reading[:] = [k]
            got = c.get(k)
            assert got != flipped[k]
            assert got in (None, _value(k, 0, 50_000))
        c._local_arena().before_copy = None  # type: ignore[union-attr]
    assert len(flipped) == len(keys)
