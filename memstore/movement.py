"""How records move between the tiers: the rules README's first section states, in one place.

- **Placement.** A cache put goes to hot; a value too large for hot (or with no room there) to warm; one
  too large for warm to cold. A persistent put is written to cold first (acknowledged after a synced
  commit) and keeps a *clean* copy in hot.
- **Demotion.** Making room in a tier moves its policy's victims down: a hot victim is copied to warm
  raw (the compactor compresses it there) or, if warm cannot take it, encoded and written to cold; a
  warm victim is written to cold if cold admission lets it; a cold victim of the cache class leaves the
  store. A *clean* victim (an identical copy is in cold) is only dropped, never rewritten. Pinned keys,
  and another tenant's keys inside its reserved share, are never victims.
- **Promotion.** A hit in warm or cold is copied up to hot; one from cold stays in cold and is clean.
- **Faults.** A record that fails its checks while moved is removed from hot and warm, counted and
  logged (quarantine), never raised into the caller; a cold write that failed after it was queued is
  undone in the index by ``reconcile``.

``Movement`` holds the three tiers, the quotas, the cold admission policy and what the policies need
to know of keys (prefix-chain parents, pins). It is not thread-safe: every method runs under the
store's lock (see ``memstore.store``).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import zstandard

from memstore.admission import Admission
from memstore.codecs import RAW, Codec, codec_named, decode_payload
from memstore.cold import ColdEntry, ColdIndex, ColdTier, lmdb_cost
from memstore.errors import CapacityError, CorruptRecordError, PersistentFullError, QuotaExceededError
from memstore.explain import Removals
from memstore.hot import HotEntry, HotTier
from memstore.namespace import Namespace, Namespaces
from memstore.quota import QuotaGuard
from memstore.record import RecordMeta, encode_record, pack_header, parse_record, split_record
from memstore.retention import Retention
from memstore.tier import Tier
from memstore.warm import WarmEntry, WarmTier

T = TypeVar("T")
log = logging.getLogger("memstore.store")
# What a bad record raises when it is checked, decoded or encoded: its own fault, kept to itself.
POISON = (
    CorruptRecordError,
    ValueError,
    TypeError,
    struct.error,
    IndexError,
    OverflowError,
    zstandard.ZstdError,
)


# zstd and numpy release the GIL: a batch's records encode or decode on several cores at once
CODEC_WORKERS = ThreadPoolExecutor(
    max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="memstore-codec"
)


def each(fn: Callable[[Any], T], items: list[Any]) -> list[T]:
    """``fn`` of every item, on the codec workers when there is more than one."""
    return list(CODEC_WORKERS.map(fn, items)) if len(items) > 1 else [fn(x) for x in items]


def encode_for(codec_name: str, raw: memoryview, meta: RecordMeta) -> bytes:
    """A record of ``raw`` under the named codec, or raw when the codec does not make it smaller."""
    codec: Codec = codec_named(codec_name)
    codec_id, payload = codec.encode(raw, meta)
    if len(payload) >= len(raw):
        # Incompressible (random bytes, or values too small for a frame): a codec's frame would
        # make the record larger than the value, and a warm record swapped in by the compactor
        # would push warm past its budget. Keep the value as it is.
        codec_id, payload = RAW.id, raw
    return encode_record(meta.with_codec(codec_id), payload)


def decode(record: bytes | memoryview) -> tuple[RecordMeta, bytes | bytearray | memoryview]:
    """The raw value of a record (checked), and its metadata as a raw record's."""
    meta, payload = parse_record(record)
    raw = decode_payload(payload, meta)
    return meta.with_codec(RAW.id), raw


