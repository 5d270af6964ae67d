"""Agent memory: namespaced, versioned, searchable records kept in a persistent namespace of the store.

A record lives at (namespace, key), the namespace a tuple of strings such as ("user-1", "agent-a",
"facts"). It holds a JSON value and/or text, metadata, tags, an optional embedding, created and updated
times, an optional TTL and validity interval, and a version. Writes are acknowledged after a synced
LMDB commit (the store's ``persistent`` class) and records are never evicted for space; hot records are
also cached in the store's hot and warm tiers like any other value.

Heat: the in-memory index keeps what search needs (metadata, text, embeddings); values live only in
the store's tiers, read back for each record returned. Reads go through the store, so records that are
read stay in the hot and warm tiers and the rest sink to LMDB; each read also bumps a decaying heat
(``heat()``), which ``open_session`` uses to pick what to bring up first.

Layout in the store (the tenant's own internal namespace ``TENANT!memory``, ``memstore.tenancy``):
the current version of a record under
``r/<tenant>/<ns parts joined by 0x1f>/0x00<key>``, every earlier version under ``h/...0x00<key>0x00<ver>``
(8 bytes, big-endian). Each value is a 4-byte JSON length, the JSON, then the embedding as float32.
An in-memory index of the live records (metadata, text, embeddings) serves list and search; it is
rebuilt from the store at open.

Notes on threads: one lock guards the index; the store does its own locking. TTL refreshes on read
are kept in memory and written with the record's next update (a restart may expire a record that was
only read since its last write, never keep one longer than its TTL).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from memstore import tenancy
from memstore.errors import InvalidValueError, MemstoreError
from memstore.memory_record import (
    IN_STORE,
    SEP,
    MemoryRecord,
    VersionConflict,
    check_namespace,
    matches,
    record_from_pb,
    record_to_pb,
)
from memstore.memory_search import MemorySearch
from memstore.memory_session import Sessions
from memstore.store import TieredStore

__all__ = [
    "IN_STORE",
    "PAGE_BYTES",
    "MemoryRecord",
    "MemoryStore",
    "VersionConflict",
    "matches",
    "record_from_pb",
    "record_to_pb",
]

# The records of one List or History answer: at least one, otherwise about this many bytes, well below
# the message limit (a record itself arrived in one message, so a page of one always fits).
PAGE_BYTES = 1 << 20
log = logging.getLogger("memstore.memory")


class MemoryStore:
    HEAT_HALF_LIFE = 600.0

    def __init__(
        self,
        store: TieredStore,
        *,
        tenant: str = "default",
        clock: Callable[[], float] = time.time,
        sweep_interval: float | None = 1.0,
        embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
    ) -> None:
        """``embedder`` (for example ``memstore.embed.MiniLMEmbedder()``) embeds the text of records put
        without an embedding, and the query of a ``semantic`` search."""
        self.store = store
        self.embedder = embedder
        self.tenant = tenant
        self.clock = clock
        self._lock = threading.RLock()
        # The tenant's own internal namespace: the Store service cannot name it, and its records count
        # toward the tenant's quotas.
        self.ns = tenancy.qualify(tenant, tenancy.MEMORY, internal=True)
        store.create_namespace(self.ns, durability="persistent")
        self._live: dict[tuple[tuple[str, ...], str], MemoryRecord] = {}
        self._history: dict[tuple[tuple[str, ...], str], builtins.list[int]] = {}
        self._search = MemorySearch(self)
        self.search = self._search.search  # see memstore.memory_search
        self._recall = Sessions(self)
        self.open_session = self._recall.open_session  # see memstore.memory_session
        self.close_session = self._recall.close_session
        self.register_kv_dependency = self._recall.register_kv_dependency
        # KV blocks built from records: (namespace, key) -> [(kv namespace, kv key, record version)]
        self._heat: dict[tuple[tuple[str, ...], str], tuple[float, float]] = {}
        self._load()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        if sweep_interval:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, args=(sweep_interval,), daemon=True, name="memstore-memory-sweeper"
            )
            self._sweeper.start()

    # ---- keys -----------------------------------------------------------------------------------

    def _prefix(self, kind: str) -> bytes:
        return f"{kind}/{self.tenant}/".encode()

    def _key(self, kind: str, ns: tuple[str, ...], key: str, version: int | None = None) -> bytes:
        k = self._prefix(kind) + SEP.join(ns).encode() + b"\x00" + key.encode()
        if version is not None:
            k += b"\x00" + version.to_bytes(8, "big")
        if len(k) > 400:
            raise InvalidValueError("namespace and key are too long together (400 bytes at most)")
        return k

    def _load(self) -> None:
        self.skipped = 0  # stored entries that did not decode
        for raw_key in self.store.keys(ns=self.ns, prefix=self._prefix("r")):
            value = self.store.get(raw_key, ns=self.ns, promote=False)
            if value is None:
                continue
            try:
                rec = MemoryRecord.decode(value)
            except Exception as exc:  # a record that does not decode is skipped, never fatal
                self.skipped += 1
                log.warning(
                    "memory record %r of tenant %r does not decode, skipped: %s", raw_key, self.tenant, exc
                )
                continue
            self._live[(rec.namespace, rec.key)] = self._slim(rec)
            self._index(rec)
        for raw_key in self.store.keys(ns=self.ns, prefix=self._prefix("h")):
            body = raw_key[len(self._prefix("h")) :]
            try:
                ns_part, key_part, ver = body.split(b"\x00", 2)
                ident = (tuple(ns_part.decode().split(SEP)), key_part.decode())
            except ValueError:
                self.skipped += 1
                continue
            self._history.setdefault(ident, []).append(int.from_bytes(ver, "big"))
        for versions in self._history.values():
            versions.sort()

    def _slim(self, rec: MemoryRecord) -> MemoryRecord:
        """The index's copy: everything search needs, the value left to the store's tiers."""
        return replace(rec, value=IN_STORE)

    def _full(self, rec: MemoryRecord) -> MemoryRecord:
        """A record with its value read back from the store (which promotes it: reads keep records hot)."""
        if rec.value is not IN_STORE:
            return replace(rec)
        raw = self.store.get(self._key("r", rec.namespace, rec.key), ns=self.ns)
        value = MemoryRecord.decode(raw).value if raw is not None else None
        return replace(rec, value=value)

    def heat(self, namespace: Sequence[str], key: str) -> float:
        """Reads of the record, each decaying with a half-life of ``HEAT_HALF_LIFE`` seconds."""
        ident = (check_namespace(namespace), key)
        with self._lock:
            h, t = self._heat.get(ident, (0.0, self.clock()))
        return float(h * 0.5 ** ((self.clock() - t) / self.HEAT_HALF_LIFE))

    def _index(self, rec: MemoryRecord) -> None:
        self._search.index(rec)

    # ---- writes ---------------------------------------------------------------------------------

    def put(
        self,
        namespace: Sequence[str],
        key: str,
        value: Any = None,
        *,
        text: str | None = None,
        embedding: Sequence[float] | np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        ttl: float | None = None,
        if_version: int | None = None,
        valid_from: float | None = None,
        valid_to: float | None = None,
        dedup: bool = False,
    ) -> int:
        """Upsert one record; returns its new version (the current one when ``dedup`` finds it unchanged)."""
        return self.put_many(
            [
                dict(
                    namespace=namespace,
                    key=key,
                    value=value,
                    text=text,
                    embedding=embedding,
                    metadata=metadata,
                    tags=tags,
                    ttl=ttl,
                    if_version=if_version,
                    valid_from=valid_from,
                    valid_to=valid_to,
                    dedup=dedup,
                )
            ]
        )[0]

    def put_many(self, items: Iterable[dict[str, Any]]) -> builtins.list[int]:
        """Upsert several records in one synced commit; all or nothing for version conflicts."""
        now = self.clock()
        writes: builtins.list[tuple[bytes, bytes]] = []
        staged: builtins.list[MemoryRecord] = []
        versions: builtins.list[int] = []
        with self._lock:
            for item in items:
                ns = check_namespace(item["namespace"])
                key = item["key"]
                if not isinstance(key, str) or not key or "\x00" in key:
                    raise InvalidValueError("a key is a non-empty string without \\x00")
                old = self._live.get((ns, key))
                current = old.version if old is not None and not old.deleted else 0
                if item.get("if_version") is not None and item["if_version"] != current:
                    raise VersionConflict(f"{ns}/{key} is at version {current}, not {item['if_version']}")
                emb = item.get("embedding")
                if emb is None and item.get("text") and self.embedder is not None:
                    emb = self.embedder([item["text"]])[0]
                rec = MemoryRecord(
                    namespace=ns,
                    key=key,
                    value=item.get("value"),
                    text=item.get("text"),
                    metadata=dict(item.get("metadata") or {}),
                    tags=sorted(set(item.get("tags") or ())),
                    embedding=None if emb is None else np.asarray(emb, dtype=np.float32).reshape(-1),
                    created_at=old.created_at if old is not None and not old.deleted else now,
                    updated_at=now,
                    ttl=item.get("ttl"),
                    valid_from=item.get("valid_from"),
                    valid_to=item.get("valid_to"),
                )
                rec.expires_at = now + rec.ttl if rec.ttl else None
                rec.content_hash = hashlib.sha256(
                    json.dumps(
                        [rec.value, rec.text, rec.metadata, rec.tags], sort_keys=True, default=str
                    ).encode()
                    + (rec.embedding.tobytes() if rec.embedding is not None else b"")
                ).hexdigest()
                if (
                    item.get("dedup")
                    and old is not None
                    and not old.deleted
                    and old.content_hash == rec.content_hash
                ):
                    versions.append(old.version)
                    continue
                rec.version = (old.version if old is not None else 0) + 1
                if old is not None:
                    writes.append((self._key("h", ns, key, old.version), self._full(old).encode()))
                writes.append((self._key("r", ns, key), rec.encode()))
                staged.append(rec)
                versions.append(rec.version)
            if writes:
                self.store.put_many(writes, ns=self.ns)  # one synced commit for the batch
            for rec in staged:
                ident = (rec.namespace, rec.key)
                self._recall.invalidate(ident, rec.version)
                old = self._live.get(ident)
                if old is not None:
                    self._history.setdefault(ident, []).append(old.version)
                self._live[ident] = self._slim(rec)
                self._index(rec)
        return versions

    def delete(self, namespace: Sequence[str], key: str, *, hard: bool = False) -> bool:
        """Soft delete keeps the history (and records the deletion as a version); hard removes everything."""
        ns = check_namespace(namespace)
        with self._lock:
            old = self._live.get((ns, key))
            if old is None or (old.deleted and not hard):
                return False
            self._recall.invalidate((ns, key), old.version + 1)
            if hard:
                for v in self._history.pop((ns, key), []):
                    self.store.delete(self._key("h", ns, key, v), ns=self.ns)
                self.store.delete(self._key("r", ns, key), ns=self.ns)
                self._index(replace(self._live.pop((ns, key)), deleted=True))
                return True
            old = self._full(old)
            tomb = replace(old, deleted=True, version=old.version + 1, updated_at=self.clock(), score=None)
            self.store.put_many(
                [
                    (self._key("h", ns, key, old.version), old.encode()),
                    (self._key("r", ns, key), tomb.encode()),
                ],
                ns=self.ns,
            )
            self._history.setdefault((ns, key), []).append(old.version)
            self._live[(ns, key)] = self._slim(tomb)
            self._index(tomb)
            return True

    def revert(self, namespace: Sequence[str], key: str, version: int) -> int:
        """Make an earlier version current again (as a new version); returns the new version."""
        ns = check_namespace(namespace)
        old = next((r for r in self.history(ns, key) if r.version == version), None)
        if old is None:
            raise InvalidValueError(f"{ns}/{key} has no version {version}")
        return self.put(
            ns,
            key,
            old.value,
            text=old.text,
            embedding=old.embedding,
            metadata=old.metadata,
            tags=old.tags,
            ttl=old.ttl,
            valid_from=old.valid_from,
            valid_to=old.valid_to,
        )

    # ---- reads ----------------------------------------------------------------------------------

    def _alive(self, rec: MemoryRecord, now: float) -> bool:
        return not rec.deleted and (rec.expires_at is None or rec.expires_at > now)

    def get(self, namespace: Sequence[str], key: str, *, refresh: bool = True) -> MemoryRecord | None:
        """The current record, or None; a read refreshes the record's TTL unless ``refresh=False``."""
        ns = check_namespace(namespace)
        now = self.clock()
        with self._lock:
            rec = self._live.get((ns, key))
            if rec is None or not self._alive(rec, now):
                return None
            if rec.ttl and refresh:
                rec.expires_at = now + rec.ttl
            h, t = self._heat.get((ns, key), (0.0, now))
            self._heat[(ns, key)] = (h * 0.5 ** ((now - t) / self.HEAT_HALF_LIFE) + 1.0, now)
            return self._full(rec)

    def history(self, namespace: Sequence[str], key: str) -> builtins.list[MemoryRecord]:
        """Every version, oldest first, the current one (or its deletion) last."""
        out: builtins.list[MemoryRecord] = []
        after: int | None = 0
        while after is not None:
            page, after = self.history_page(namespace, key, after=after)
            out.extend(page)
        return out

    def history_page(
        self, namespace: Sequence[str], key: str, *, after: int = 0, max_bytes: int = PAGE_BYTES
    ) -> tuple[builtins.list[MemoryRecord], int | None]:
        """The versions newer than ``after``, oldest first, as many as fit in ``max_bytes`` (at least one),
        and the version to pass as ``after`` for the next page (None at the end)."""
        ns = check_namespace(namespace)
        with self._lock:
            versions = [v for v in self._history.get((ns, key), []) if v > after]
            current = self._live.get((ns, key))
        if current is not None and current.version <= after:
            current = None
        out: builtins.list[MemoryRecord] = []
        size = 0
        for v in versions:
            raw = self.store.get(self._key("h", ns, key, v), ns=self.ns, promote=False)
            if raw is None:
                continue
            if out and size + len(raw) > max_bytes:
                return out, out[-1].version
            out.append(MemoryRecord.decode(raw))
            size += len(raw)
        if current is not None:
            rec = self._full(current)
            if out and size + len(rec.encode()) > max_bytes:
                return out, out[-1].version
            out.append(rec)
        return out, None

    def list(
        self,
        namespace_prefix: Sequence[str] = (),
        *,
        cursor: str | None = None,
        limit: int = 100,
        max_bytes: int = PAGE_BYTES,
    ) -> tuple[builtins.list[MemoryRecord], str | None]:
        """Records under a namespace prefix in (namespace, key) order, at most ``limit`` and ``max_bytes``
        (at least one) at a time; pass the returned cursor back for the next page (None at the end)."""
        prefix = tuple(namespace_prefix)
        now = self.clock()
        with self._lock:
            idents = sorted(
                i for i, r in self._live.items() if i[0][: len(prefix)] == prefix and self._alive(r, now)
            )
        if cursor is not None:
            try:
                after = json.loads(cursor)
                start = (tuple(after[0]), str(after[1]))
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise InvalidValueError(f"not a cursor this store gave: {exc}") from None
            idents = [i for i in idents if i > start]
        records: builtins.list[MemoryRecord] = []
        size, taken = 0, 0
        for ident in idents[:limit]:
            with self._lock:
                live = self._live.get(ident)
            taken += 1
            if live is None:
                continue
            rec = self._full(live)
            size += len(rec.encode())
            if records and size > max_bytes:
                taken -= 1
                break
            records.append(rec)
        if taken == 0 or taken == len(idents):
            return records, None
        last = idents[taken - 1]
        return records, json.dumps([list(last[0]), last[1]])

    def list_namespaces(
        self, *, prefix: Sequence[str] = (), suffix: Sequence[str] = (), max_depth: int | None = None
    ) -> builtins.list[tuple[str, ...]]:
        prefix, suffix = tuple(prefix), tuple(suffix)
        now = self.clock()
        with self._lock:
            found = {i[0] for i, r in self._live.items() if self._alive(r, now)}
        out = set()
        for ns in found:
            if ns[: len(prefix)] != prefix or (suffix and ns[-len(suffix) :] != suffix):
                continue
            out.add(ns[:max_depth] if max_depth else ns)
        return sorted(out)

    def _as_of(self, current: MemoryRecord, t: float) -> MemoryRecord | None:
        if current.updated_at <= t:
            return current
        for rec in reversed(self.history(current.namespace, current.key)[:-1]):
            if rec.updated_at <= t:
                return rec
        return None

    # ---- TTL ------------------------------------------------------------------------------------

    def sweep(self) -> int:
        """Hard-delete records whose TTL has passed; returns how many."""
        now = self.clock()
        with self._lock:
            expired = [i for i, r in self._live.items() if r.expires_at is not None and r.expires_at <= now]
        for ns, key in expired:
            self.delete(ns, key, hard=True)
        return len(expired)

    def _sweep_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(MemstoreError):  # the store is closing or failing: try next round
                self.sweep()

    def close(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
