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
import math
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from memstore import tenancy
from memstore.errors import InvalidValueError, MemstoreError
from memstore.store import TieredStore

SEP = "\x1f"
# The records of one List or History answer: at least one, otherwise about this many bytes, well below
# the message limit (a record itself arrived in one message, so a page of one always fits).
PAGE_BYTES = 1 << 20
log = logging.getLogger("memstore.memory")
_WORD = re.compile(r"[a-z0-9]+")


class _InStore:
    """Placeholder for a value that lives only in the store's tiers (the index keeps what search needs)."""

    def __repr__(self) -> str:
        return "<in store>"


IN_STORE: Any = _InStore()


class VersionConflict(MemstoreError):
    """``if_version`` did not match the record's current version; nothing was written."""


@dataclass
class MemoryRecord:
    namespace: tuple[str, ...]
    key: str
    value: Any = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    embedding: np.ndarray | None = field(default=None, repr=False)
    created_at: float = 0.0
    updated_at: float = 0.0
    ttl: float | None = None
    expires_at: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    version: int = 0
    deleted: bool = False
    content_hash: str = field(default="", repr=False)
    score: float | None = None  # set by search

    def _json(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "namespace",
                "key",
                "value",
                "text",
                "metadata",
                "tags",
                "created_at",
                "updated_at",
                "ttl",
                "expires_at",
                "valid_from",
                "valid_to",
                "version",
                "deleted",
                "content_hash",
            )
        }

    def encode(self) -> bytes:
        doc = json.dumps(self._json(), separators=(",", ":")).encode()
        emb = b"" if self.embedding is None else np.asarray(self.embedding, dtype="<f4").tobytes()
        return struct.pack("<I", len(doc)) + doc + emb

    @classmethod
    def decode(cls, raw: bytes) -> MemoryRecord:
        (n,) = struct.unpack_from("<I", raw)
        doc = json.loads(raw[4 : 4 + n])
        doc["namespace"] = tuple(doc["namespace"])
        emb = raw[4 + n :]
        return cls(**doc, embedding=np.frombuffer(emb, dtype="<f4").copy() if emb else None)


def _check_namespace(namespace: Sequence[str]) -> tuple[str, ...]:
    ns = tuple(namespace)
    if not ns or not all(isinstance(p, str) and p and SEP not in p and "\x00" not in p for p in ns):
        raise InvalidValueError(
            "a namespace is a non-empty tuple of non-empty strings without \\x1f or \\x00"
        )
    return ns


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# ---- filters ----------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$in": lambda a, b: a in b,
    "$nin": lambda a, b: a not in b,
    "$gt": lambda a, b: a is not None and a > b,
    "$gte": lambda a, b: a is not None and a >= b,
    "$lt": lambda a, b: a is not None and a < b,
    "$lte": lambda a, b: a is not None and a <= b,
}


def matches(record: MemoryRecord, flt: dict[str, Any] | None) -> bool:
    """Filter language: {"field": value} (equality on metadata), {"field": {"$ne"|"$in"|"$nin"|"$gt"|
    "$gte"|"$lt"|"$lte": v}}, {"$and": [...]}, {"$or": [...]}, {"$not": {...}}, {"$tags": [all of]}."""
    if not flt:
        return True
    for name, cond in flt.items():
        if name == "$and":
            ok = all(matches(record, f) for f in cond)
        elif name == "$or":
            ok = any(matches(record, f) for f in cond)
        elif name == "$not":
            ok = not matches(record, cond)
        elif name == "$tags":
            ok = set(cond) <= set(record.tags)
        elif isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
            have = record.metadata.get(name)
            for op in cond:
                if op not in _OPS:
                    raise InvalidValueError(f"unknown filter operator {op!r}")
            ok = all(_OPS[op](have, arg) for op, arg in cond.items())
        else:
            ok = record.metadata.get(name) == cond
        if not ok:
            return False
    return True


# ---- vector index -----------------------------------------------------------------------------------