class Movement:
    """Placement, demotion, promotion and quarantine across hot, warm and cold."""

    def __init__(
        self,
        hot: HotTier,
        warm: WarmTier,
        cold: ColdIndex,
        writer: ColdTier,
        quotas: QuotaGuard,
        admission: Admission,
        namespaces: Namespaces,
        on_warm_raw: Callable[[bytes], None],
    ) -> None:
        self.hot, self.warm, self.cold, self.writer = hot, warm, cold, writer
        self.quotas = quotas
        self.admission = admission
        self.namespaces = namespaces
        self.on_warm_raw = on_warm_raw  # a raw record landed in warm: the compactor's queue
        self.pinned: set[bytes] = set()
        self.parents: dict[bytes, bytes] = {}  # key -> the key it extends in a prefix chain, when told
        self.prefetched: set[bytes] = set()  # promoted by a prefetch and not read since
        self.removals = Removals()
        self.retention = Retention()  # callers' hints, shared by the three tiers' victim choice
        for tier in (hot, warm, cold):
            tier.retention = self.retention

    # ---- placement ------------------------------------------------------------------------------

    def place_cache(
        self, ns: Namespace, fk: bytes, header: bytes, raw: memoryview, meta: RecordMeta
    ) -> Future[bool] | None:
        """Store a cache value in the highest tier that takes it; returns a cold write to wait for."""
        record_len = len(header) + len(raw)
        self.admission.seen(fk)
        self.drop_upper(fk)
        stale = self.drop_cold(fk, durable=False)  # an older value must not outlive a crash
        if record_len <= self.hot.max_item() and self.store_hot(fk, header, raw, meta, clean=False):
            return stale
        if record_len <= self.warm.capacity and self.make_room_warm(fk, record_len):
            self.insert_warm(fk, WarmEntry(header + raw, meta, clean=False, compressed=False))
            return stale
        record = encode_for(ns.cold_codec, raw, meta)
        if self.make_room_cold(fk, len(record)):
            return self.submit_cold(fk, record, meta, persistent=False) or stale
        if self.quotas.over("cold", fk, lmdb_cost(len(fk), len(record))):
            raise QuotaExceededError(
                f"tenant {self.quotas.tenant_of(fk)!r} has no cold quota left for this value"
            )
        raise CapacityError(f"a value of {meta.raw_len} bytes fits in no tier (all full of pinned data?)")

    def place_persistent(
        self, fk: bytes, header: bytes, raw: memoryview, meta: RecordMeta, record: bytes
    ) -> Future[bool]:
        """Queue a persistent record's synced write to cold (its future) and keep a clean copy in hot."""
        old = self.cold.remove(fk)  # the overwrite replaces it in place
        if not self.make_room_cold(fk, len(record)):
            if old is not None:
                self.cold.add(fk, old, ranked=False)
            if self.quotas.over("cold", fk, lmdb_cost(len(fk), len(record))):
                raise QuotaExceededError(
                    f"tenant {self.quotas.tenant_of(fk)!r}: its cold quota cannot take {len(record)} more "
                    "bytes of persistent data; delete some of its records or raise the quota"
                )
            raise PersistentFullError(
                f"cold tier cannot take {len(record)} more bytes of persistent data "
                f"(budget {self.cold.capacity}, used {self.cold.used}); delete records or grow cold_bytes"
            )
        self.drop_upper(fk)
        fut = self.submit_cold(fk, record, meta, persistent=True)
        assert fut is not None
        if len(header) + len(raw) <= self.hot.max_item():
            self.store_hot(fk, header, raw, meta, clean=True)
        return fut

    def set_parent(self, fk: bytes, parent: bytes | None) -> None:
        if parent is not None and parent != fk:
            self.parents[fk] = parent
        else:
            self.parents.pop(fk, None)

    def index_cold(self, found: Iterable[tuple[bytes, int]]) -> None:
        """At open: index what the cold file holds (each key with its record's length)."""
        for fk, length in found:
            ns = self.namespaces.of(fk)
            if ns is not None:
                entry = self.cold.entry_for(fk, length, ns.persistent)
                self.cold.add(fk, entry, self.parents.get(fk), ranked=not ns.persistent)

    def holds(self, fk: bytes) -> bool:
        return fk in self.hot or fk in self.warm or fk in self.cold

    def tier_of(self, fk: bytes) -> str | None:
        """The highest tier holding fk, or None."""
        return next((t.name for t in (self.hot, self.warm, self.cold) if fk in t), None)

    # ---- hot ------------------------------------------------------------------------------------

    def store_hot(self, fk: bytes, header: bytes, raw: memoryview, meta: RecordMeta, *, clean: bool) -> bool:
        entry = self.in_hot_room(
            fk, len(header) + len(raw), lambda: self.hot.arena.store(header, raw, meta, clean)
        )
        if entry is None:
            return False
        self.hot.add(fk, entry, self.parents.get(fk))
        return True

    def in_hot_room(self, fk: bytes, nbytes: int, attempt: Callable[[], T | None]) -> T | None:
        """Run an arena allocation for fk, demoting hot victims until it succeeds or nothing can move."""
        if not self._within_quota(self.hot, fk, nbytes):
            return None
        skip = self.quotas.skip_for("hot", fk, self.pinned)
        while True:
            result = attempt()
            if result is not None:
                return result
            victim = self.hot.victim(skip, fk)
            if victim is None or not self.demote_hot(victim):
                return None

    def demote_hot(self, fk: bytes) -> bool:
        entry = self.hot.index[fk]
        try:
            moved = self._move_hot_down(fk, entry)
        except POISON as exc:  # this record's fault: it leaves the tier, the caller's work goes on
            self.quarantine(fk, "hot", exc)
            return True
        if not moved:
            return False
        self.hot.evict(fk)
        if fk in self.prefetched:
            self.prefetched.discard(fk)
            self.hot.stats.bump("prefetch_wasted")
        self.hot.stats.demotions += 1
        return True

    def _move_hot_down(self, fk: bytes, entry: HotEntry) -> bool:
        """Copy a dirty hot record to warm (or straight to cold); False if neither can take it."""
        if entry.clean:
            return True
        length = entry.length
        if length > self.warm.capacity or not self.make_room_warm(fk, length):
            # Warm cannot take it: write it straight to cold, or keep it.
            ns = self.namespaces.by_prefix[fk[: 1 + fk[0]]]
            _, payload = parse_record(self.hot.arena.record(entry))
            record = encode_for(ns.cold_codec, payload, entry.meta)
            if not self.make_room_cold(fk, len(record)):
                self.hot.stats.failed_demotions += 1
                return False
            self.submit_cold(fk, record, entry.meta, persistent=False)
        else:
            record = bytes(self.hot.arena.record(entry))
            split_record(record)  # a bad header stops here, not in warm
            self.insert_warm(fk, WarmEntry(record, entry.meta, clean=False, compressed=False))
        return True

    def promote(
        self,
        fk: bytes,
        raw: bytes | bytearray | memoryview,
        meta: RecordMeta,
        *,
        clean: bool,
        from_warm: bool,
    ) -> None:
        """Copy a warm or cold hit up into hot (a warm entry moves; a cold one stays, and hot's is clean)."""
        header = pack_header(meta, raw)
        if len(header) + len(raw) > self.hot.max_item():
            return
        source = self.warm if from_warm else self.cold
        if from_warm:
            # Take it out of warm first so making room in hot cannot demote into the entry we are moving.
            w = self.warm.remove(fk)
            assert w is not None
            if not self.store_hot(fk, header, memoryview(raw), meta, clean=clean):
                self.insert_warm(fk, w)  # no room in hot: put it back where it was
                return
        elif not self.store_hot(fk, header, memoryview(raw), meta, clean=clean):
            return
        source.stats.promotions += 1

    # ---- warm -----------------------------------------------------------------------------------

    def insert_warm(self, fk: bytes, w: WarmEntry) -> None:
        self.warm.add(fk, w, self.parents.get(fk))
        if not w.compressed:
            self.on_warm_raw(fk)

    def make_room_warm(self, fk: bytes, nbytes: int) -> bool:
        if not self._within_quota(self.warm, fk, nbytes):
            return False
        skip = self.quotas.skip_for("warm", fk, self.pinned)
        while not self.warm.fits(nbytes):
            victim = self.warm.victim(skip, fk)
            if victim is None or not self.demote_warm(victim):
                return False
        return True

    def demote_warm(self, fk: bytes) -> bool:
        w = self.warm.index[fk]
        try:
            return self._move_warm_down(fk, w)
        except POISON as exc:
            self.quarantine(fk, "warm", exc)
            return True

    def _move_warm_down(self, fk: bytes, w: WarmEntry) -> bool:
        if not w.clean and not self.admission.admit(fk):
            self.warm.stats.bump("not_admitted")
            self.parents.pop(fk, None)  # the value leaves the store
        elif not w.clean:
            ns = self.namespaces.by_prefix[fk[: 1 + fk[0]]]
            record = w.record
            if not w.compressed or ns.warm_codec != ns.cold_codec:
                _, raw = decode(w.record)
                record = encode_for(ns.cold_codec, memoryview(raw), w.meta.with_codec(RAW.id))
            if not self.make_room_cold(fk, len(record)):
                self.warm.stats.failed_demotions += 1
                return False
            self.submit_cold(fk, record, w.meta, persistent=False)
        self.warm.evict(fk)
        self.warm.stats.demotions += 1
        return True

    # ---- cold -----------------------------------------------------------------------------------

    def make_room_cold(self, fk: bytes, record_len: int) -> bool:
        cost = lmdb_cost(len(fk), record_len)
        if not self._within_quota(self.cold, fk, cost):
            return False
        skip = self.quotas.skip_for("cold", fk, self.pinned)
        while not self.cold.fits(cost):
            victim = self.cold.victim(skip, fk)
            if victim is None:
                return False
            self.evict_cold(victim)
        return True

    def evict_cold(self, fk: bytes) -> bool:
        why = self.retention.reason(fk)  # a hint gave it up first: its lifetime passed, its session ended
        reason = "expired" if why == "expired" else "evicted"
        detail = {
            "ended": "its sessions ended",
            "paused": "its sessions were paused",
            "priority": "hinted with a negative priority",
        }.get(why, "")
        self.removals.note(fk, reason, "cold", policy=self.cold.policy.name, detail=detail)
        self.retention.forget(fk)
        self.cold.policy.evict(fk)
        self.drop_cold(fk, durable=False)
        self.parents.pop(fk, None)
        self.cold.stats.evictions += 1
        return True

    def submit_cold(
        self, fk: bytes, record: bytes, meta: RecordMeta, *, persistent: bool
    ) -> Future[bool] | None:
        entry = self.cold.entry_for(fk, len(record), persistent)
        if fk in self.cold:
            self.cold.replace(fk, entry)
        else:
            self.cold.add(fk, entry, ranked=False)
        if not persistent:
            self.cold.policy.insert(fk, self.parents.get(fk))
        self.cold.stats.raw_bytes += meta.raw_len
        return self.writer.submit_put(fk, record, durable=persistent, tag=entry.tag)

    def drop_cold(self, fk: bytes, *, durable: bool) -> Future[bool] | None:
        if self.cold.remove(fk) is None:
            return None
        # Copies above that relied on this one are the only ones left now.
        hot = self.hot.get(fk)
        if hot is not None:
            hot.clean = False
        w = self.warm.get(fk)
        if w is not None:
            w.clean = False
        return self.writer.submit_delete(fk, durable=durable)

    def drop_upper(self, fk: bytes) -> bool:
        """Remove fk from hot and warm; True if it was in either."""
        in_hot = self.hot.remove(fk) is not None
        return self.warm.remove(fk) is not None or in_hot

    def write_down(self, fk: bytes, record: bytes, meta: RecordMeta, *, compressed: bool, tier: str) -> None:
        """At close: move one dirty upper entry to cold if the budget allows (a bad one is dropped)."""
        ns = self.namespaces.by_prefix[fk[: 1 + fk[0]]]
        try:
            if not compressed or ns.warm_codec != ns.cold_codec:
                _, raw = decode(record)
                record = encode_for(ns.cold_codec, memoryview(raw), meta.with_codec(RAW.id))
            else:
                parse_record(record)
        except POISON as exc:
            self.quarantine(fk, tier, exc)
            return
        if self.make_room_cold(fk, len(record)):
            self.submit_cold(fk, record, meta, persistent=False)

    def write_down_all(self) -> None:
        """At close: every dirty hot and warm record to cold, newest first, so that what does not fit in
        cold's budget is the least recently used."""
        for fk in reversed(self.hot.policy.ordered()):
            entry = self.hot.index[fk]  # type: ignore[index]
            if not entry.clean:
                record = bytes(self.hot.arena.record(entry))
                self.write_down(fk, record, entry.meta, compressed=False, tier="hot")  # type: ignore[arg-type]
        for fk in reversed(self.warm.policy.ordered()):
            w = self.warm.get(fk)  # type: ignore[arg-type]
            if w is not None and not w.clean:
                self.write_down(fk, w.record, w.meta, compressed=w.compressed, tier="warm")  # type: ignore[arg-type]

    def reconcile(self) -> None:
        """Apply the outcome of cold writes that failed after they were queued."""
        failures = self.writer.failures
        while failures:
            fk, value, tag, _err = failures.popleft()
            entry: ColdEntry | None = self.cold.get(fk)
            if entry is None or entry.tag != tag:
                continue
            self.cold.remove(fk)
            self.cold.stats.failed_demotions += 1
            ns = self.namespaces.of(fk)
            hot = self.hot.get(fk)
            if hot is not None and hot.clean:
                if ns is not None and ns.persistent:
                    self.drop_upper(fk)  # that persistent put failed: its value must not be served
                else:
                    hot.clean = False
            elif (
                value is not None
                and not entry.persistent
                and fk not in self.warm
                and fk not in self.hot
                and self.warm.fits(len(value))
            ):
                meta, _ = parse_record(value)
                self.insert_warm(fk, WarmEntry(value, meta.with_codec(RAW.id), clean=False, compressed=True))

    # ---- faults and quotas ----------------------------------------------------------------------

    def quarantine(self, fk: bytes, tier: str, exc: BaseException) -> None:
        """A record that failed its checks while being moved: removed from hot and warm (a clean cold
        copy, checked on its own read, stays), counted, logged, and never raised into the caller."""
        stats = (self.hot if tier == "hot" else self.warm).stats
        stats.checksum_failures += isinstance(exc, CorruptRecordError)
        stats.bump("quarantined")
        log.warning("record %r failed its checks in %s and was removed: %s", fk, tier, exc)
        entry = self.hot.get(fk) if tier == "hot" else self.warm.get(fk)
        self.drop_upper(fk)
        self.prefetched.discard(fk)
        if entry is not None and not entry.clean:  # no copy is left: the value leaves the store
            self.removals.note(fk, "quarantined", tier, detail=str(exc))
            self.parents.pop(fk, None)
            self.pinned.discard(fk)

    def _within_quota(self, tier: Tier[Any], fk: bytes, nbytes: int) -> bool:
        move_out: Callable[[bytes], bool] = {
            "hot": self.demote_hot,
            "warm": self.demote_warm,
            "cold": self.evict_cold,
        }[tier.name]
        return self.quotas.make_room(tier.name, fk, nbytes, tier.victim, move_out, self.pinned)
