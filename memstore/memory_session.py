"""Agent memory and its sessions: what a resuming agent brings up to the hot tier, and which KV blocks a
changed record invalidates.

``open_session`` promotes an agent's pinned records, its hottest and newest ones, the results of hint
queries and its KV prefix toward hot in the background, and pins what is tagged "pinned";
``close_session`` unpins them and demotes them again. ``register_kv_dependency`` ties KV blocks to the
record versions they were built from, so a later change deletes exactly those blocks.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from memstore.memory_record import check_namespace

if TYPE_CHECKING:
    from memstore.memory import MemoryStore


class Sessions:
    """The sessions and KV dependencies of one ``MemoryStore``."""

    def __init__(self, memory: MemoryStore) -> None:
        self._m = memory
        # KV blocks built from records: (namespace, key) -> [(kv namespace, kv key, record version)]
        self._deps: dict[tuple[tuple[str, ...], str], builtins.list[tuple[str, bytes, int]]] = {}
        self._sessions: dict[str, tuple[builtins.list[tuple[str, bytes]], builtins.list[bytes]]] = {}

    def register_kv_dependency(
        self, kv_namespace: str, kv_keys: Iterable[bytes], records: Iterable[tuple[Sequence[str], str, int]]
    ) -> None:
        """Declare KV blocks (of a memstore KV namespace) as built from records at these versions: a later
        change to any of those records deletes exactly these blocks, nothing else."""
        keys = list(kv_keys)
        with self._m._lock:
            for namespace, key, version in records:
                ident = (check_namespace(namespace), key)
                rec = self._m._live.get(ident)
                if rec is None or rec.deleted or rec.version != version:  # already stale: drop them now
                    for k in keys:
                        self._m.store.delete(k, ns=kv_namespace)
                    continue
                self._deps.setdefault(ident, []).extend((kv_namespace, k, version) for k in keys)

    def invalidate(self, ident: tuple[tuple[str, ...], str], new_version: int) -> None:
        for kv_ns, kv_key, version in self._deps.pop(ident, []):
            if version < new_version:
                self._m.store.delete(kv_key, ns=kv_ns)

    def open_session(
        self,
        session_id: str,
        namespace: Sequence[str],
        *,
        hint_queries: Iterable[str] = (),
        recent: int = 64,
        kv: tuple[str, Iterable[bytes]] | None = None,
    ) -> None:
        """An agent's session resumes: returns at once and promotes its pinned and most recent records, the
        results of the hint queries and (``kv`` = (namespace, keys)) its KV prefix toward the hot tier.
        Records tagged "pinned" are pinned in the store for the session's lifetime."""
        ns = check_namespace(namespace)
        now = self._m.clock()
        with self._m._lock:
            mine = [r for i, r in self._m._live.items() if i[0][: len(ns)] == ns and self._m._alive(r, now)]
        mine.sort(key=lambda r: (-self._m.heat(r.namespace, r.key), -r.updated_at))  # hottest, then newest
        chosen = {(r.namespace, r.key) for r in mine if "pinned" in r.tags} | {
            (r.namespace, r.key) for r in mine[:recent]
        }
        for q in hint_queries:
            chosen |= {(r.namespace, r.key) for r in self._m.search(ns, query=q, top_k=16)}
        keys = [self._m._key("r", n, k) for n, k in chosen]
        pinned = [(self._m.ns, self._m._key("r", r.namespace, r.key)) for r in mine if "pinned" in r.tags]
        for _, k in pinned:
            self._m.store.pin(k, ns=self._m.ns)
        self._m.store.prefetch(keys, ns=self._m.ns, mode="best_effort")
        if kv is not None:
            self._m.store.prefetch(list(kv[1]), ns=kv[0], mode="best_effort")
        with self._m._lock:
            self._sessions[session_id] = (pinned, keys)

    def close_session(self, session_id: str) -> None:
        """The session ends: its records are unpinned and moved out of the hot tier."""
        with self._m._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return
        pinned, keys = session
        for ns, k in pinned:
            self._m.store.unpin(k, ns=ns)
        self._m.store.demote(keys, ns=self._m.ns)
