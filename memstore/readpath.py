"""Reading a value out of the tiers, highest first, checking it on the way.

Hot: the record is copied out of the arena under the store's lock (its slot cannot be reused meanwhile)
and its checksum verified after the lock is released. Warm: the immutable record is decoded and checked
outside the lock. Cold: LMDB is read outside the lock, the checksum verified before a compressed payload
is decoded. A record that fails is counted and removed (a clean one falls through to the copy below it);
a warm or cold hit is promoted into hot if its entry is still the one that was read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from memstore.codecs import RAW, decode_payload
from memstore.cold import ColdTier
from memstore.errors import CorruptRecordError, MemstoreError, StoreClosedError
from memstore.hot import HotEntry
from memstore.movement import POISON, Movement, decode, each
from memstore.namespace import Namespace
from memstore.pool import Pool
from memstore.record import RecordMeta, pack_header, raw_to_value, split_record, verify_payload

BATCH_COPY = 1 << 20


class _Unread:
    def __repr__(self) -> str:
        return "UNREAD"


UNREAD: Any = _Unread()  # a key of a batch not read because the batch reached its byte limit


def _size(value: Any) -> int:
    return int(value.nbytes) if hasattr(value, "nbytes") else len(value)


class ReadPath:
    """The get of ``TieredStore``; takes the store's lock for each step."""

    def __init__(
        self,
        lock: threading.RLock,
        movement: Movement,
        writer: ColdTier,
        closed: Callable[[], bool],
        pool: Pool | None = None,
    ) -> None:
        self._lock = lock
        self._move = movement
        self._writer = writer
        self._closed = closed
        self._pool = pool

    def from_pool(self, ns: Namespace, fks: list[bytes], promote: bool) -> dict[bytes, Any]:
        """The values the pool holds for the keys no local tier holds, fetched in one round trip and
        checked; with ``promote`` each is placed in the local tiers as a new cache value."""
        if self._pool is None:
            return {}
        with self._lock:
            if self._closed():
                raise StoreClosedError("the store is closed")
            missing = [fk for fk in dict.fromkeys(fks) if not self._move.holds(fk)]
        out: dict[bytes, Any] = {}
        found = [(fk, r) for fk, r in zip(missing, self._pool.fetch(missing), strict=True) if r is not None]
        decoded = each(_checked, [r for _, r in found])  # a batch decodes on several cores
        for (fk, _), got in zip(found, decoded, strict=True):
            if got is None:
                self._pool.corrupt(fk)  # a miss, counted and removed from the pool
                continue
            meta, raw = got
            out[fk] = raw_to_value(raw, meta)
            if promote:
                self._place(ns, fk, raw, meta)
        return out

    def _place(self, ns: Namespace, fk: bytes, raw: bytes | bytearray, meta: RecordMeta) -> None:
        move = self._move
        with self._lock:
            if self._closed() or move.holds(fk) or not move.namespaces.is_live(ns):
                return  # a put since the fetch wins; a closed store or a deleted namespace takes nothing
            with contextlib.suppress(MemstoreError):  # no room or no quota: served, not kept
                move.quotas.check_records(fk)
                move.place_cache(ns, fk, pack_header(meta, raw), memoryview(raw), meta)

    def in_pool(self, ns: Namespace, fks: list[bytes], tiers: list[str | None]) -> list[str | None]:
        """``tiers`` with "pool" for the keys of a shared namespace that only the pool holds."""
        missing = [i for i, t in enumerate(tiers) if t is None]
        if self._pool is None or not ns.shared or not missing:
            return tiers
        held = self._pool.exists([fks[i] for i in missing])
        out = list(tiers)
        for i, there in zip(missing, held, strict=True):
            if there:
                out[i] = "pool"
        return out

    def promote_one(self, fk: bytes) -> bool:
        """A prefetch worker's step: bring one key into hot; True if this call moved it there."""
        move = self._move
        ns = move.namespaces.of(fk)
        with self._lock:
            if self._closed() or ns is None or fk in move.hot:
                return False
        if not (ns.shared and self.from_pool(ns, [fk], True)):
            self.get(ns, fk, promote=True, count=False)
        with self._lock:
            if fk in move.hot:
                move.prefetched.add(fk)
                return True
            return False

    def get_many(self, ns: Namespace, fks: list[bytes], promote: bool, max_bytes: int = 0) -> list[Any]:
        """A batch: its hot hits copied out under one hold of the lock (up to BATCH_COPY bytes, so a
        batch of large values does not hold the lock long), checked outside it; the rest as ``get``.
        Once the values read reach ``max_bytes`` (if not 0), the keys after are not read: they come
        back UNREAD."""
        move = self._move
        hot = move.hot
        copies: list[tuple[HotEntry, bytes | bytearray] | None] = []
        limit = min(BATCH_COPY, max_bytes) if max_bytes else BATCH_COPY
        copied = 0
        with self._lock:
            if self._closed():
                raise StoreClosedError("the store is closed")
            move.reconcile()
            for fk in fks:
                found = hot.get(fk) if copied < limit else None
                if found is None:
                    copies.append(None)
                    continue
                move.admission.seen(fk)
                if fk in move.prefetched:
                    move.prefetched.discard(fk)
                    hot.stats.bump("prefetch_used")
                try:
                    payload = hot.arena.payload(found)
                except CorruptRecordError:
                    copies.append(None)  # ``get`` below counts and removes it
                    continue
                copy = bytearray(payload) if found.meta.dtype is not None else bytes(payload)
                copied += len(copy)
                hot.access(fk)
                hot.stats.hits += 1
                copies.append((found, copy))
        out: list[Any] = []
        total = 0
        for fk, got in zip(fks, copies, strict=True):
            if max_bytes and total >= max_bytes:
                out.append(UNREAD)
                continue
            if got is not None:
                entry, copy = got
                try:
                    verify_payload(copy, entry.seed, entry.digest)
                    out.append(raw_to_value(copy, entry.meta))
                    total += len(copy)
                    continue
                except CorruptRecordError:
                    with self._lock:
                        hot.stats.checksum_failures += 1
                        hot.stats.hits -= 1
                        if hot.get(fk) is entry:
                            move.drop_upper(fk)
                            _quarantined(move, fk, "hot", entry.clean)
                    if not entry.clean:
                        out.append(None)
                        continue
            value = self.get(ns, fk, promote, count=got is None)
            total += 0 if value is None else _size(value)
            out.append(value)
        return out

    def get(self, ns: Namespace, fk: bytes, promote: bool, count: bool = True) -> Any:
        move = self._move
        hot, warm, cold = move.hot, move.warm, move.cold
        with self._lock:
            if self._closed():
                raise StoreClosedError("the store is closed")
            move.reconcile()
            if count:
                move.admission.seen(fk)
                if fk in move.prefetched and fk in hot:
                    move.prefetched.discard(fk)
                    hot.stats.bump("prefetch_used")
            entry = hot.get(fk)
            copy: bytes | bytearray | None = None
            if entry is not None:
                try:
                    payload = hot.arena.payload(entry)
                    copy = bytearray(payload) if entry.meta.dtype is not None else bytes(payload)
                    hot.access(fk)
                    hot.stats.hits += 1
                except CorruptRecordError:
                    pass
        if entry is not None:
            try:
                if copy is None:
                    raise CorruptRecordError("bad header in the hot arena")
                verify_payload(copy, entry.seed, entry.digest)
                return raw_to_value(copy, entry.meta)
            except CorruptRecordError:
                with self._lock:
                    hot.stats.checksum_failures += 1
                    hot.stats.hits -= copy is not None
                    if hot.get(fk) is entry:
                        move.drop_upper(fk)
                        _quarantined(move, fk, "hot", entry.clean)
                if not entry.clean:
                    return None
        with self._lock:
            hot.stats.misses += 1
            w = warm.get(fk)
            in_cold = fk in cold
        if w is not None:
            try:
                meta, raw = decode(w.record)
            except POISON:
                with self._lock:
                    warm.stats.checksum_failures += 1
                    if warm.get(fk) is w:
                        move.drop_upper(fk)
                        _quarantined(move, fk, "warm", w.clean)
                if not w.clean:
                    return None
            else:
                with self._lock:
                    warm.stats.hits += 1
                    if warm.get(fk) is w:
                        warm.access(fk)
                        if promote and not self._closed():
                            move.promote(fk, raw, meta, clean=w.clean, from_warm=True)
                return raw_to_value(raw, meta)
        else:
            with self._lock:
                warm.stats.misses += 1
        if not in_cold:
            with self._lock:
                cold.stats.misses += 1
            return None
        return self._get_cold(ns, fk, promote)

    def _get_cold(self, ns: Namespace, fk: bytes, promote: bool) -> Any:
        move = self._move
        cold = move.cold
        try:
            found = self._writer.read(fk, _decode_owned)
        except POISON:
            with self._lock:
                cold.stats.checksum_failures += 1
                fut = move.drop_cold(fk, durable=ns.persistent)  # quarantine: never served again
                _quarantined(move, fk, "cold", False)
            if fut is not None:
                with contextlib.suppress(MemstoreError):
                    fut.result()
            return None
        with self._lock:
            if found is None:
                cold.stats.misses += 1
                return None
            meta, raw = found
            cold.stats.hits += 1
            if fk in cold and not ns.persistent:
                cold.access(fk)
            if promote and not self._closed() and fk in cold and fk not in move.hot and fk not in move.warm:
                move.promote(fk, raw, meta, clean=True, from_warm=False)
        return raw_to_value(raw, meta)


def _quarantined(move: Movement, fk: bytes, tier: str, copy_below: bool) -> None:
    """A record that failed its checks was removed: what explain says once no copy is left."""
    if not copy_below:
        move.removals.note(fk, "quarantined", tier, detail="checksum mismatch")


def _checked(record: bytes) -> tuple[RecordMeta, bytes | bytearray] | None:
    """A pool record decoded and checked; None when it fails its checks."""
    try:
        return _decode_owned(memoryview(record))
    except POISON:
        return None


def _decode_owned(record: memoryview) -> tuple[RecordMeta, bytes | bytearray]:
    """Decode inside an LMDB read transaction: the result must not point into the map."""
    meta, payload, seed, digest = split_record(record)
    if meta.codec == RAW.id:  # copy first, then hash the copy while it is in cache
        copy = bytearray(payload) if meta.dtype is not None else bytes(payload)
        verify_payload(copy, seed, digest)
        return meta, copy
    verify_payload(payload, seed, digest)
    raw = decode_payload(payload, meta)
    return meta.with_codec(RAW.id), raw if not isinstance(raw, memoryview) else bytes(raw)
