"""Prefetch modes, cancellation, lookahead, hints, and used/wasted accounting."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import MiB, open_store


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    # A small hot tier: values live in warm/cold until something promotes them. LRU: a key just
    # promoted is the last to go, so what these tests expect to find in hot does not hang on the policy.
    s = open_store(
        str(tmp_path / "s"), hot_bytes=512 << 10, warm_bytes=256 << 10, cold_bytes=64 * MiB, policy="lru"
    )
    yield s
    s.close()


def _fill(store, n: int, size: int = 100_000) -> list[bytes]:  # type: ignore[no-untyped-def]
    keys = [b"k%03d" % i for i in range(n)]
    for i, k in enumerate(keys):
        store.put(k, bytes([i % 251]) * size)
    store.flush()
    return keys


def _blocked(store):  # type: ignore[no-untyped-def]
    """Make the prefetch workers wait on a gate before each key."""
    gate = threading.Event()
    original = store._prefetcher._promote

    def slow(fk: bytes) -> bool:
        gate.wait(30)
        return bool(original(fk))

    store._prefetcher._promote = slow
    return gate


def _until(cond, tries: int = 2000) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(tries):
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_modes_never_hold_the_caller_longer_than_promised(store) -> None:  # type: ignore[no-untyped-def]
    keys = _fill(store, 12)
    assert store.tiers_of(keys[:3]) != ["hot"] * 3
    gate = _blocked(store)
    task = store.prefetch(keys[:3], mode="best_effort")
    assert not task.done()  # returned although the workers are stuck
    task2 = store.prefetch(keys[3:6], mode="timeout", timeout=0.05)
    assert not task2.done()  # gave up waiting
    assert store.get(keys[11]) is not None  # a get is not held up by prefetch work
    finished = threading.Event()
    t = threading.Thread(target=lambda: (store.prefetch(keys[6:8], mode="wait_complete"), finished.set()))
    t.start()
    assert not finished.wait(0.2)  # wait_complete waits for the work...
    gate.set()
    t.join(30)
    assert finished.is_set()  # ...and returns once it is done
    assert task.wait(30) and task2.wait(30)
    assert store.tiers_of(keys[6:8]) == ["hot", "hot"]


def test_cancel_and_bounded_queue(store) -> None:  # type: ignore[no-untyped-def]
    keys = _fill(store, 12)
    gate = _blocked(store)
    first = store.prefetch(keys, mode="best_effort")
    first.cancel()
    queued = [store.prefetch(keys[:1], mode="best_effort") for _ in range(store._prefetcher._max_queued + 5)]
    assert any(t.dropped for t in queued)  # best effort work beyond the queue's bound is dropped
    gate.set()
    assert first.wait(30)
    assert first.handled < len(keys)  # stopped at the next key after the cancel


def test_used_and_wasted_prefetches_are_counted(store) -> None:  # type: ignore[no-untyped-def]
    keys = _fill(store, 12)
    task = store.prefetch(keys[:3], mode="wait_complete")
    assert task.promoted == 3
    store.get(keys[0])
    store.get(keys[1])
    for i in range(20):  # push the third one out of hot unread
        store.put(b"flood%d" % i, b"x" * 100_000)
    st = store.stats()["hot"]
    assert st["prefetch_issued"] == 3 and st["prefetch_used"] == 2 and st["prefetch_wasted"] == 1


def test_lookahead_promotes_the_cached_prefix(store) -> None:  # type: ignore[no-untyped-def]
    keys = _fill(store, 12)
    chain = [*keys[:4], b"missing", *keys[4:6]]
    tiers = store.tiers_of(chain, lookahead=True)
    below = sum(t in ("warm", "cold") for t in tiers[:4])
    assert tiers[4] is None and below > 0
    assert _until(lambda: store.tiers_of(keys[:4]) == ["hot"] * 4)
    # only the leading run was prefetched: nothing after the first miss
    assert store.stats()["hot"]["prefetch_issued"] == below


def test_hint_promotes_a_key_prefix(store) -> None:  # type: ignore[no-untyped-def]
    _fill(store, 12)
    store.put(b"session-7/a", b"a" * 100_000)
    store.put(b"session-7/b", b"b" * 100_000)
    _fill(store, 12)  # push them down
    assert store.tiers_of([b"session-7/a", b"session-7/b"]) != ["hot", "hot"]
    store.hint(prefix=b"session-7/")
    assert _until(lambda: store.tiers_of([b"session-7/a", b"session-7/b"]) == ["hot", "hot"])
