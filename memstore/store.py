"""TieredStore: hot shared-memory arena, compressed DRAM warm tier, LMDB cold tier.

Movement: a put goes to hot (a value too large for hot goes to warm, one too large for warm to cold).
Hot victims move to warm as they are (a copy out of the arena) and a background thread compresses them
there; warm victims are written to cold; cold victims of the cache class are dropped. A hit in warm or
cold promotes to hot. An entry promoted from cold keeps its cold copy and is marked *clean*: demoting
it again only drops it, nothing is rewritten (CacheLib's "NVM clean"). Persistent namespaces write
cold first (acknowledged after a synced commit), keep a clean copy in hot, and are never evicted from
cold.

Notes on locking:
- One re-entrant lock (``_lock``) guards every index, policy, the arena allocator and the statistics.
  Copies into and out of the arena happen under it (they are memcpy-fast).
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
import dataclasses
import fcntl
import json
import logging
import math
import os
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

import xxhash
import zstandard

from memstore import settings, tenancy
from memstore.admission import make_admission
from memstore.check import check_openable
from memstore.codecs import RAW, Codec, codec_named, decode_payload
from memstore.cold import ColdFullError, ColdTier, cold_budget, lmdb_cost
from memstore.errors import (
    CapacityError,
    ColdResizeError,
    CorruptRecordError,
    InvalidKeyError,
    InvalidNamespaceError,
    InvalidValueError,
    MemstoreError,
    PersistentFullError,
    QuotaExceededError,
    ReservationMismatchError,
    StoreClosedError,
    StoreLockedError,
    UnknownNamespaceError,
    UnknownReservationError,
)
from memstore.hot import HotArena, HotEntry, remove_stale_segment
from memstore.migrate import migrate
from memstore.policy import EvictionPolicy, make_policy
from memstore.prefetch import Mode as PrefetchMode
from memstore.prefetch import Prefetcher, PrefetchTask
from memstore.quota import AccountedIndex, Quota, Usage
from memstore.record import (
    RecordMeta,
    check_array_meta,
    encode_record,
    pack_header,
    parse_record,
    raw_to_value,
    split_record,
    value_to_raw,
    verify_payload,
)

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
Durability = Literal["cache", "persistent"]
Value = Any  # bytes or a numpy array (Any: numpy arrays do not type-check as one union member)


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    durability: Durability = "cache"
    warm_codec: str = str(settings.DEFAULTS["warm_codec"])
    cold_codec: str = str(settings.DEFAULTS["cold_codec"])
    # A schema every value must follow (KV namespaces: one block's dtype and shape); None allows any.
    value_dtype: str | None = None
    value_shape: tuple[int, ...] | None = None

    @property
    def prefix(self) -> bytes:
        return tenancy.key_prefix(self.name)

    @property
    def persistent(self) -> bool:
        return self.durability == "persistent"

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "durability": self.durability,
            "warm_codec": self.warm_codec,
            "cold_codec": self.cold_codec,
        }
        if self.value_dtype is not None:
            opts["value_dtype"] = self.value_dtype
            opts["value_shape"] = list(self.value_shape or ())
        return opts

    def check_value(self, dtype: str | None, shape: tuple[int, ...] | None) -> None:
        if self.value_dtype is None:
            return
        if dtype != self.value_dtype or shape != self.value_shape:
            raise InvalidValueError(
                f"namespace {self.name!r} holds arrays of dtype {self.value_dtype} and shape "
                f"{list(self.value_shape or ())}, not {dtype} {list(shape) if shape is not None else 'bytes'}"
            )


@dataclass(slots=True)
class WarmEntry:
    record: bytes  # header + payload, immutable
    meta: RecordMeta
    clean: bool
    compressed: bool


@dataclass(slots=True)
class ColdEntry:
    cost: int
    persistent: bool
    tag: int  # which queued write made this entry (to reconcile failed writes)


@dataclass(frozen=True, slots=True)
class HotLocation:
    """Where a record sits in the arena, and the slot generation it had when it was located."""

    slot: int
    offset: int
    length: int
    header_len: int
    generation: int


class Remote:
    """Marker: the value exists but is not in the arena; fetch it with ``get``."""

    def __repr__(self) -> str:
        return "REMOTE"


REMOTE = Remote()


@dataclass(slots=True)
class Reservation:
    token: int
    fk: bytes
    slot: int
    offset: int
    alloc: int
    header_len: int
    meta: RecordMeta
    expires: float
    parent: bytes | None = None
    owner: str = ""  # who made it: only the same caller may commit or abort it

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_len


# The integer counters every tier reports in stats() (the service and clients carry the same names).
TIER_COUNTERS = (
    "items",
    "bytes",
    "capacity_bytes",
    "hits",
    "misses",
    "demotions",
    "evictions",
    "promotions",
    "checksum_failures",
    "failed_demotions",
)


@dataclass(slots=True)
class TierStats:
    hits: int = 0
    misses: int = 0
    demotions: int = 0  # entries moved (or dropped because clean) to the tier below
    evictions: int = 0  # entries dropped for space (cold only: cache data leaving the store)
    promotions: int = 0  # entries copied up out of this tier
    checksum_failures: int = 0
    failed_demotions: int = 0
    raw_bytes: int = 0  # decoded size of what the tier holds (for the compression ratio)
    extra: dict[str, int] = field(default_factory=dict)


def _nbytes(dtype: str, shape: tuple[int, ...] | None) -> int:
    import numpy as np

    try:
        n = np.dtype(dtype).itemsize
    except TypeError as exc:
        raise InvalidNamespaceError(f"unknown dtype {dtype!r}") from exc
    for d in shape or ():
        n *= d
    return n


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes):
        raise InvalidKeyError(f"keys are bytes, not {type(key).__name__}")
    if not 1 <= len(key) <= settings.MAX_KEY_BYTES:
        raise InvalidKeyError(f"keys are 1 to {settings.MAX_KEY_BYTES} bytes, this one is {len(key)}")
    return key


class TieredStore:
    """A three-tier key-value store; see the module docstring for movement and locking."""

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
    ) -> None:
        for name, v in (
            ("hot_bytes", hot_bytes),
            ("warm_bytes", warm_bytes),
            ("cold_bytes", cold_bytes or 0),
        ):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int")
        # Policies first: a bad name fails here, before any file or arena is created.
        self._policy_name = policy
        self._admission = make_admission(cold_admission)
        self._hot_policy: EvictionPolicy = make_policy(policy)
        self._warm_policy: EvictionPolicy = make_policy(policy)
        self._cold_policy: EvictionPolicy = make_policy(policy)
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._lock = threading.RLock()
        self._closed = False
        self._lockfile = open(os.path.join(self.path, "LOCK"), "a+")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.seek(0)
            holder = self._lockfile.read().strip()
            self._lockfile.close()
            pid = int(holder) if holder.isdigit() else None
            by = f" (pid {pid})" if pid else ""
            raise StoreLockedError(f"{self.path} is open in another process{by}", pid) from None
        self._lockfile.seek(0)
        self._lockfile.truncate()
        self._lockfile.write(str(os.getpid()))  # who holds it, for the error a second opener gets
        self._lockfile.flush()
        self._owner_file = os.path.join(self.path, "hot.segment")
        try:
            self._remove_dead_segment()
            check_openable(self.path)  # a damaged file is a clear error, never a SIGBUS
            self._open(hot_bytes, warm_bytes, cold_bytes, quotas, background_compression, prefault)
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """A start that failed leaves nothing behind: no arena segment, no lock held."""
        with contextlib.suppress(Exception):
            if getattr(self, "_cold", None) is not None:
                self._cold.close()
        with contextlib.suppress(Exception):
            if getattr(self, "_hot", None) is not None:
                self._hot.close()
                os.unlink(self._owner_file)
        fcntl.flock(self._lockfile, fcntl.LOCK_UN)
        self._lockfile.close()

    def _open(
        self,
        hot_bytes: int,
        warm_bytes: int,
        cold_bytes: int | None,
        quotas: Mapping[str, Quota] | None,
        background_compression: bool,
        prefault: bool,
    ) -> None:
        recorded = self._recorded_map_size()
        if cold_bytes is None:
            cold_bytes = recorded or int(settings.DEFAULTS["cold_bytes"])  # type: ignore[call-overload]
        self._cold = ColdTier(
            os.path.join(self.path, "cold"),
            max(cold_bytes, 1 << 20),
            pending_limit=max(8 << 20, min(256 << 20, warm_bytes // 2)),  # bytes queued for the writer
        )
        self._cold_budget = cold_budget(self._cold.map_size)
        self._hot = HotArena(self.path, max(hot_bytes, 4096), prefault=prefault)
        with open(self._owner_file, "w") as f:
            f.write(self._hot.name)
        self._hot_enabled = hot_bytes > 0
        self._warm_capacity = warm_bytes

        # Tier indexes report every entry to _usage: bytes per tier and records per tenant (quotas).
        self._quotas = dict(quotas or {})
        self._usage = Usage(set(self._quotas))
        self._tenant_by_prefix: dict[bytes, str] = {}
        self._hot_index: dict[bytes, HotEntry] = AccountedIndex(
            "hot", self._usage, self._tenant_of, lambda e: e.length
        )
        self._warm_index: dict[bytes, WarmEntry] = AccountedIndex(
            "warm", self._usage, self._tenant_of, lambda w: len(w.record)
        )
        self._cold_index: dict[bytes, ColdEntry] = AccountedIndex(
            "cold", self._usage, self._tenant_of, lambda c: c.cost
        )
        self._warm_used = 0
        self._cold_used = 0
        self._pinned: set[bytes] = set()
        self._parents: dict[bytes, bytes] = {}  # key -> the key it extends in a prefix chain, when told
        self._reservations: dict[int, Reservation] = {}
        self._prefetched: set[bytes] = set()  # promoted by a prefetch and not read since
        self._stats = {"hot": TierStats(), "warm": TierStats(), "cold": TierStats()}
        self._next_tag = 0

        self._namespaces: dict[str, Namespace] = {}
        self._ns_by_prefix: dict[bytes, Namespace] = {}
        self._load_namespaces()
        self._load_cold_index()
        if self._cold.map_size != recorded:
            self._settle_map_size(recorded)

        self._prefetcher = Prefetcher(self._prefetch_one)
        self._compact_queue: deque[bytes] = deque()
        self._compacting = 0  # entries taken off the queue whose compression has not landed yet
        self._compact_cond = threading.Condition(self._lock)
        self._compactor: threading.Thread | None = None
        if background_compression:
            self._compactor = threading.Thread(
                target=self._compact_loop, name="memstore-compactor", daemon=True
            )
            self._compactor.start()

    # ---- opening --------------------------------------------------------------------------------

    def _remove_dead_segment(self) -> None:
        """We hold the path's lock, so a segment named in the owner file belongs to a dead process."""
        try:
            with open(self._owner_file) as f:
                remove_stale_segment(f.read().strip())
        except FileNotFoundError:
            pass

    @property
    def cold_map_size(self) -> int:
        """The cold tier's LMDB map size; its records fill at most ``stats()["cold"]["capacity_bytes"]``."""
        return self._cold.map_size

    def _recorded_map_size(self) -> int | None:
        """The cold tier's map size this store was last opened with (None for a new store)."""
        try:
            with open(os.path.join(self.path, "cold_bytes")) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _settle_map_size(self, recorded: int | None) -> None:
        """A new store, or a new ``cold_bytes`` for an existing one: growing always works (LMDB maps
        more of the file); shrinking only while the records and LMDB's pages still fit."""
        size = self._cold.map_size
        if recorded is not None and size < recorded:
            env = self._cold.env
            pages = (int(env.info()["last_pgno"]) + 1) * int(env.stat()["psize"])  # bytes LMDB has used
            if pages > size:
                raise ColdResizeError(
                    f"cold_bytes {size:,} is too small for {self.path}: its LMDB file already spans "
                    f"{pages:,} bytes and LMDB never shrinks a file; give at least that, or copy the store "
                    "into a new data dir with memstore salvage, which writes it compactly"
                )
            if self._cold_used > self._cold_budget:
                need = math.ceil((self._cold_used + settings.COLD_RESERVED) / settings.COLD_FILL)
                raise ColdResizeError(
                    f"cold_bytes {size:,} is too small for {self.path}: its cold records take "
                    f"{self._cold_used:,} bytes and may fill {settings.COLD_FILL:.0%} of cold_bytes; give "
                    f"at least {need:,} (it was {recorded:,}) or delete records first"
                )
        if recorded is not None:
            log.info("cold tier of %s: map size %d -> %d bytes", self.path, recorded, size)
        with open(os.path.join(self.path, "cold_bytes"), "w") as f:
            f.write(str(size))

    def _load_namespaces(self) -> None:
        cold = self._cold
        migrate(cold.env, cold.records, cold.meta, cold.lengths)  # older data dirs, once
        for key, value in self._cold.meta_items():
            if key.startswith(b"ns:"):
                opts = json.loads(value)
                if opts.get("value_shape") is not None:
                    opts["value_shape"] = tuple(opts["value_shape"])
                self._register(Namespace(key[3:].decode(), **opts))
        if "default" not in self._namespaces:
            self.create_namespace("default")

    def _register(self, ns: Namespace) -> None:
        self._namespaces[ns.name] = ns
        self._ns_by_prefix[ns.prefix] = ns

    def _load_cold_index(self) -> None:
        for fk, length in self._cold.scan():
            ns = self._ns_by_prefix.get(fk[: 1 + fk[0]])
            if ns is None:
                continue
            entry = ColdEntry(lmdb_cost(len(fk), length), ns.persistent, 0)
            self._cold_index[fk] = entry
            self._cold_used += entry.cost
            if not ns.persistent:
                self._cold_policy.insert(fk, self._parents.get(fk))

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
    ) -> Namespace:
        """Create a namespace, or return it if it exists with the same options.

        ``value_dtype``/``value_shape`` make every value of the namespace an array of exactly that kind
        (KV-cache namespaces use one block's layout); anything else is refused.
        """
        tenancy.owner(name)  # a name the store can hold: NAME, TENANT#NAME or TENANT!NAME
        if durability not in ("cache", "persistent"):
            raise InvalidNamespaceError(f"durability is 'cache' or 'persistent', not {durability!r}")
        for codec in (warm_codec, cold_codec):
            try:
                codec_named(codec)
            except ValueError as exc:
                raise InvalidNamespaceError(str(exc)) from None
        shape = tuple(int(d) for d in value_shape) if value_shape is not None else None
        if (value_dtype is None) != (shape is None):
            raise InvalidNamespaceError("a value schema needs both value_dtype and value_shape")
        if value_dtype is not None:
            try:
                check_array_meta(RecordMeta(RAW.id, _nbytes(value_dtype, shape), value_dtype, shape))
            except (InvalidValueError, TypeError) as exc:
                raise InvalidNamespaceError(f"bad value schema: {exc}") from None
        ns = Namespace(name, durability, warm_codec, cold_codec, value_dtype, shape)
        with self._lock:
            self._check_open()
            old = self._namespaces.get(name)
            if old is not None:
                if old != ns:
                    raise InvalidNamespaceError(f"namespace {name!r} exists with options {old.options()}")
                return old
            self._cold.put_meta(b"ns:" + name.encode(), json.dumps(ns.options()).encode())
            self._register(ns)
            return ns

    def namespaces(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {n: ns.options() for n, ns in self._namespaces.items()}

    def _ns(self, name: str) -> Namespace:
        ns = self._namespaces.get(name) if isinstance(name, str) else None
        if ns is None:
            raise UnknownNamespaceError(f"unknown namespace {name!r}; create it with create_namespace()")
        return ns

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
        namespace = self._ns(ns)
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        if parents is not None and len(parents) != len(pairs):
            raise InvalidValueError(f"{len(parents)} parents given for {len(pairs)} values")
        prepared = []
        for key, value in pairs:
            fk = namespace.prefix + _check_key(key)
            raw, dtype, shape = value_to_raw(value)
            namespace.check_value(dtype, shape)
            meta = RecordMeta(RAW.id, len(raw), dtype, shape)
            prepared.append((fk, raw, meta))
        parent_fks = [
            namespace.prefix + _check_key(p) if p else None for p in (parents or [None] * len(pairs))
        ]
        waits: list[tuple[bytes, Future[bool]]] = []
        for (fk, raw, meta), parent in zip(prepared, parent_fks, strict=True):
            if namespace.persistent:
                waits.append((fk, self._put_persistent(namespace, fk, raw, meta, parent)))
            else:
                fut = self._put_cache(namespace, fk, raw, meta, parent)
                if fut is not None:
                    waits.append((fk, fut))
        self._wait(waits, persistent=namespace.persistent)

    def get(self, key: bytes, *, ns: str = "default", promote: bool = True) -> Value | None:
        """The value stored under key, or None. ``promote=False`` leaves lower-tier hits where they are."""
        namespace = self._ns(ns)
        return self._get(namespace, namespace.prefix + _check_key(key), promote)

    def get_many(
        self, keys: Iterable[bytes], *, ns: str = "default", promote: bool = True
    ) -> list[Value | None]:
        namespace = self._ns(ns)
        return [self._get(namespace, namespace.prefix + _check_key(k), promote) for k in keys]

    def keys(self, *, ns: str = "default", prefix: bytes = b"") -> list[bytes]:
        """Every key of a namespace that starts with ``prefix``, sorted (reads no values)."""
        namespace = self._ns(ns)
        start = namespace.prefix + prefix
        cut = len(namespace.prefix)
        with self._lock:
            self._check_open()
            found = {
                fk
                for index in (self._hot_index, self._warm_index, self._cold_index)
                for fk in index
                if fk.startswith(start)
            }
        return sorted(fk[cut:] for fk in found)

    def contains(self, key: bytes, *, ns: str = "default") -> bool:
        namespace = self._ns(ns)
        fk = namespace.prefix + _check_key(key)
        with self._lock:
            self._check_open()
            return fk in self._hot_index or fk in self._warm_index or fk in self._cold_index

    def delete(self, key: bytes, *, ns: str = "default") -> bool:
        """Remove key from every tier; True if it was there. Returns after the removal is committed."""
        namespace = self._ns(ns)
        fk = namespace.prefix + _check_key(key)
        with self._lock:
            self._check_open()
            self._reconcile()
            existed = self._drop_upper(fk)
            fut = self._drop_cold(fk, durable=namespace.persistent)
            self._parents.pop(fk, None)
            existed = existed or fut is not None
            if fut is None and namespace.persistent:
                # The file may hold a value the index dropped (a put that failed after its commit):
                # delete it there too, or it would come back at the next open.
                fut = self._cold.submit_delete(fk, durable=True)
            self._pinned.discard(fk)
        if fut is not None:
            self._wait([(fk, fut)], persistent=namespace.persistent)
        return existed

    def tiers_of(
        self, keys: Iterable[bytes], *, ns: str = "default", lookahead: bool = False
    ) -> list[str | None]:
        """The highest tier holding each key ("hot", "warm", "cold"), or None; reads nothing.

        With ``lookahead``, the keys of the leading run (a cached prefix) that sit in warm or cold are
        promoted in the background, ahead of the get that usually follows a lookup.
        """
        keys = list(keys)
        namespace = self._ns(ns)
        fks = [namespace.prefix + _check_key(k) for k in keys]
        with self._lock:
            self._check_open()
            tiers = [
                "hot"
                if fk in self._hot_index
                else "warm"
                if fk in self._warm_index
                else "cold"
                if fk in self._cold_index
                else None
                for fk in fks
            ]
        if lookahead:
            lead = next((i for i, t in enumerate(tiers) if t is None), len(tiers))
            below = [k for k, t in zip(keys[:lead], tiers[:lead], strict=True) if t in ("warm", "cold")]
            if below:
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
        namespace = self._ns(ns)
        fks = [namespace.prefix + _check_key(k) for k in keys]
        with self._lock:
            self._check_open()
            self._bump("prefetch_issued", len(fks))
        return self._prefetcher.submit(fks, mode, timeout)

    def hint(self, *, ns: str = "default", prefix: bytes = b"", limit: int = 4096) -> PrefetchTask:
        """The namespace (or its keys starting with ``prefix``) is about to be used: promote, best effort."""
        namespace = self._ns(ns)
        start = namespace.prefix + prefix
        with self._lock:
            self._check_open()
            fks = [
                fk for index in (self._warm_index, self._cold_index) for fk in index if fk.startswith(start)
            ]
        return self._prefetcher.submit(fks[:limit], "best_effort")

    def _prefetch_one(self, fk: bytes) -> bool:
        """Worker side: bring one key into hot; True if this call moved it there."""
        ns = self._ns_by_prefix.get(fk[: 1 + fk[0]])
        with self._lock:
            if self._closed or ns is None or fk in self._hot_index:
                return False
        self._get(ns, fk, promote=True, count=False)
        with self._lock:
            if fk in self._hot_index:
                self._prefetched.add(fk)
                return True
            return False

    def demote(self, keys: Iterable[bytes], *, ns: str = "default") -> int:
        """Move keys out of the hot tier now (to warm, or just drop a clean copy); returns how many moved."""
        namespace = self._ns(ns)
        moved = 0
        with self._lock:
            self._check_open()
            for key in keys:
                fk = namespace.prefix + _check_key(key)
                if fk in self._hot_index and fk not in self._pinned and self._demote_hot(fk):
                    moved += 1
        return moved

    def delete_namespace(self, name: str) -> int:
        """Remove a namespace and every record in it; returns how many records were removed."""
        namespace = self._ns(name)
        who = tenancy.owner(name)
        if who.name == "default" and not who.internal:
            raise InvalidNamespaceError("a tenant's default namespace cannot be deleted")
        prefix = namespace.prefix
        futures: list[tuple[bytes, Future[bool]]] = []
        with self._lock:
            self._check_open()
            self._reconcile()
            keys = {
                fk
                for index in (self._hot_index, self._warm_index, self._cold_index)
                for fk in index
                if fk.startswith(prefix)
            }
            for token in [t for t, r in self._reservations.items() if r.fk.startswith(prefix)]:
                self._cancel_reservation(token)  # a commit after this would index a key of no namespace
            for fk in keys:
                self._drop_upper(fk)
                self._parents.pop(fk, None)
                fut = self._drop_cold(fk, durable=namespace.persistent)
                if fut is not None:
                    futures.append((fk, fut))
                self._pinned.discard(fk)
            del self._namespaces[name]
            del self._ns_by_prefix[prefix]
            futures.append((b"", self._cold.submit_meta_delete(b"ns:" + name.encode())))
        self._wait(futures, persistent=True)
        return len(keys)

    def pin(self, key: bytes, *, ns: str = "default") -> bool:
        """Keep key from being evicted or demoted until unpin; False if it is not stored."""
        namespace = self._ns(ns)
        fk = namespace.prefix + _check_key(key)
        with self._lock:
            if fk in self._hot_index or fk in self._warm_index or fk in self._cold_index:
                self._pinned.add(fk)
                return True
            return False

    def unpin(self, key: bytes, *, ns: str = "default") -> bool:
        namespace = self._ns(ns)
        fk = namespace.prefix + _check_key(key)
        with self._lock:
            if fk in self._pinned:
                self._pinned.discard(fk)
                return True
            return False

    def flush(self) -> None:
        """Wait for background compression and queued cold writes to finish."""
        while True:
            with self._lock:
                if not self._compact_queue and not self._compacting:
                    break
            time.sleep(0.001)
        self._cold.flush()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._reconcile()
            hot_raw = sum(e.meta.raw_len for e in self._hot_index.values())
            warm_raw = sum(e.meta.raw_len for e in self._warm_index.values())
            tiers: dict[str, Any] = {}
            for name, items, used, capacity, raw in (
                ("hot", len(self._hot_index), self._hot.used, self._hot.capacity, hot_raw),
                ("warm", len(self._warm_index), self._warm_used, self._warm_capacity, warm_raw),
                ("cold", len(self._cold_index), self._cold_used, self._cold_budget, None),
            ):
                s = self._stats[name]
                tiers[name] = {
                    "items": items,
                    "bytes": used,
                    "capacity_bytes": capacity,
                    "hits": s.hits,
                    "misses": s.misses,
                    "demotions": s.demotions,
                    "evictions": s.evictions,
                    "promotions": s.promotions,
                    "checksum_failures": s.checksum_failures,
                    "failed_demotions": s.failed_demotions,
                    "compression_ratio": (raw / used) if raw is not None and used and name != "hot" else None,
                    "map_bytes": self._cold.map_size if name == "cold" else 0,
                    **s.extra,
                }
            tiers["hot"]["compression_ratio"] = 1.0 if self._hot_index else None  # stored uncompressed
            tiers["cold"]["compression_ratio"] = (
                self._stats["cold"].raw_bytes / self._cold.bytes_written if self._cold.bytes_written else None
            )
            tiers["cold"]["bytes_written"] = self._cold.bytes_written
            tiers["cold"]["commits"] = self._cold.commits
            tiers["cold"]["map_bytes"] = self._cold.map_size
            tiers["cold"]["reader_slots"] = self._cold.reader_slots()
            return {
                **tiers,
                "namespaces": len(self._namespaces),
                "pinned": len(self._pinned),
                "policy": self._policy_name,
                "tenants": {  # usage of every tenant holding records or with a quota, next to its limits
                    tenant: self.tenant_usage(tenant)
                    for tenant in sorted(self._usage.tenants() | set(self._quotas))
                },
                "hot_segment": self._hot.name,
                "path": self.path,
            }

    def tenant_usage(self, tenant: str) -> dict[str, Any]:
        """One tenant's bytes and records per tier, with its quota (None if it has none)."""
        quota = self._quotas.get(tenant)
        return {
            **{f"{tier}_bytes": self._usage.bytes[tier][tenant] for tier in ("hot", "warm", "cold")},
            **{f"{tier}_items": self._usage.items[tier][tenant] for tier in ("hot", "warm", "cold")},
            "records": self._usage.records[tenant],
            "quota": dataclasses.asdict(quota) if quota is not None else None,
        }

    def close(self) -> None:
        """Write hot and warm contents down to cold (as far as its budget allows) and release everything."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._compact_cond.notify_all()
        self._prefetcher.close()
        if self._compactor is not None:
            self._compactor.join()
        with self._lock:
            self._reconcile()
            # Newest first, so that what does not fit in cold is the least recently used.
            for fk in reversed(self._hot_policy.ordered()):
                entry = self._hot_index[fk]  # type: ignore[index]
                if not entry.clean:
                    record = bytes(self._hot.record(entry))
                    self._write_down(fk, record, entry.meta, compressed=False, tier="hot")  # type: ignore[arg-type]
            for fk in reversed(self._warm_policy.ordered()):
                w = self._warm_index.get(fk)  # type: ignore[call-overload]
                if w is not None and not w.clean:
                    self._write_down(fk, w.record, w.meta, compressed=w.compressed, tier="warm")  # type: ignore[arg-type]
        self._cold.flush()
        self._cold.close()
        self._hot.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._owner_file)
        fcntl.flock(self._lockfile, fcntl.LOCK_UN)
        self._lockfile.close()

    def __enter__(self) -> TieredStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- the local path: clients on this host copy straight out of (and into) the arena ----------

    def locate_many(self, keys: Iterable[bytes], *, ns: str = "default") -> list[HotLocation | Remote | None]:
        """Where each key's record sits in the hot arena, promoting lower-tier hits into it first.

        ``None`` is a miss; ``REMOTE`` a value that cannot be placed in the arena (too large, or every
        slot pinned): fetch it with ``get``. A reader must check the slot's generation after copying.
        """
        namespace = self._ns(ns)
        out: list[HotLocation | Remote | None] = []
        for key in keys:
            fk = namespace.prefix + _check_key(key)
            loc = self._locate(fk)
            if loc is None:
                if self._get(namespace, fk, promote=True) is None:
                    out.append(None)
                    continue
                loc = self._locate(fk)
            out.append(REMOTE if loc is None else loc)
        return out

    def _locate(self, fk: bytes) -> HotLocation | None:
        with self._lock:
            self._check_open()
            entry = self._hot_index.get(fk)
            if entry is None:
                return None
            self._hot_policy.access(fk)
            self._stats["hot"].hits += 1
            header_len = entry.length - entry.meta.raw_len
            return HotLocation(
                entry.slot, entry.offset, entry.length, header_len, self._hot.generation(entry.slot)
            )

    def reserve_put(
        self,
        key: bytes,
        nbytes: int,
        *,
        ns: str = "default",
        dtype: str | None = None,
        shape: tuple[int, ...] | None = None,
        lease: float = 30.0,
        parent: bytes | None = None,
        owner: str = "",
    ) -> Reservation | None:
        """Allocate arena space for a value another process on this host will write in place.

        The value becomes visible only at ``commit_put``; a reservation not committed within ``lease``
        seconds is reclaimed. None when the arena cannot take it or the namespace is persistent (use ``put``).
        Only ``owner`` (the server passes the caller's identity) may commit or abort it.
        """
        namespace = self._ns(ns)
        fk = namespace.prefix + _check_key(key)
        parent_fk = namespace.prefix + _check_key(parent) if parent else None
        if not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidValueError("the reserved size is a non-negative int")
        meta = RecordMeta(RAW.id, nbytes, dtype, tuple(shape) if shape is not None else None)
        if (dtype is None) != (shape is None):
            raise InvalidValueError("an array needs both dtype and shape")
        namespace.check_value(meta.dtype, meta.shape)
        check_array_meta(meta)
        header_len = len(pack_header(meta, b""))  # the header's size does not depend on the payload
        if namespace.persistent or header_len + nbytes > self._hot_max_item():
            return None  # persistent data goes through put(): it is acknowledged after a synced commit
        with self._lock:
            self._check_open()
            self._check_live(namespace)
            self._reap_reservations()
            self._check_records(fk)
            got = self._in_hot_room(fk, header_len + nbytes, lambda: self._hot.reserve(header_len + nbytes))
            if got is None:
                return None
            slot, offset, alloc = got
            token = secrets.randbits(64)  # unguessable: a token names the reservation, never a count
            while not token or token in self._reservations:
                token = secrets.randbits(64)
            r = Reservation(
                token, fk, slot, offset, alloc, header_len, meta, time.monotonic() + lease, parent_fk, owner
            )
            self._reservations[r.token] = r
            self._account_reservation(r, held=True)
            return r

    def _account_reservation(self, r: Reservation, *, held: bool) -> None:
        """Reserved arena bytes count toward the tenant's hot bytes (and record limit) from the
        reservation on, so uncommitted reservations cannot take more of the arena than its quota."""
        change = self._usage.added if held else self._usage.removed
        change("hot", self._tenant_of(r.fk), r.fk, r.header_len + r.meta.raw_len, item=False)

    def commit_put(self, token: int, checksum: int | None = None, *, owner: str = "") -> None:
        """Publish one reserved value (see ``commit_puts``)."""
        self.commit_puts([token], None if checksum is None else [checksum], owner=owner)

    def commit_puts(
        self, tokens: Sequence[int], checksums: Sequence[int] | None = None, *, owner: str = ""
    ) -> None:
        """Publish reserved values, all or none: checksum the bytes the writer left in the arena, index them.

        Every token must be open and made by ``owner`` (``UnknownReservationError`` otherwise). With
        ``checksums`` (xxh3-64, seed 0, of each value as its writer wrote it), a value whose arena bytes
        differ is refused (``ReservationMismatchError``) and its reservation given back, so a commit
        never publishes bytes its writer did not write (what the space held before, another record's).
        """
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise InvalidValueError("a reservation token is named twice in one commit")
        if checksums is not None and len(checksums) != len(tokens):
            raise InvalidValueError(f"{len(checksums)} checksums for {len(tokens)} reservations")
        stale: list[tuple[bytes, Future[bool]]] = []
        with self._lock:
            self._check_open()
            self._reap_reservations()
            found = [self._reservations.get(t) for t in tokens]
            for t, r in zip(tokens, found, strict=True):
                if r is None or r.owner != owner:
                    raise UnknownReservationError(
                        f"no open reservation {t} of this caller (expired, committed, aborted or never made)"
                    )
            views = [self._hot.view[r.payload_offset : r.payload_offset + r.meta.raw_len] for r in found]  # type: ignore[union-attr]
            for i, (r, payload) in enumerate(zip(found, views, strict=True)):
                assert r is not None
                if checksums is not None and xxhash.xxh3_64_intdigest(payload) != checksums[i]:
                    self._cancel_reservation(r.token)
                    raise ReservationMismatchError(
                        f"reservation {r.token}: the arena does not hold the bytes of the given checksum "
                        "(written incompletely or not at all); the reservation is given back"
                    )
            for r, payload in zip(found, views, strict=True):
                assert r is not None
                del self._reservations[r.token]
                self._account_reservation(r, held=False)  # the index counts it from here
                header = pack_header(r.meta, payload)
                self._drop_upper(r.fk)
                fut = self._drop_cold(r.fk, durable=False)
                if fut is not None:
                    stale.append((r.fk, fut))
                entry = self._hot.publish_reserved(
                    r.slot, r.offset, r.alloc, header, r.header_len + r.meta.raw_len, r.meta, clean=False
                )
                self._hot_index[r.fk] = entry
                self._set_parent(r.fk, r.parent)
                self._hot_policy.insert(r.fk, r.parent)
        if stale:
            self._wait(stale, persistent=False)

    def abort_put(self, token: int, *, owner: str = "") -> bool:
        """Give a reservation back unused; False if ``owner`` holds no open reservation ``token``."""
        with self._lock:
            r = self._reservations.get(token)
            if r is None or r.owner != owner:
                return False
            return self._cancel_reservation(token)

    def _cancel_reservation(self, token: int) -> bool:
        r = self._reservations.pop(token, None)
        if r is not None:
            self._account_reservation(r, held=False)
            self._hot.cancel_reserved(r.slot, r.offset, r.alloc)
        return r is not None

    def _reap_reservations(self) -> None:
        now = time.monotonic()
        for token in [t for t, r in self._reservations.items() if r.expires < now]:
            self._cancel_reservation(token)
            self._bump("expired_reservations")

    def hot_segment(self) -> tuple[str, int]:
        """Path and size of the arena's shared-memory segment."""
        return self._hot.path, self._hot.size

    # ---- put paths ------------------------------------------------------------------------------

    def _put_cache(
        self, ns: Namespace, fk: bytes, raw: memoryview, meta: RecordMeta, parent: bytes | None
    ) -> Future[bool] | None:
        header = pack_header(meta, raw)
        record_len = len(header) + len(raw)
        with self._lock:
            self._check_open()
            self._check_live(ns)
            self._reconcile()
            self._check_records(fk)
            self._set_parent(fk, parent)
            self._admission.seen(fk)
            self._drop_upper(fk)
            stale = self._drop_cold(fk, durable=False)  # an older value must not outlive a crash
            if record_len <= self._hot_max_item() and self._store_hot(fk, header, raw, meta, clean=False):
                return stale
            if record_len <= self._warm_capacity and self._make_room_warm(fk, record_len):
                self._insert_warm(fk, WarmEntry(header + raw, meta, clean=False, compressed=False))
                return stale
            record = self._encode_for(ns.cold_codec, raw, meta)
            if self._make_room_cold(fk, len(record)):
                return self._submit_cold(fk, record, meta, persistent=False) or stale
            if self._over_quota("cold", fk, lmdb_cost(len(fk), len(record))):
                raise QuotaExceededError(
                    f"tenant {self._tenant_of(fk)!r} has no cold quota left for this value"
                )
        raise CapacityError(f"a value of {meta.raw_len} bytes fits in no tier (all full of pinned data?)")

    def _put_persistent(
        self, ns: Namespace, fk: bytes, raw: memoryview, meta: RecordMeta, parent: bytes | None
    ) -> Future[bool]:
        record = self._encode_for(ns.cold_codec, raw, meta)  # outside the lock: the slow part
        header = pack_header(meta, raw)
        with self._lock:
            self._check_open()
            self._check_live(ns)
            self._reconcile()
            self._check_records(fk)
            self._set_parent(fk, parent)
            old = self._cold_index.get(fk)
            if old is not None:  # the overwrite replaces it in place
                self._cold_used -= old.cost
                del self._cold_index[fk]
            if not self._make_room_cold(fk, len(record)):
                if old is not None:
                    self._cold_index[fk] = old
                    self._cold_used += old.cost
                if self._over_quota("cold", fk, lmdb_cost(len(fk), len(record))):
                    raise QuotaExceededError(
                        f"tenant {self._tenant_of(fk)!r}: its cold quota cannot take {len(record)} more "
                        "bytes of persistent data; delete some of its records or raise the quota"
                    )
                raise PersistentFullError(
                    f"cold tier cannot take {len(record)} more bytes of persistent data "
                    f"(budget {self._cold_budget}, used {self._cold_used}); delete records or grow cold_bytes"
                )
            self._drop_upper(fk)
            fut = self._submit_cold(fk, record, meta, persistent=True)
            assert fut is not None
            if len(header) + len(raw) <= self._hot_max_item():
                self._store_hot(fk, header, raw, meta, clean=True)
            return fut

    def _wait(self, waits: list[tuple[bytes, Future[bool]]], *, persistent: bool) -> None:
        error: BaseException | None = None
        for _fk, fut in waits:
            try:
                fut.result()
            except MemstoreError as exc:
                error = error or exc
        if waits:
            with self._lock:
                self._reconcile()
        if error is not None and persistent:
            if isinstance(error, ColdFullError):
                raise PersistentFullError(str(error)) from error
            raise error

    def _encode_for(self, codec_name: str, raw: memoryview, meta: RecordMeta) -> bytes:
        codec: Codec = codec_named(codec_name)
        codec_id, payload = codec.encode(raw, meta)
        if len(payload) >= len(raw):
            # Incompressible (random bytes, or values too small for a frame): a codec's frame would
            # make the record larger than the value, and a warm record swapped in by the compactor
            # would push warm past its budget. Keep the value as it is.
            codec_id, payload = RAW.id, raw
        return encode_record(meta.with_codec(codec_id), payload)

    # ---- get path -------------------------------------------------------------------------------

    def _get(self, ns: Namespace, fk: bytes, promote: bool, count: bool = True) -> Value | None:
        with self._lock:
            self._check_open()
            self._reconcile()
            if count:
                self._admission.seen(fk)
                if fk in self._prefetched and fk in self._hot_index:
                    self._prefetched.discard(fk)
                    self._bump("prefetch_used")
            entry = self._hot_index.get(fk)
            copy: bytes | bytearray | None = None
            if entry is not None:
                # Copy under the lock (the slot cannot be reused meanwhile), verify after releasing it.
                try:
                    meta, payload, seed, digest = split_record(self._hot.record(entry))
                    copy = bytearray(payload) if meta.dtype is not None else bytes(payload)
                    self._hot_policy.access(fk)
                    self._stats["hot"].hits += 1
                except CorruptRecordError:
                    pass
        if entry is not None:
            try:
                if copy is None:
                    raise CorruptRecordError("bad header in the hot arena")
                verify_payload(copy, seed, digest)
                return raw_to_value(copy, meta)
            except CorruptRecordError:
                with self._lock:
                    self._stats["hot"].checksum_failures += 1
                    self._stats["hot"].hits -= copy is not None
                    if self._hot_index.get(fk) is entry:
                        self._drop_upper(fk)
                if not entry.clean:
                    return None
        with self._lock:
            self._stats["hot"].misses += 1
            warm = self._warm_index.get(fk)
            in_cold = fk in self._cold_index
        if warm is not None:
            try:
                meta, raw = self._decode(warm.record)
            except POISON:
                with self._lock:
                    self._stats["warm"].checksum_failures += 1
                    if self._warm_index.get(fk) is warm:
                        self._drop_upper(fk)
                if not warm.clean:
                    return None
            else:
                with self._lock:
                    self._stats["warm"].hits += 1
                    if self._warm_index.get(fk) is warm:
                        self._warm_policy.access(fk)
                        if promote and not self._closed:
                            self._promote(fk, raw, meta, clean=warm.clean, from_warm=True)
                return raw_to_value(raw, meta)
        else:
            with self._lock:
                self._stats["warm"].misses += 1
        if not in_cold:
            with self._lock:
                self._stats["cold"].misses += 1
            return None
        try:
            found = self._cold.read(fk, self._decode_owned)
        except POISON:
            with self._lock:
                self._stats["cold"].checksum_failures += 1
                fut = self._drop_cold(fk, durable=ns.persistent)  # quarantine: never served again
            if fut is not None:
                with contextlib.suppress(MemstoreError):
                    fut.result()
            return None
        with self._lock:
            if found is None:
                self._stats["cold"].misses += 1
                return None
            meta, raw = found
            self._stats["cold"].hits += 1
            if fk in self._cold_index and not ns.persistent:
                self._cold_policy.access(fk)
            if (
                promote
                and not self._closed
                and fk in self._cold_index
                and fk not in self._hot_index
                and fk not in self._warm_index
            ):
                self._promote(fk, raw, meta, clean=True, from_warm=False)
        return raw_to_value(raw, meta)

    @staticmethod
    def _decode(record: bytes | memoryview) -> tuple[RecordMeta, bytes | bytearray | memoryview]:
        meta, payload = parse_record(record)
        raw = decode_payload(payload, meta)
        return meta.with_codec(RAW.id), raw

    @classmethod
    def _decode_owned(cls, record: memoryview) -> tuple[RecordMeta, bytes | bytearray]:
        """Decode inside an LMDB read transaction: the result must not point into the map."""
        meta, payload, seed, digest = split_record(record)
        if meta.codec == RAW.id:  # copy first, then hash the copy while it is in cache
            copy = bytearray(payload) if meta.dtype is not None else bytes(payload)
            verify_payload(copy, seed, digest)
            return meta, copy
        verify_payload(payload, seed, digest)
        raw = decode_payload(payload, meta)
        return meta.with_codec(RAW.id), raw if not isinstance(raw, memoryview) else bytes(raw)

    def _promote(
        self,
        fk: bytes,
        raw: bytes | bytearray | memoryview,
        meta: RecordMeta,
        *,
        clean: bool,
        from_warm: bool,
    ) -> None:
        header = pack_header(meta, raw)
        if len(header) + len(raw) > self._hot_max_item():
            return
        source = "warm" if from_warm else "cold"
        if from_warm:
            # Take it out of warm first so making room in hot cannot demote into the entry we are moving.
            w = self._warm_index.pop(fk)
            self._warm_used -= len(w.record)
            self._warm_policy.remove(fk)
            if not self._store_hot(fk, header, memoryview(raw), meta, clean=clean):
                self._insert_warm(fk, w)  # no room in hot: put it back where it was
                return
        elif not self._store_hot(fk, header, memoryview(raw), meta, clean=clean):
            return
        self._stats[source].promotions += 1

    # ---- tier mechanics (callers hold _lock) -----------------------------------------------------

    def _hot_max_item(self) -> int:
        return self._hot.max_item() if self._hot_enabled else -1

    def _skip(self, key: Hashable) -> bool:
        return key in self._pinned

    def _store_hot(self, fk: bytes, header: bytes, raw: memoryview, meta: RecordMeta, *, clean: bool) -> bool:
        entry = self._in_hot_room(
            fk, len(header) + len(raw), lambda: self._hot.store(header, raw, meta, clean)
        )
        if entry is None:
            return False
        self._hot_index[fk] = entry
        self._hot_policy.insert(fk, self._parents.get(fk))
        return True

    def _in_hot_room(self, fk: bytes, nbytes: int, attempt: Callable[[], T | None]) -> T | None:
        """Run an arena allocation for fk, demoting hot victims until it succeeds or nothing can move."""
        if not self._within_quota("hot", fk, nbytes):
            return None
        skip = self._skip_for("hot", fk)
        while True:
            result = attempt()
            if result is not None:
                return result
            victim = self._hot_policy.victim(skip, fk)
            if victim is None or not self._demote_hot(victim):  # type: ignore[arg-type]
                return None

    def _demote_hot(self, fk: bytes) -> bool:
        entry = self._hot_index[fk]
        try:
            moved = self._move_hot_down(fk, entry)
        except POISON as exc:  # this record's fault: it leaves the tier, the caller's work goes on
            self._quarantine(fk, "hot", exc)
            return True
        if not moved:
            return False
        del self._hot_index[fk]
        self._hot_policy.evict(fk)
        if fk in self._prefetched:
            self._prefetched.discard(fk)
            self._bump("prefetch_wasted")
        self._hot.release(entry)
        self._stats["hot"].demotions += 1
        return True

    def _move_hot_down(self, fk: bytes, entry: HotEntry) -> bool:
        """Copy a dirty hot record to warm (or straight to cold); False if neither can take it."""
        if not entry.clean:
            length = entry.length
            if length > self._warm_capacity or not self._make_room_warm(fk, length):
                # Warm cannot take it: write it straight to cold, or keep it.
                ns = self._ns_by_prefix[fk[: 1 + fk[0]]]
                _, payload = parse_record(self._hot.record(entry))
                record = self._encode_for(ns.cold_codec, payload, entry.meta)
                if not self._make_room_cold(fk, len(record)):
                    self._stats["hot"].failed_demotions += 1
                    return False
                self._submit_cold(fk, record, entry.meta, persistent=False)
            else:
                record = bytes(self._hot.record(entry))
                split_record(record)  # a bad header stops here, not in warm
                self._insert_warm(fk, WarmEntry(record, entry.meta, clean=False, compressed=False))
        return True

    def _quarantine(self, fk: bytes, tier: str, exc: BaseException) -> None:
        """A record that failed its checks while being moved: removed from hot and warm (a clean cold
        copy, checked on its own read, stays), counted, logged, and never raised into the caller."""
        self._stats[tier].checksum_failures += isinstance(exc, CorruptRecordError)
        self._bump("quarantined", tier=tier)
        log.warning("record %r failed its checks in %s and was removed: %s", fk, tier, exc)
        entry = self._hot_index.get(fk) if tier == "hot" else self._warm_index.get(fk)
        self._drop_upper(fk)
        self._prefetched.discard(fk)
        if entry is not None and not entry.clean:  # no copy is left: the value leaves the store
            self._parents.pop(fk, None)
            self._pinned.discard(fk)

    def _insert_warm(self, fk: bytes, w: WarmEntry) -> None:
        self._warm_index[fk] = w
        self._warm_used += len(w.record)
        self._warm_policy.insert(fk, self._parents.get(fk))
        if not w.compressed and self._compactor is not None:
            self._compact_queue.append(fk)
            self._compact_cond.notify()

    def _make_room_warm(self, fk: bytes, nbytes: int) -> bool:
        if not self._within_quota("warm", fk, nbytes):
            return False
        skip = self._skip_for("warm", fk)
        while self._warm_used + nbytes > self._warm_capacity:
            victim = self._warm_policy.victim(skip, fk)
            if victim is None or not self._demote_warm(victim):  # type: ignore[arg-type]
                return False
        return True

    def _demote_warm(self, fk: bytes) -> bool:
        w = self._warm_index[fk]
        try:
            return self._move_warm_down(fk, w)
        except POISON as exc:
            self._quarantine(fk, "warm", exc)
            return True

    def _move_warm_down(self, fk: bytes, w: WarmEntry) -> bool:
        if not w.clean and not self._admission.admit(fk):
            self._bump("not_admitted", tier="warm")
            self._parents.pop(fk, None)  # the value leaves the store
        elif not w.clean:
            ns = self._ns_by_prefix[fk[: 1 + fk[0]]]
            record = w.record
            if not w.compressed or ns.warm_codec != ns.cold_codec:
                _, raw = self._decode(w.record)
                record = self._encode_for(ns.cold_codec, memoryview(raw), w.meta.with_codec(RAW.id))
            if not self._make_room_cold(fk, len(record)):
                self._stats["warm"].failed_demotions += 1
                return False
            self._submit_cold(fk, record, w.meta, persistent=False)
        del self._warm_index[fk]
        self._warm_used -= len(w.record)
        self._warm_policy.evict(fk)
        self._stats["warm"].demotions += 1
        return True

    def _make_room_cold(self, fk: bytes, record_len: int) -> bool:
        cost = lmdb_cost(len(fk), record_len)
        if not self._within_quota("cold", fk, cost):
            return False
        skip = self._skip_for("cold", fk)
        while self._cold_used + cost > self._cold_budget:
            victim = self._cold_policy.victim(skip, fk)
            if victim is None:
                return False
            self._evict_cold(victim)  # type: ignore[arg-type]
        return True

    def _set_parent(self, fk: bytes, parent: bytes | None) -> None:
        if parent is not None and parent != fk:
            self._parents[fk] = parent
        else:
            self._parents.pop(fk, None)

    def _evict_cold(self, fk: bytes) -> bool:
        self._cold_policy.evict(fk)
        self._drop_cold(fk, durable=False)
        self._parents.pop(fk, None)
        self._stats["cold"].evictions += 1
        return True

    # ---- quotas (see memstore.quota) ------------------------------------------------------------

    def _tenant_of(self, fk: bytes) -> str:
        prefix = fk[: 1 + fk[0]]
        tenant = self._tenant_by_prefix.get(prefix)
        if tenant is None:
            tenant = self._tenant_by_prefix[prefix] = tenancy.tenant_of(prefix[1:].decode())
        return tenant

    def _over_quota(self, tier: str, fk: bytes, nbytes: int) -> bool:
        quota = self._quotas.get(self._tenant_of(fk))
        limit = quota.limit(tier) if quota is not None else None
        return limit is not None and self._usage.bytes[tier][self._tenant_of(fk)] + nbytes > limit

    def _within_quota(self, tier: str, fk: bytes, nbytes: int) -> bool:
        """Make room for nbytes of fk's tenant under its own limit in tier, from its own records."""
        tenant = self._tenant_of(fk)
        quota = self._quotas.get(tenant)
        limit = quota.limit(tier) if quota is not None else None
        if limit is None:
            return True
        if nbytes > limit:
            return False
        policy = {"hot": self._hot_policy, "warm": self._warm_policy, "cold": self._cold_policy}[tier]
        move_out = {"hot": self._demote_hot, "warm": self._demote_warm, "cold": self._evict_cold}[tier]
        while self._usage.bytes[tier][tenant] + nbytes > limit:
            victim = policy.victim(lambda k: k == fk or k in self._pinned or self._tenant_of(k) != tenant, fk)  # type: ignore[arg-type]
            if victim is None or not move_out(victim):  # type: ignore[arg-type]
                return False
        return True

    def _skip_for(self, tier: str, fk: bytes) -> Callable[[Hashable], bool]:
        """Victims for fk's room: not pinned, and not from another tenant inside its reserved share."""
        if not any(q.reserved(tier) for q in self._quotas.values()):
            return self._skip
        owner = self._tenant_of(fk)

        def skip(key: Hashable) -> bool:
            if key in self._pinned:
                return True
            tenant = self._tenant_of(key)  # type: ignore[arg-type]
            quota = self._quotas.get(tenant)
            return (
                tenant != owner
                and quota is not None
                and self._usage.bytes[tier][tenant] <= quota.reserved(tier)
            )

        return skip

    def _check_records(self, fk: bytes) -> None:
        """A new key of a tenant at its record limit is refused before anything is written."""
        tenant = self._tenant_of(fk)
        quota = self._quotas.get(tenant)
        if quota is None or quota.records is None or self._usage.holds(fk):
            return
        if self._usage.records[tenant] >= quota.records:
            raise QuotaExceededError(
                f"tenant {tenant!r} holds {quota.records} records, its quota: delete some or raise it"
            )

    def _submit_cold(
        self, fk: bytes, record: bytes, meta: RecordMeta, *, persistent: bool
    ) -> Future[bool] | None:
        self._next_tag += 1
        entry = ColdEntry(lmdb_cost(len(fk), len(record)), persistent, self._next_tag)
        old = self._cold_index.get(fk)
        if old is not None:
            self._cold_used -= old.cost
        self._cold_index[fk] = entry
        self._cold_used += entry.cost
        if not persistent:
            self._cold_policy.insert(fk, self._parents.get(fk))
        self._stats["cold"].raw_bytes += meta.raw_len
        return self._cold.submit_put(fk, record, durable=persistent, tag=entry.tag)

    def _drop_upper(self, fk: bytes) -> bool:
        """Remove fk from hot and warm; True if it was in either."""
        found = False
        entry = self._hot_index.pop(fk, None)
        if entry is not None:
            self._hot_policy.remove(fk)
            self._hot.release(entry)
            found = True
        w = self._warm_index.pop(fk, None)
        if w is not None:
            self._warm_used -= len(w.record)
            self._warm_policy.remove(fk)
            found = True
        return found

    def _drop_cold(self, fk: bytes, *, durable: bool) -> Future[bool] | None:
        entry = self._cold_index.pop(fk, None)
        if entry is None:
            return None
        self._cold_used -= entry.cost
        self._cold_policy.remove(fk)
        # Copies above that relied on this one are the only ones left now.
        hot = self._hot_index.get(fk)
        if hot is not None:
            hot.clean = False
        w = self._warm_index.get(fk)
        if w is not None:
            w.clean = False
        return self._cold.submit_delete(fk, durable=durable)

    def _write_down(self, fk: bytes, record: bytes, meta: RecordMeta, *, compressed: bool, tier: str) -> None:
        """At close: move one dirty upper entry to cold if the budget allows (a bad one is dropped)."""
        ns = self._ns_by_prefix[fk[: 1 + fk[0]]]
        try:
            if not compressed or ns.warm_codec != ns.cold_codec:
                _, raw = self._decode(record)
                record = self._encode_for(ns.cold_codec, memoryview(raw), meta.with_codec(RAW.id))
            else:
                parse_record(record)
        except POISON as exc:
            self._quarantine(fk, tier, exc)
            return
        if self._make_room_cold(fk, len(record)):
            self._submit_cold(fk, record, meta, persistent=False)

    def _reconcile(self) -> None:
        """Apply the outcome of cold writes that failed after they were queued."""
        failures = self._cold.failures
        while failures:
            fk, value, tag, _err = failures.popleft()
            entry = self._cold_index.get(fk)
            if entry is None or entry.tag != tag:
                continue
            del self._cold_index[fk]
            self._cold_used -= entry.cost
            self._cold_policy.remove(fk)
            self._stats["cold"].failed_demotions += 1
            ns = self._ns_by_prefix.get(fk[: 1 + fk[0]])
            hot = self._hot_index.get(fk)
            if hot is not None and hot.clean:
                if ns is not None and ns.persistent:
                    self._drop_upper(fk)  # that persistent put failed: its value must not be served
                else:
                    hot.clean = False
            elif (
                value is not None
                and not entry.persistent
                and fk not in self._warm_index
                and fk not in self._hot_index
                and self._warm_used + len(value) <= self._warm_capacity
            ):
                meta, _ = parse_record(value)
                self._insert_warm(fk, WarmEntry(value, meta.with_codec(RAW.id), clean=False, compressed=True))

    def _bump(self, name: str, n: int = 1, *, tier: str = "hot") -> None:
        """Add to one of a tier's extra counters (reported by stats())."""
        extra = self._stats[tier].extra
        extra[name] = extra.get(name, 0) + n

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def _check_live(self, ns: Namespace) -> None:
        """Writers look their namespace up before taking the lock; one deleted meanwhile takes no write."""
        if self._ns_by_prefix.get(ns.prefix) is not ns:
            raise UnknownNamespaceError(f"namespace {ns.name!r} was deleted while this write waited")

    # ---- background compression ------------------------------------------------------------------

    def _compact_loop(self) -> None:
        while True:
            with self._lock:
                while not self._compact_queue and not self._closed:
                    self._compact_cond.wait()
                if self._closed:
                    return
                fk = self._compact_queue.popleft()
                w = self._warm_index.get(fk)
                if w is None or w.compressed:
                    continue
                ns = self._ns_by_prefix[fk[: 1 + fk[0]]]
                self._compacting += 1  # flush() waits for this one too
            record = None
            try:
                _, payload = parse_record(w.record)
                record = self._encode_for(ns.warm_codec, payload, w.meta)
            except POISON:
                pass  # left uncompressed: the reader or the demotion that finds it quarantines it
            finally:
                with self._lock:
                    self._compacting -= 1
                    if record is not None and self._warm_index.get(fk) is w:
                        self._warm_index[fk] = WarmEntry(record, w.meta, w.clean, compressed=True)
                        self._warm_used += len(record) - len(w.record)