class _VectorIndex:
    """Embeddings of one dimension in a growing matrix: a search is one matrix-vector product."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.mat = np.empty((1024, dim), dtype=np.float32)
        self.norm = np.empty(1024, dtype=np.float32)
        self.valid = np.zeros(1024, dtype=bool)
        self.ns_id = np.zeros(1024, dtype=np.int32)
        self.idents: list[tuple[tuple[str, ...], str]] = []
        self.row: dict[tuple[tuple[str, ...], str], int] = {}
        self.namespaces: dict[tuple[str, ...], int] = {}
        self.n = 0

    def upsert(self, ident: tuple[tuple[str, ...], str], vec: np.ndarray) -> None:
        self.remove(ident)
        if self.n == len(self.mat):
            grow = len(self.mat) * 2
            self.mat = np.resize(self.mat, (grow, self.dim))
            self.norm, self.valid, self.ns_id = (
                np.resize(a, grow) for a in (self.norm, self.valid, self.ns_id)
            )
            self.valid[self.n :] = False
        i = self.n
        self.mat[i] = vec
        self.norm[i] = float(np.linalg.norm(vec))
        self.valid[i] = True
        self.ns_id[i] = self.namespaces.setdefault(ident[0], len(self.namespaces))
        self.idents.append(ident)
        self.row[ident] = i
        self.n += 1

    def remove(self, ident: tuple[tuple[str, ...], str]) -> None:
        i = self.row.pop(ident, None)
        if i is not None:
            self.valid[i] = False

    def ranked(self, q: np.ndarray, prefix: tuple[str, ...], want: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows under the namespace prefix, best first, with their cosine scores (the best ``want`` when
        given, else all)."""
        allowed = np.zeros(max(len(self.namespaces), 1), dtype=bool)
        for ns, j in self.namespaces.items():
            allowed[j] = ns[: len(prefix)] == prefix
        mask = self.valid[: self.n] & allowed[self.ns_id[: self.n]]
        sims = self.mat[: self.n] @ q / (self.norm[: self.n] * max(float(np.linalg.norm(q)), 1e-30) + 1e-30)
        sims[~mask] = -np.inf
        count = int(mask.sum())
        if 0 < want < count:  # only the best ``want`` rows, sorted: cheaper than sorting them all
            top = np.argpartition(-sims, want - 1)[:want]
            order = top[np.argsort(-sims[top], kind="stable")]
        else:
            order = np.argsort(-sims, kind="stable")[:count]
        return order, sims[order]


