"""Agent memory: versions, deletes, pagination, namespaces, filters, search against numpy, TTL, restarts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from memstore.errors import InvalidValueError
from memstore.memory import MemoryStore, VersionConflict, matches
from tests.conftest import MiB, open_store


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def mem(tmp_path):  # type: ignore[no-untyped-def]
    store = open_store(str(tmp_path / "s"), cold_bytes=256 * MiB)
    clock = Clock()
    m = MemoryStore(store, clock=clock, sweep_interval=None)
    m.clock_obj = clock  # type: ignore[attr-defined]
    yield m
    m.close()
    store.close()


NS = ("user-1", "agent-a", "facts")


def test_versions_cas_history_revert(mem) -> None:  # type: ignore[no-untyped-def]
    assert mem.put(NS, "likes", {"food": "tea"}, text="likes tea", tags=["pref"]) == 1
    assert mem.put(NS, "likes", {"food": "coffee"}, if_version=1) == 2
    with pytest.raises(VersionConflict):
        mem.put(NS, "likes", {"food": "juice"}, if_version=1)
    assert mem.get(NS, "likes").value == {"food": "coffee"}
    assert mem.put(NS, "likes", {"food": "coffee"}, dedup=True) == 2  # unchanged content: no new version
    assert [r.version for r in mem.history(NS, "likes")] == [1, 2]
    assert mem.revert(NS, "likes", 1) == 3
    rec = mem.get(NS, "likes")
    assert rec.value == {"food": "tea"} and rec.version == 3 and rec.tags == ["pref"]
    with pytest.raises(InvalidValueError):
        mem.put(("bad\x1fns",), "k", 1)


def test_soft_and_hard_delete(mem) -> None:  # type: ignore[no-untyped-def]
    mem.put(NS, "a", 1)
    mem.put(NS, "a", 2)
    assert mem.delete(NS, "a")
    assert mem.get(NS, "a") is None
    assert [r.value for r in mem.history(NS, "a")] == [1, 2, 2] and mem.history(NS, "a")[-1].deleted
    assert not mem.delete(NS, "a")  # already soft-deleted
    assert mem.put(NS, "a", 3) == 4  # a write after a soft delete continues the history
    assert mem.delete(NS, "a", hard=True)
    assert mem.get(NS, "a") is None and mem.history(NS, "a") == []
    assert mem.store.keys(ns=mem.ns) == []  # nothing left behind


def test_pagination_reaches_every_record_once(mem) -> None:  # type: ignore[no-untyped-def]
    for batch in range(10):
        mem.put_many(
            [
                {"namespace": ("u", f"s{i % 7}"), "key": f"k{batch:02d}-{i:04d}", "value": i}
                for i in range(1000)
            ]
        )
    seen, cursor, pages = [], None, 0
    while True:
        records, cursor = mem.list(("u",), cursor=cursor, limit=333)
        seen += [(r.namespace, r.key) for r in records]
        pages += 1
        if cursor is None:
            break
    assert len(seen) == 10_000 and len(set(seen)) == 10_000 and pages == 31
    assert seen == sorted(seen)


def test_list_namespaces(mem) -> None:  # type: ignore[no-untyped-def]
    for ns in [("u1", "a", "facts"), ("u1", "a", "prefs"), ("u1", "b", "facts"), ("u2", "a", "facts")]:
        mem.put(ns, "k", 1)
    assert mem.list_namespaces(prefix=("u1",)) == [
        ("u1", "a", "facts"),
        ("u1", "a", "prefs"),
        ("u1", "b", "facts"),
    ]
    assert mem.list_namespaces(suffix=("prefs",)) == [("u1", "a", "prefs")]
    assert mem.list_namespaces(max_depth=2) == [("u1", "a"), ("u1", "b"), ("u2", "a")]


def test_filter_semantics() -> None:
    from memstore.memory import MemoryRecord

    r = MemoryRecord(("n",), "k", metadata={"kind": "fact", "score": 7, "lang": "en"}, tags=["a", "b"])
    assert matches(r, {"kind": "fact"}) and not matches(r, {"kind": "pref"})
    assert matches(r, {"score": {"$gte": 7, "$lt": 8}}) and not matches(r, {"score": {"$gt": 7}})
    assert matches(r, {"lang": {"$in": ["en", "de"]}}) and matches(r, {"lang": {"$ne": "de"}})
    assert matches(r, {"$or": [{"kind": "pref"}, {"score": 7}]})
    assert matches(r, {"$and": [{"kind": "fact"}, {"$not": {"lang": "de"}}]})
    assert matches(r, {"$tags": ["a"]}) and not matches(r, {"$tags": ["a", "c"]})
    assert not matches(r, {"missing": {"$gt": 1}})
    with pytest.raises(InvalidValueError):
        matches(r, {"score": {"$regex": "x"}})


def test_vector_search_equals_numpy_brute_force(mem, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((500, 64)).astype(np.float32)
    mem.put_many(
        [
            {"namespace": ("u", "docs"), "key": f"d{i}", "embedding": v, "metadata": {"even": i % 2 == 0}}
            for i, v in enumerate(vecs)
        ]
    )
    q = rng.standard_normal(64).astype(np.float32)
    got = mem.search(("u",), vector=q, top_k=10)
    cos = vecs @ q / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(q))
    assert [r.key for r in got] == [f"d{i}" for i in np.argsort(-cos)[:10]]
    assert np.allclose([r.score for r in got], np.sort(cos)[::-1][:10], atol=1e-5)
    evens = mem.search(("u",), vector=q, top_k=5, filter={"even": True})
    ref = [i for i in np.argsort(-cos) if i % 2 == 0][:5]
    assert [r.key for r in evens] == [f"d{i}" for i in ref]
    page2 = mem.search(("u",), vector=q, top_k=10, cursor=10)
    assert [r.key for r in page2] == [f"d{i}" for i in np.argsort(-cos)[10:20]]


def test_keyword_and_hybrid_search(mem) -> None:  # type: ignore[no-untyped-def]
    mem.put(NS, "tea", text="the user likes green tea in the morning", embedding=[1, 0, 0])
    mem.put(NS, "cat", text="the user has a cat called Miso", embedding=[0, 1, 0])
    mem.put(NS, "job", text="works as a nurse", embedding=[0, 0, 1])
    assert mem.search(NS, query="green tea")[0].key == "tea"
    assert mem.search(NS, query="cat")[0].key == "cat"
    both = mem.search(NS, query="cat", vector=[0, 0, 1], alpha=0.5)
    assert {both[0].key, both[1].key} == {"cat", "job"}


def test_ttl_expiry_refresh_and_sweeper(mem) -> None:  # type: ignore[no-untyped-def]
    clock = mem.clock_obj
    mem.put(NS, "short", 1, ttl=10)
    mem.put(NS, "kept", 2)
    clock.t += 8
    assert mem.get(NS, "short").value == 1  # read at t+8 refreshes: expires at t+18 now
    clock.t += 8
    assert mem.get(NS, "short") is not None
    clock.t += 11
    assert mem.get(NS, "short") is None  # past its refreshed TTL
    assert mem.sweep() == 1 and mem.get(NS, "kept").value == 2
    assert mem.history(NS, "short") == []


def test_as_of_and_validity(mem) -> None:  # type: ignore[no-untyped-def]
    clock = mem.clock_obj
    mem.put(NS, "city", "Paris", text="lives in Paris")
    t1 = clock.t
    clock.t += 100
    mem.put(NS, "city", "Oslo", text="lives in Oslo")
    assert mem.search(NS, query="lives", as_of=t1 + 1)[0].value == "Paris"
    assert mem.search(NS, query="lives")[0].value == "Oslo"
    mem.put(NS, "promo", "spring sale", text="sale", valid_from=clock.t + 50, valid_to=clock.t + 60)
    assert mem.search(NS, query="sale") == []
    clock.t += 55
    assert [r.key for r in mem.search(NS, query="sale")] == ["promo"]


def test_records_survive_a_restart(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    path = str(tmp_path / "s")
    store = open_store(path)
    mem = MemoryStore(store, sweep_interval=None)
    emb = [rng.random() for _ in range(8)]
    mem.put(NS, "k", {"x": 1}, text="hello", embedding=emb, metadata={"m": 1}, tags=["t"])
    mem.put(NS, "k", {"x": 2})
    mem.close()
    store.close()
    store = open_store(path)
    mem = MemoryStore(store, sweep_interval=None)
    rec = mem.get(NS, "k")
    assert rec.value == {"x": 2} and rec.version == 2
    first = mem.history(NS, "k")[0]
    assert first.text == "hello" and np.allclose(first.embedding, emb) and first.tags == ["t"]
    mem.close()
    store.close()


def test_kv_invalidation_touches_only_dependent_blocks(mem) -> None:  # type: ignore[no-untyped-def]
    store = mem.store
    store.create_namespace("kv-x")
    for k in (b"a1", b"a2", b"b1", b"free"):
        store.put(k, b"block " + k, ns="kv-x")
    v_a = mem.put(NS, "profile", {"name": "Ada"})
    v_b = mem.put(NS, "prefs", {"tea": True})
    mem.register_kv_dependency("kv-x", [b"a1", b"a2"], [(NS, "profile", v_a)])
    mem.register_kv_dependency("kv-x", [b"b1"], [(NS, "prefs", v_b)])
    mem.put(NS, "profile", {"name": "Ada L."})  # profile changed: its blocks go
    assert store.get_many([b"a1", b"a2", b"b1", b"free"], ns="kv-x") == [
        None,
        None,
        b"block b1",
        b"block free",
    ]
    mem.delete(NS, "prefs")
    assert store.get(b"b1", ns="kv-x") is None and store.get(b"free", ns="kv-x") == b"block free"
    # registering against a version that is already stale drops the blocks at once
    store.put(b"c1", b"block c1", ns="kv-x")
    mem.register_kv_dependency("kv-x", [b"c1"], [(NS, "profile", v_a)])
    assert store.get(b"c1", ns="kv-x") is None


def test_sessions_prefetch_and_pin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = open_store(str(tmp_path / "s"), hot_bytes=256 << 10, warm_bytes=256 << 10, cold_bytes=64 * MiB)
    mem = MemoryStore(store, sweep_interval=None)
    try:
        rng = random.Random(0)
        for i in range(40):  # 40 x 20 KB: most of it is pushed below the hot tier
            mem.put(NS, f"n{i}", i, text=rng.randbytes(10_000).hex(), tags=["pinned"] if i == 3 else [])
        store.flush()
        key3 = mem._key("r", NS, "n3")
        mem.open_session("s1", NS, recent=4)
        for _ in range(2000):
            if store.tiers_of([key3], ns=mem.ns) == ["hot"] and store.stats()["hot"]["prefetch_issued"]:
                break
            import time

            time.sleep(0.005)
        assert store.tiers_of([key3], ns=mem.ns) == ["hot"]  # the pinned record was brought up
        assert store.stats()["pinned"] == 1
        mem.close_session("s1")
        assert store.stats()["pinned"] == 0
    finally:
        mem.close()
        store.close()


def test_heat_tiering(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    from memstore.memory import IN_STORE

    rng = random.Random(seed)
    store = open_store(str(tmp_path / "s"), hot_bytes=256 << 10, warm_bytes=256 << 10, cold_bytes=64 * MiB)
    clock = Clock()
    mem = MemoryStore(store, clock=clock, sweep_interval=None)
    try:
        blobs = {i: rng.randbytes(10_000).hex() for i in range(60)}
        for i, blob in blobs.items():
            mem.put(NS, f"n{i}", {"blob": blob}, text=f"note {i}")
        store.flush()
        keys = [mem._key("r", NS, f"n{i}") for i in range(60)]
        assert mem._live[(NS, "n0")].value is IN_STORE  # the index holds no values
        assert store.tiers_of(keys, ns=mem.ns).count("cold") > 20  # unread records sank to LMDB
        assert mem.get(NS, "n0").value == {"blob": blobs[0]}
        assert store.tiers_of(keys[:1], ns=mem.ns) == ["hot"]  # a read brings a record up
        assert [r.value["blob"] for r in mem.search(NS, query="note 7", top_k=60) if r.key == "n7"] == [
            blobs[7]
        ]
        h1 = mem.heat(NS, "n0")
        mem.get(NS, "n0")
        h2 = mem.heat(NS, "n0")
        assert h2 > h1
        clock.t += MemoryStore.HEAT_HALF_LIFE
        assert abs(mem.heat(NS, "n0") - h2 / 2) < 1e-9  # heat decays with its half-life
    finally:
        mem.close()
        store.close()
