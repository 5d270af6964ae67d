"""I/O faults injected at the N-th LMDB write call (begin, put, delete, commit, sync), N = 1, 2, ...

Each fault is a burst of failing calls, then it clears. Every operation either succeeds or raises a
documented ``MemstoreError``; the writer keeps running; and after the fault clears and the store is
reopened, every key holds a value the model allows (the last acknowledged one, or for an operation
that failed, the value before or after it): no partial record, nothing acknowledged lost.
"""

from __future__ import annotations

from typing import Any

import lmdb
import numpy as np

from memstore import TieredStore
from memstore.errors import MemstoreError
from tests.conftest import MiB, open_store

BURST = 3


class _Faults:
    def __init__(self, first: int) -> None:
        self.calls = 0
        self.first = first
        self.injected = 0

    def tick(self) -> None:
        self.calls += 1
        if self.first <= self.calls < self.first + BURST:
            self.injected += 1
            raise lmdb.Error(f"injected I/O fault at LMDB write call {self.calls}")


class _Txn:
    def __init__(self, txn: Any, faults: _Faults) -> None:
        self._txn, self._faults = txn, faults

    def put(self, *args: Any, **kw: Any) -> Any:
        self._faults.tick()
        return self._txn.put(*args, **kw)

    def delete(self, *args: Any, **kw: Any) -> Any:
        self._faults.tick()
        return self._txn.delete(*args, **kw)

    def __enter__(self) -> _Txn:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None:
            self._txn.abort()
            return
        try:
            self._faults.tick()
        except lmdb.Error:
            self._txn.abort()
            raise
        self._txn.commit()


class _Env:
    """The LMDB environment with its write calls counted and, in the burst, failing."""

    def __init__(self, env: Any, faults: _Faults) -> None:
        self._env, self._faults = env, faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def begin(self, *args: Any, write: bool = False, **kw: Any) -> Any:
        if not write:
            return self._env.begin(*args, write=write, **kw)
        self._faults.tick()
        return _Txn(self._env.begin(*args, write=True, **kw), self._faults)

    def sync(self, *args: Any) -> Any:
        self._faults.tick()
        return self._env.sync(*args)


def _run_with_fault(path: str, first: int, rng: np.random.Generator) -> tuple[int, int]:
    allowed: dict[bytes, set[bytes | None]] = {}
    store = open_store(path, cold_bytes=64 * MiB)
    store.create_namespace("p", durability="persistent")
    faults = _Faults(first)
    real_env = store._cold.env
    store._cold.env = _Env(real_env, faults)
    errors = 0
    for step in range(24):
        key = b"k%d" % rng.integers(0, 6)
        before = allowed.get(key, {None})
        if step % 5 == 4:
            try:
                store.delete(key, ns="p")
                allowed[key] = {None}
            except MemstoreError:
                errors += 1
                allowed[key] = before | {None}
            continue
        value = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        try:
            store.put(key, value, ns="p")
            allowed[key] = {value}
        except MemstoreError:
            errors += 1
            allowed[key] = before | {value}
        assert store.get(key, ns="p") in allowed[key] | {None}  # a miss while failed writes settle
    store._cold.env = real_env
    store.close()
    with TieredStore(path, hot_bytes=4 * MiB, prefault=False) as reopened:
        for key, values in allowed.items():
            assert reopened.get(key, ns="p") in values, f"fault at call {first}: {key!r}"
        assert reopened.stats()["cold"]["checksum_failures"] == 0
        reopened.put(b"after", b"the fault cleared", ns="p")
        assert reopened.get(b"after", ns="p") == b"the fault cleared"
    return faults.injected, errors


def test_injected_lmdb_write_faults(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    injected = surfaced = 0
    for first in range(1, 41):
        n, errors = _run_with_fault(str(tmp_path / f"s{first}"), first, rng)
        injected += n
        surfaced += errors
    print(f"injected {injected} LMDB faults at call N = 1..40 (bursts of {BURST}); {surfaced} surfaced")
    assert injected >= 40 and surfaced > 0