# ---- the store --------------------------------------------------------------------------------------


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
        self._vectors: dict[int, _VectorIndex] = {}
        # KV blocks built from records: (namespace, key) -> [(kv namespace, kv key, record version)]
        self._deps: dict[tuple[tuple[str, ...], str], builtins.list[tuple[str, bytes, int]]] = {}
        self._sessions: dict[str, tuple[builtins.list[tuple[str, bytes]], builtins.list[bytes]]] = {}
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
        ident = (_check_namespace(namespace), key)
        with self._lock:
            h, t = self._heat.get(ident, (0.0, self.clock()))
        return float(h * 0.5 ** ((self.clock() - t) / self.HEAT_HALF_LIFE))

    def _index(self, rec: MemoryRecord) -> None:
        ident = (rec.namespace, rec.key)
        for index in self._vectors.values():
            index.remove(ident)
        if rec.embedding is not None and not rec.deleted:
            dim = int(rec.embedding.shape[0])
            self._vectors.setdefault(dim, _VectorIndex(dim)).upsert(ident, rec.embedding)

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
                ns = _check_namespace(item["namespace"])
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
                self._invalidate(ident, rec.version)
                old = self._live.get(ident)
                if old is not None:
                    self._history.setdefault(ident, []).append(old.version)
                self._live[ident] = self._slim(rec)
                self._index(rec)
        return versions

    def delete(self, namespace: Sequence[str], key: str, *, hard: bool = False) -> bool:
        """Soft delete keeps the history (and records the deletion as a version); hard removes everything."""
        ns = _check_namespace(namespace)
        with self._lock:
            old = self._live.get((ns, key))
            if old is None or (old.deleted and not hard):
                return False
            self._invalidate((ns, key), old.version + 1)
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
        ns = _check_namespace(namespace)
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

    def get(self, namespace: Sequence[str], key: str) -> MemoryRecord | None:
        """The current record, or None; a read refreshes the record's TTL."""
        ns = _check_namespace(namespace)
        now = self.clock()
        with self._lock:
            rec = self._live.get((ns, key))
            if rec is None or not self._alive(rec, now):
                return None
            if rec.ttl:
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
        ns = _check_namespace(namespace)
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

    def search(
        self,
        namespace_prefix: Sequence[str] = (),
        *,
        vector: Sequence[float] | np.ndarray | None = None,
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        top_k: int = 10,
        as_of: float | None = None,
        cursor: int = 0,
        alpha: float = 0.5,
        semantic: bool = False,
    ) -> builtins.list[MemoryRecord]:
        """Cosine over embeddings (``vector``), keyword (``query``), or both (hybrid: ``alpha`` weighs the
        vector score); ``semantic`` embeds the query and searches by meaning; metadata ``filter``;
        ``as_of`` searches the versions that were current then.
        ``cursor`` skips that many results (pages of ``top_k``)."""
        prefix = tuple(namespace_prefix)
        now = self.clock()
        if semantic and query and vector is None:
            if self.embedder is None:
                raise InvalidValueError("semantic search needs a server started with text embedding")
            vector, query = self.embedder([query])[0], None
        if vector is not None and query is None and as_of is None:
            return self._vector_search(
                prefix, np.asarray(vector, dtype=np.float32).reshape(-1), filter, top_k, cursor, now
            )
        with self._lock:
            candidates = [r for i, r in self._live.items() if i[0][: len(prefix)] == prefix]
        if as_of is not None:
            candidates = [r for r in (self._as_of(r, as_of) for r in candidates) if r is not None]
            alive: Callable[[MemoryRecord], bool] = lambda r: not r.deleted  # noqa: E731
            when = as_of
        else:
            alive = lambda r: self._alive(r, now)  # noqa: E731
            when = now
        pool = [r for r in candidates if alive(r) and self._valid(r, when) and matches(r, filter)]
        if not pool:
            return []
        scores = np.zeros(len(pool))
        if vector is not None:
            q = np.asarray(vector, dtype=np.float32).reshape(-1)
            has = [i for i, r in enumerate(pool) if r.embedding is not None and r.embedding.shape == q.shape]
            if has:
                m = np.stack([pool[i].embedding for i in has])  # type: ignore[misc]
                cos = (m @ q) / (np.linalg.norm(m, axis=1) * max(float(np.linalg.norm(q)), 1e-30) + 1e-30)
                scores[has] += (alpha if query else 1.0) * cos
        if query:
            keyword = self._keyword_scores(pool, query)
            scores += (1 - alpha if vector is not None else 1.0) * keyword
            if vector is None:  # a keyword search returns only records that contain a query term
                keep = [i for i in range(len(pool)) if keyword[i] > 0]
                pool, scores = [pool[i] for i in keep], scores[keep]
        if vector is None and not query:
            order = sorted(range(len(pool)), key=lambda i: (pool[i].namespace, pool[i].key))
        else:
            order = sorted(range(len(pool)), key=lambda i: -scores[i])
        out = []
        for i in order[cursor : cursor + top_k]:
            out.append(
                replace(
                    self._full(pool[i]), score=float(scores[i]) if (vector is not None or query) else None
                )
            )
        return out

    def _vector_search(
        self,
        prefix: tuple[str, ...],
        q: np.ndarray,
        flt: dict[str, Any] | None,
        top_k: int,
        cursor: int,
        now: float,
    ) -> builtins.list[MemoryRecord]:
        """The fast path: one matrix-vector product over the index, then filters on the best rows."""
        with self._lock:
            index = self._vectors.get(int(q.shape[0]))
            if index is None:
                return []
            # Room for rows the filters reject; when that is not enough, rank every row.
            want = 4 * (cursor + top_k) + 64
            out = self._collect(index, *index.ranked(q, prefix, want), flt, top_k, cursor, now)
            if len(out) < top_k and want < index.n:
                out = self._collect(index, *index.ranked(q, prefix), flt, top_k, cursor, now)
            return out

    def _collect(
        self,
        index: _VectorIndex,
        order: np.ndarray,
        sims: np.ndarray,
        flt: dict[str, Any] | None,
        top_k: int,
        cursor: int,
        now: float,
    ) -> builtins.list[MemoryRecord]:
        out: builtins.list[MemoryRecord] = []
        skipped = 0
        for row, score in zip(order.tolist(), sims.tolist(), strict=True):
            rec = self._live.get(index.idents[row])
            if rec is None or not self._alive(rec, now) or not matches(rec, flt) or not self._valid(rec, now):
                continue
            if skipped < cursor:
                skipped += 1
                continue
            out.append(replace(self._full(rec), score=float(score)))
            if len(out) == top_k:
                break
        return out

    @staticmethod
    def _valid(rec: MemoryRecord, when: float) -> bool:
        return (rec.valid_from is None or rec.valid_from <= when) and (
            rec.valid_to is None or when < rec.valid_to
        )

    @staticmethod
    def _keyword_scores(pool: builtins.list[MemoryRecord], query: str) -> np.ndarray:
        """BM25 over each record's text (and string values), normalised to 0..1."""
        docs = [
            _words(" ".join(x for x in (r.text, r.value if isinstance(r.value, str) else None) if x))
            for r in pool
        ]
        terms = set(_words(query))
        n = len(docs)
        avg = sum(len(d) for d in docs) / max(n, 1) or 1.0
        df = {t: sum(1 for d in docs if t in d) for t in terms}
        out = np.zeros(n)
        for j, d in enumerate(docs):
            for t in terms:
                tf = d.count(t)
                if tf:
                    idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    out[j] += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(d) / avg))
        top = out.max()
        return out / top if top > 0 else out

    def _as_of(self, current: MemoryRecord, t: float) -> MemoryRecord | None:
        if current.updated_at <= t:
            return current
        for rec in reversed(self.history(current.namespace, current.key)[:-1]):
            if rec.updated_at <= t:
                return rec
        return None

    # ---- KV dependencies and sessions ------------------------------------------------------------

    def register_kv_dependency(
        self, kv_namespace: str, kv_keys: Iterable[bytes], records: Iterable[tuple[Sequence[str], str, int]]
    ) -> None:
        """Declare KV blocks (of a memstore KV namespace) as built from records at these versions: a later
        change to any of those records deletes exactly these blocks, nothing else."""
        keys = list(kv_keys)
        with self._lock:
            for namespace, key, version in records:
                ident = (_check_namespace(namespace), key)
                rec = self._live.get(ident)
                if rec is None or rec.deleted or rec.version != version:  # already stale: drop them now
                    for k in keys:
                        self.store.delete(k, ns=kv_namespace)
                    continue
                self._deps.setdefault(ident, []).extend((kv_namespace, k, version) for k in keys)

    def _invalidate(self, ident: tuple[tuple[str, ...], str], new_version: int) -> None:
        for kv_ns, kv_key, version in self._deps.pop(ident, []):
            if version < new_version:
                self.store.delete(kv_key, ns=kv_ns)

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
        ns = _check_namespace(namespace)
        now = self.clock()
        with self._lock:
            mine = [r for i, r in self._live.items() if i[0][: len(ns)] == ns and self._alive(r, now)]
        mine.sort(key=lambda r: (-self.heat(r.namespace, r.key), -r.updated_at))  # hottest, then newest
        chosen = {(r.namespace, r.key) for r in mine if "pinned" in r.tags} | {
            (r.namespace, r.key) for r in mine[:recent]
        }
        for q in hint_queries:
            chosen |= {(r.namespace, r.key) for r in self.search(ns, query=q, top_k=16)}
        keys = [self._key("r", n, k) for n, k in chosen]
        pinned = [(self.ns, self._key("r", r.namespace, r.key)) for r in mine if "pinned" in r.tags]
        for _, k in pinned:
            self.store.pin(k, ns=self.ns)
        self.store.prefetch(keys, ns=self.ns, mode="best_effort")
        if kv is not None:
            self.store.prefetch(list(kv[1]), ns=kv[0], mode="best_effort")
        with self._lock:
            self._sessions[session_id] = (pinned, keys)

    def close_session(self, session_id: str) -> None:
        """The session ends: its records are unpinned and moved out of the hot tier."""
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            return
        pinned, keys = session
        for ns, k in pinned:
            self.store.unpin(k, ns=ns)
        self.store.demote(keys, ns=self.ns)

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


