"""pytest plugin for LangGraph's published store tests: the store class their fixtures build
(``SqliteStore``, ``AsyncSqliteStore``, ``InMemoryStore``) is swapped, in the imported test module
only, for a memstore-backed ``MemstoreStore`` that the fixtures build the same way. Nothing else of
the files changes. Loaded with ``-p swap`` by ``tests/test_langgraph_peers.py``."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from memstore import TieredStore
from memstore.adapters.langgraph import MemstoreStore
from memstore.memory import MemoryStore

MiB = 1 << 20


class _Backed(MemstoreStore):
    """A MemstoreStore over its own in-process store, in a data dir named after the connection string
    (a fresh one for ":memory:"), so that reopening a file reopens its data."""

    _owned: tuple[TieredStore, MemoryStore, str | None]

    @classmethod
    def _open(cls, conn_string: str, index: Any = None, ttl: Any = None, **_: Any) -> _Backed:
        scratch = tempfile.mkdtemp(prefix="lg-memstore-") if conn_string == ":memory:" else None
        path = scratch or f"{conn_string}.memstore"
        store = TieredStore(path, hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=256 * MiB, prefault=False)
        memory = MemoryStore(store)
        self = object.__new__(cls)
        MemstoreStore.__init__(self, memory, index=index, ttl=ttl)
        self._owned = (store, memory, scratch)
        return self

    def _close(self) -> None:
        store, memory, scratch = self._owned
        MemstoreStore.stop_ttl_sweeper(self)  # the sync one, whatever a subclass makes of it
        memory.close()
        store.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


class SyncStore(_Backed):
    @classmethod
    @contextlib.contextmanager
    def from_conn_string(cls, conn_string: str, **kwargs: Any) -> Iterator[SyncStore]:
        self = cls._open(conn_string, **kwargs)
        try:
            yield self
        finally:
            self._close()

    def setup(self) -> None:
        """Nothing to migrate: memstore keeps its own layout."""


class AsyncStore(_Backed):
    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(cls, conn_string: str, **kwargs: Any) -> AsyncIterator[AsyncStore]:
        self = cls._open(conn_string, **kwargs)
        try:
            yield self
        finally:
            self._close()

    async def setup(self) -> None:  # type: ignore[override]
        """Nothing to migrate."""

    async def sweep_ttl(self) -> int:  # type: ignore[override]
        return MemstoreStore.sweep_ttl(self)

    async def start_ttl_sweeper(self) -> None:  # type: ignore[override]
        MemstoreStore.start_ttl_sweeper(self)

    async def stop_ttl_sweeper(self) -> None:  # type: ignore[override]
        MemstoreStore.stop_ttl_sweeper(self)


class InMemory(_Backed):
    """Stands where ``InMemoryStore(index=...)`` stood."""

    def __new__(cls, *args: Any, **kwargs: Any) -> InMemory:
        return cls._open(":memory:", index=kwargs.get("index"), ttl=kwargs.get("ttl"))  # type: ignore[return-value]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Made in ``__new__`` already."""

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


SWAPS = {"SqliteStore": SyncStore, "AsyncSqliteStore": AsyncStore, "InMemoryStore": InMemory}


class _Swapped(pytest.Module):
    def _getobj(self) -> Any:
        module = super()._getobj()
        for name, replacement in SWAPS.items():
            if hasattr(module, name):
                setattr(module, name, replacement)
        return module


def pytest_pycollect_makemodule(module_path: Any, parent: Any) -> Any:
    if module_path.name.startswith("test_"):
        return _Swapped.from_parent(parent, path=module_path)
    return None
