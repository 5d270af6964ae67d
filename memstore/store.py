"""TieredStore: the coordinator of a hot shared-memory arena, a compressed DRAM warm tier and an LMDB
cold tier.

The pieces, one module each: the tiers (``hot``, ``warm``, ``cold``, behind the seam in ``tier``), how
records move between them (``movement``: placement, demotion, promotion, quarantine), namespaces
(``namespace``), quotas (``quota``), cold admission (``admission``), the same-host path's reservations
(``reservation``), background compression (``compactor``) and prefetch (``prefetch``). This module
validates calls, owns the lock and the order of the steps, and reads values out of the tiers.

Notes on locking:
- One re-entrant lock (``_lock``) guards every index, policy, the arena allocator and the statistics:
  every method of ``Movement``, ``Reservations`` and the tiers runs under it. Copies into and out of
  the arena happen under it (they are memcpy-fast).
- Decompression, checksum checks of warm and cold records and LMDB reads run outside the lock on
  snapshots (warm records are immutable ``bytes``). Promotion retakes the lock and only proceeds if the
  source entry is still the one that was read, so a concurrent put or delete always wins.
- Compression of demoted records runs on the compactor thread, which swaps a compressed record in
  only if the raw one it read is still current.
- The LMDB writer thread never takes ``_lock``; it reports failed writes through ``ColdTier.failures``
  and the store reconciles them at the start of its next operation. Callers wait for cold commits
  (persistent puts, deletes) only after releasing ``_lock``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from memstore import settings, tenancy
from memstore.admission import make_admission
from memstore.check import check_openable
from memstore.cold import ColdFullError, ColdIndex, ColdTier, cold_budget, first_error
from memstore.compactor import Compactor
from memstore.datadir import DataDir
from memstore.errors import (
    InvalidNamespaceError,
    InvalidValueError,
    PersistentFullError,
    StoreClosedError,
    UnknownNamespaceError,
)
from memstore.hot import REMOTE, HotArena, HotLocation, HotTier, Remote
from memstore.migrate import migrate
from memstore.movement import POISON, Movement, encode_for
from memstore.namespace import Durability, Namespace, Namespaces
from memstore.policy import make_policy
from memstore.pool import Pool
from memstore.prefetch import Mode as PrefetchMode
from memstore.prefetch import Prefetcher, PrefetchTask
from memstore.quota import Quota, QuotaGuard, Usage
from memstore.readpath import ReadPath
from memstore.record import (
    RecordMeta,
    pack_header,
)
from memstore.reservation import LocalPath, Reservations
from memstore.retention import Hint
from memstore.tier import TIER_COUNTERS
from memstore.warm import WarmTier

__all__ = ["REMOTE", "TIER_COUNTERS", "Durability", "HotLocation", "Namespace", "Remote", "TieredStore"]

log = logging.getLogger("memstore.store")
Value = Any  # bytes or a numpy array (Any: numpy arrays do not type-check as one union member)


class TieredStore:
    """A three-tier key-value store; see the module docstring for its pieces and locking."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hot_bytes: int = int(settings.DEFAULTS["hot_bytes"]),  # type: ignore[call-overload]
        warm_bytes: int = int(settings.DEFAULTS["warm_bytes"]),  # type: ignore[call-overload]
        cold_bytes: int | None = None,
        policy: str = str(settings.DEFAULTS["policy"]),
        cold_admission: str = "all",
        background_compression: bool = True,
        prefault: bool = True,
        quotas: Mapping[str, Quota] | None = None,
        pool: Pool | None = None,
    ) -> None:
        _check_sizes(hot_bytes=hot_bytes, warm_bytes=warm_bytes, cold_bytes=cold_bytes or 0)
        # Policies first: a bad name fails here, before any file or arena is created.
        self._policy_name = policy
        self._admission = make_admission(cold_admission)
        self._policies = [make_policy(policy) for _ in range(3)]
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        self._closed = False
        self._dir = DataDir(self.path)
        self.pool = pool  # the shared pool below cold (memstore.pool), closed with the store
        try:
            self._dir.remove_dead_segment()
            check_openable(self.path)  # a damaged file is a clear error, never a SIGBUS
            self._open(hot_bytes, warm_bytes, cold_bytes, quotas, background_compression, prefault)
        except BaseException:
            self._abandon()
            raise

    # ---- opening --------------------------------------------------------------------------------

    def _open(
        self,
        hot_bytes: int,
        warm_bytes: int,
        cold_bytes: int | None,
        quotas: Mapping[str, Quota] | None,
        background_compression: bool,
        prefault: bool,
    ) -> None:
        recorded = self._dir.recorded_map_size()
        if cold_bytes is None:
            cold_bytes = recorded or int(settings.DEFAULTS["cold_bytes"])  # type: ignore[call-overload]
        self._cold = ColdTier(
            os.path.join(self.path, "cold"),
            max(cold_bytes, 1 << 20),
            pending_limit=max(8 << 20, min(256 << 20, warm_bytes // 2)),  # bytes queued for the writer
        )
        arena = HotArena(self.path, max(hot_bytes, 4096), prefault=prefault)
        self._hot_arena = arena
        self._dir.name_segment(arena.name)
        self._quotas = QuotaGuard(dict(quotas or {}), Usage(set(quotas or {})))
        usage, tenant_of = self._quotas.usage, self._quotas.tenant_of
        self.hot = HotTier(arena, hot_bytes > 0, self._policies[0], usage, tenant_of)
        self.warm = WarmTier(warm_bytes, self._policies[1], usage, tenant_of)
        self.cold = ColdIndex(cold_budget(self._cold.map_size), self._policies[2], usage, tenant_of)
        self._namespaces = Namespaces()
        self._compactor = Compactor(
            self._lock, self.warm, self._namespaces, encode_for, POISON, enabled=background_compression
        )
        tiers = (self.hot, self.warm, self.cold, self._cold)
        self._move = Movement(
            *tiers, self._quotas, self._admission, self._namespaces, self._compactor.enqueue
        )
        self.removals = self._move.removals  # what ``memstore.explain`` tells of keys no tier holds
        self.retention = self._move.retention  # callers' hints (``memstore.retention``)
        self.local = LocalPath(self, Reservations(self._move, usage))
        migrate(self._cold.env, self._cold.records, self._cold.meta, self._cold.lengths)  # older dirs, once
        self._namespaces.load(self._cold)
        if "default" not in self._namespaces.by_name:
            self.create_namespace("default")
        self._move.index_cold(self._cold.scan())
        if self._cold.map_size != recorded:
            pages = self._cold.bytes_in_use()
            self._dir.settle_map_size(
                self._cold.map_size, recorded, pages, self.cold.used, self.cold.capacity
            )
        self._reader = ReadPath(self._lock, self._move, self._cold, lambda: self._closed, self.pool)
        self._prefetcher = Prefetcher(self._reader.promote_one)

    def _abandon(self) -> None:
        """A start that failed leaves nothing behind: no arena segment, no lock held."""
        for part in ("_compactor", "_cold", "_hot_arena"):
            with contextlib.suppress(Exception):
                if getattr(self, part, None) is not None:
                    getattr(self, part).close()
        self._dir.forget_segment()
        self._dir.release()

    # ---- namespaces -----------------------------------------------------------------------------

    def create_namespace(
        self,
        name: str,
        *,
        durability: Durability = "cache",
        warm_codec: str = str(settings.DEFAULTS["warm_codec"]),
        cold_codec: str = str(settings.DEFAULTS["cold_codec"]),
        value_dtype: str | None = None,
        value_shape: tuple[int, ...] | list[int] | None = None,
        shared: bool = False,
        identity: str = "",
    ) -> Namespace:
        """Create a namespace, or return it if it exists with the same options.

        ``value_dtype``/``value_shape`` make every value of the namespace an array of exactly that kind
        (KV-cache namespaces use one block's layout); anything else is refused.
        """
        ns = Namespace.checked(
            name, durability, warm_codec, cold_codec, value_dtype, value_shape, shared, identity=identity
        )
        with self._lock:
            self._check_open()
            return self._namespaces.create(ns, self._cold)

    def namespaces(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {n: ns.options() for n, ns in self._namespaces.by_name.items()}

    def delete_namespace(self, name: str) -> int:
        """Remove a namespace and every record in it; returns how many records were removed."""
        namespace = self._namespaces.named(name)
        who = tenancy.owner(name)
        if who.name == "default" and not who.internal:
            raise InvalidNamespaceError("a tenant's default namespace cannot be deleted")
        prefix = namespace.prefix
        futures: list[tuple[bytes, Future[bool]]] = []
        with self._lock:
            self._check_open()
            self._move.reconcile()
            keys = {fk for tier in (self.hot, self.warm, self.cold) for fk in tier.keys_with(prefix)}
            self.local.reservations.cancel_prefix(prefix)
            for fk in keys:
                futures.extend(self._forget(fk, durable=namespace.persistent))
            self._namespaces.drop(namespace)
            self.removals.note_namespace(name)
            futures.append((b"", self._cold.submit_meta_delete(b"ns:" + name.encode())))
        self._wait(futures, persistent=True)
        return len(keys)

    # ---- public operations ----------------------------------------------------------------------

    def put(self, key: bytes, value: Value, *, ns: str = "default") -> None:
        self.put_many([(key, value)], ns=ns)

    def put_many(
        self,
        items: Iterable[tuple[bytes, Value]] | Mapping[bytes, Value],
        *,
        ns: str = "default",
        parents: Sequence[bytes | None] | None = None,
    ) -> None:
        """Store several values; for a persistent namespace all of them share one synced commit.

        ``parents`` names, per item, the key (same namespace) of the block it extends in a prefix chain,
        or None: prefix-aware eviction policies then evict a chain's tail before its parents.
        """
        namespace = self._namespaces.named(ns)
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        prepared = namespace.records_of(pairs, parents)
        waits: list[tuple[bytes, Future[bool]]] = []
        for fk, raw, meta, parent in prepared:
            if namespace.persistent:
                waits.append((fk, self._put_persistent(namespace, fk, raw, meta, parent)))
            else:
                fut = self._put_cache(namespace, fk, raw, meta, parent)
                if fut is not None:
                    waits.append((fk, fut))
        self._wait(waits, persistent=namespace.persistent)
        if namespace.shared and self.pool is not None:
            self.pool.publish_all(namespace.cold_codec, [(fk, raw, meta) for fk, raw, meta, _ in prepared])

    def _put_cache(
        self, ns: Namespace, fk: bytes, raw: memoryview, meta: RecordMeta, parent: bytes | None
    ) -> Future[bool] | None:
        header = pack_header(meta, raw)
        with self._writing(ns, fk, parent):
            return self._move.place_cache(ns, fk, header, raw, meta)

    def _put_persistent(
        self, ns: Namespace, fk: bytes, raw: memoryview, meta: RecordMeta, parent: bytes | None
    ) -> Future[bool]:
        record = encode_for(ns.cold_codec, raw, meta)  # outside the lock: the slow part
        header = pack_header(meta, raw)
        with self._writing(ns, fk, parent):
            return self._move.place_persistent(fk, header, raw, meta, record)

    @contextlib.contextmanager
    def _writing(self, ns: Namespace, fk: bytes, parent: bytes | None) -> Any:
        """The lock, and the checks every write makes under it before it changes anything."""
        with self._lock:
            self._check_open()
            self._check_live(ns)
            self._move.reconcile()
            self._quotas.check_records(fk)
            self._move.set_parent(fk, parent)
            yield

    def get(self, key: bytes, *, ns: str = "default", promote: bool = True) -> Value | None:
        """The value stored under key, or None. ``promote=False`` leaves lower-tier hits where they are."""
        return self.get_many([key], ns=ns, promote=promote)[0]

    def get_many(
        self, keys: Iterable[bytes], *, ns: str = "default", promote: bool = True, max_bytes: int = 0
    ) -> list[Value | None]:
        """Values in order (None for a miss); a shared namespace asks the pool for all its local misses
        in one round trip. Once ``max_bytes`` (if not 0) of values are read, the keys after come back
        as ``memstore.readpath.UNREAD`` (a server bounds an answer's memory with it)."""
        namespace = self._namespaces.named(ns)
        fks = namespace.full_keys(keys)
        pooled = self._reader.from_pool(namespace, fks, promote) if namespace.shared else {}
        rest = self._reader.get_many(namespace, [f for f in fks if f not in pooled], promote, max_bytes)
        local = iter(rest)
        return [pooled[fk] if fk in pooled else next(local) for fk in fks]

    def keys(self, *, ns: str = "default", prefix: bytes = b"") -> list[bytes]:
        """Every key of a namespace that starts with ``prefix``, sorted (reads no values)."""
        namespace = self._namespaces.named(ns)
        start = namespace.prefix + prefix
        with self._lock:
            self._check_open()
            found = {fk for tier in (self.hot, self.warm, self.cold) for fk in tier.keys_with(start)}
        return sorted(fk[len(namespace.prefix) :] for fk in found)

    def contains(self, key: bytes, *, ns: str = "default") -> bool:
        fk = self._namespaces.named(ns).full_key(key)
        with self._lock:
            self._check_open()
            return self._move.holds(fk)

    def delete(self, key: bytes, *, ns: str = "default") -> bool:
        """Remove key from every tier; True if it was there. Returns after the removal is committed."""
        namespace = self._namespaces.named(ns)
        fk = namespace.full_key(key)
        with self._lock:
            self._check_open()
            self._move.reconcile()
            existed = self._move.holds(fk)
            if existed:
                self.removals.note(fk, "deleted", self._move.tier_of(fk) or "")
            waits = self._forget(fk, durable=namespace.persistent)
            if not waits and namespace.persistent:
                # The file may hold a value the index dropped (a put that failed after its commit):
                # delete it there too, or it would come back at the next open.
                waits = [(fk, self._cold.submit_delete(fk, durable=True))]
        self._wait(waits, persistent=namespace.persistent)
        if namespace.shared and self.pool is not None:
            self.pool.remove(fk)
        return existed

    def _forget(self, fk: bytes, *, durable: bool) -> list[tuple[bytes, Future[bool]]]:
        """Remove fk from every tier and from what the policies know of it; the cold delete to wait for."""
        self._move.drop_upper(fk)
        fut = self._move.drop_cold(fk, durable=durable)
        self.retention.forget(fk)
        self._move.parents.pop(fk, None)
        self._move.pinned.discard(fk)
        return [(fk, fut)] if fut is not None else []

    def retain(self, keys: Iterable[bytes], hint: Hint, *, ns: str = "default") -> int:
        """Apply a retention hint (``memstore.retention``) to those of ``keys`` the store holds (cache
        namespaces only: persistent records are never evicted); returns how many."""
        namespace = self._namespaces.named(ns)
        if namespace.persistent:
            raise InvalidValueError("retention hints are for cache namespaces: persistent ones never evict")
        fks = namespace.full_keys(keys)
        with self._lock:
            self._check_open()
            held = [fk for fk in fks if self._move.holds(fk)]
            self.retention.hint(held, hint)
        return len(held)

    def end_session(self, session: str, *, pause: bool = False, resume_in: float | None = None) -> int:
        """End a hinted session: its blocks no open session shares go first. Returns how many. With
        ``pause``, the session only waits (a tool call, its user): its blocks that no running session
        shares go after unhinted ones, until a hint names the session again; ``resume_in``, the
        caller's estimate of the seconds until then, orders it among the waiting (the latest first)."""
        if resume_in is not None and not pause:
            raise InvalidValueError("resume_in goes with pause: an ended session does not come back")
        with self._lock:
            if pause:
                return self.retention.pause_session(session, resume_in)
            return self.retention.end_session(session)

    def tiers_of(
        self, keys: Iterable[bytes], *, ns: str = "default", lookahead: bool = False
    ) -> list[str | None]:
        """The highest tier holding each key ("hot", "warm", "cold"; "pool": a shared namespace's key only
        the pool holds), or None; reads nothing. With ``lookahead``, the keys of the leading run (a
        cached prefix) below hot are promoted in the background, ahead of the get that usually follows.
        """
        keys, namespace = list(keys), self._namespaces.named(ns)
        fks = [namespace.full_key(k) for k in keys]
        with self._lock:
            self._check_open()
            tiers = [self._move.tier_of(fk) for fk in fks]
        tiers = self._reader.in_pool(namespace, fks, tiers)
        lead = next((i for i, t in enumerate(tiers) if t is None), len(tiers))
        below = [k for k, t in zip(keys[:lead], tiers[:lead], strict=True) if t != "hot"]
        if lookahead and below:
            self.prefetch(below, ns=ns, mode="best_effort")
        return tiers

    def prefetch(
        self,
        keys: Iterable[bytes],
        *,
        ns: str = "default",
        mode: PrefetchMode = "wait_complete",
        timeout: float | None = None,
    ) -> PrefetchTask:
        """Promote keys toward hot ahead of their get, on the background workers (see ``memstore.prefetch``).

        Returns the task: ``promoted`` counts keys this task moved into hot; ``cancel()`` stops it.
        Prefetched keys that are then read count as used, those demoted unread as wasted (``stats()``).
        """
        namespace = self._namespaces.named(ns)
        fks = [namespace.full_key(k) for k in keys]
        with self._lock:
            self._check_open()
            self.hot.stats.bump("prefetch_issued", len(fks))
        return self._prefetcher.submit(fks, mode, timeout)

    def hint(self, *, ns: str = "default", prefix: bytes = b"", limit: int = 4096) -> PrefetchTask:
        """The namespace (or its keys starting with ``prefix``) is about to be used: promote, best effort."""
        start = self._namespaces.named(ns).prefix + prefix
        with self._lock:
            self._check_open()
            fks = [fk for tier in (self.warm, self.cold) for fk in tier.keys_with(start)]
        return self._prefetcher.submit(fks[:limit], "best_effort")

    def demote(self, keys: Iterable[bytes], *, ns: str = "default") -> int:
        """Move keys out of the hot tier now (to warm, or just drop a clean copy); returns how many moved."""
        namespace = self._namespaces.named(ns)
        moved = 0
        with self._lock:
            self._check_open()
            for key in keys:
                fk = namespace.full_key(key)
                if fk in self.hot and fk not in self._move.pinned and self._move.demote_hot(fk):
                    moved += 1
        return moved

    def pin(self, key: bytes, *, ns: str = "default") -> bool:
        """Keep key from being evicted or demoted until unpin; False if it is not stored."""
        fk = self._namespaces.named(ns).full_key(key)
        with self._lock:
            if self._move.holds(fk):
                self._move.pinned.add(fk)
                return True
            return False

    def unpin(self, key: bytes, *, ns: str = "default") -> bool:
        fk = self._namespaces.named(ns).full_key(key)
        with self._lock:
            if fk in self._move.pinned:
                self._move.pinned.discard(fk)
                return True
            return False

    def flush(self) -> None:
        """Wait for background compression and queued cold writes to finish."""
        self._compactor.wait_idle()
        self._cold.flush()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._move.reconcile()
            tiers = {tier.name: tier.report() for tier in (self.hot, self.warm, self.cold)}
            tiers["cold"].update(self._cold.report(self.cold.stats.raw_bytes))
            return {
                **tiers,
                "namespaces": len(self._namespaces),
                "pinned": len(self._move.pinned),
                "policy": self._policy_name,
                "tenants": self._quotas.report(),
                **({"pool": self.pool.report()} if self.pool is not None else {}),
                "hot_segment": self._hot_arena.name,
                "path": self.path,
            }

    def tenant_usage(self, tenant: str) -> dict[str, Any]:
        """One tenant's bytes and records per tier, with its quota (None if it has none)."""
        return self._quotas.usage_of(tenant)

    def close(self) -> None:
        """Write hot and warm contents down to cold (as far as its budget allows) and release everything."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._prefetcher.close()
        self._compactor.close()
        with self._lock:
            self._move.reconcile()
            self._move.write_down_all()
        self._cold.flush()
        self._cold.close()
        self._hot_arena.close()
        if self.pool is not None:
            self.pool.close()
        self._dir.forget_segment()
        self._dir.release()

    def __enter__(self) -> TieredStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- helpers --------------------------------------------------------------------------------

    def _wait(self, waits: list[tuple[bytes, Future[bool]]], *, persistent: bool) -> None:
        error = first_error(fut for _fk, fut in waits)
        if waits:
            with self._lock:
                self._move.reconcile()
        if error is not None and persistent:
            raise PersistentFullError(str(error)) if isinstance(error, ColdFullError) else error

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def _check_live(self, ns: Namespace) -> None:
        """Writers look their namespace up before taking the lock; one deleted meanwhile takes no write."""
        if not self._namespaces.is_live(ns):
            raise UnknownNamespaceError(f"namespace {ns.name!r} was deleted while this write waited")


def _check_sizes(**sizes: int) -> None:
    for name, v in sizes.items():
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int")