# ---- protobuf conversion (shared by the service and the clients) ------------------------------------


def record_to_pb(rec: MemoryRecord) -> Any:
    from memstore.v1 import memstore_pb2 as pb

    msg = pb.MemoryRecord(
        namespace=list(rec.namespace),
        key=rec.key,
        value_json=json.dumps(rec.value),
        metadata_json=json.dumps(rec.metadata),
        tags=rec.tags,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        version=rec.version,
        deleted=rec.deleted,
    )
    if rec.embedding is not None:
        msg.embedding.extend(rec.embedding.tolist())
    for name in ("text", "ttl", "expires_at", "valid_from", "valid_to", "score"):
        if getattr(rec, name) is not None:
            setattr(msg, name, getattr(rec, name))
    return msg


def record_from_pb(msg: Any) -> MemoryRecord:
    def opt(name: str) -> Any:
        return getattr(msg, name) if msg.HasField(name) else None

    try:
        value = json.loads(msg.value_json) if msg.value_json else None
        metadata = json.loads(msg.metadata_json) if msg.metadata_json else {}
    except json.JSONDecodeError as exc:
        raise InvalidValueError(f"value_json and metadata_json must be JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise InvalidValueError("metadata_json must be a JSON object")
    return MemoryRecord(
        namespace=tuple(msg.namespace),
        key=msg.key,
        value=value,
        text=opt("text"),
        metadata=metadata,
        tags=list(msg.tags),
        embedding=np.asarray(msg.embedding, dtype=np.float32) if len(msg.embedding) else None,
        created_at=msg.created_at,
        updated_at=msg.updated_at,
        ttl=opt("ttl"),
        expires_at=opt("expires_at"),
        valid_from=opt("valid_from"),
        valid_to=opt("valid_to"),
        version=msg.version,
        deleted=msg.deleted,
        score=opt("score"),
    )
