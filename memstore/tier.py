"""The seam every tier implements.

A ``Tier`` is an index (full key -> entry; each entry's size is reported to the tenants' usage, see
``memstore.quota``), an eviction policy ranking its keys, a budget and its counters. It knows nothing of
the other tiers: where a record is placed, what happens to a victim and when a hit moves up is decided
by ``memstore.movement``. The tiers are ``HotTier`` (``memstore.hot``: the shared-memory arena),
``WarmTier`` (``memstore.warm``: compressed records in memory) and ``ColdIndex`` (``memstore.cold``:
what the LMDB file holds).

Not thread-safe: callers hold the store's lock.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from memstore.policy import EvictionPolicy
from memstore.quota import AccountedIndex, Usage
from memstore.retention import Retention

E = TypeVar("E")

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

    def bump(self, name: str, n: int = 1) -> None:
        """Add to one of the tier's extra counters (reported by stats() under ``name``)."""
        self.extra[name] = self.extra.get(name, 0) + n


class Tier(Generic[E]):
    """One tier's index, policy, budget and counters."""

    def __init__(
        self,
        name: str,
        capacity: int,
        policy: EvictionPolicy,
        usage: Usage,
        tenant_of: Callable[[bytes], str],
        size_of: Callable[[E], int],
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self.index: AccountedIndex[E] = AccountedIndex(name, usage, tenant_of, size_of)
        self.stats = TierStats()
        self._size_of = size_of
        self._used = 0
        self.retention: Retention | None = None  # callers' hints, consulted before the policy

    @property
    def used(self) -> int:
        """Bytes the tier's entries take of its budget."""
        return self._used

    def __contains__(self, fk: object) -> bool:
        return fk in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, fk: bytes) -> E | None:
        return self.index.get(fk)

    def keys_with(self, prefix: bytes) -> Iterator[bytes]:
        return (fk for fk in self.index if fk.startswith(prefix))

    def fits(self, nbytes: int) -> bool:
        return self._used + nbytes <= self.capacity

    def add(self, fk: bytes, entry: E, parent: bytes | None = None, *, ranked: bool = True) -> None:
        """Index an entry the caller made room for; ``ranked=False`` keeps it out of the eviction order."""
        self.index[fk] = entry
        self._used += self._size_of(entry)
        if ranked:
            self.policy.insert(fk, parent)

    def replace(self, fk: bytes, entry: E) -> None:
        """Swap an entry for another of the same key, keeping its place in the eviction order."""
        old = self.index[fk]
        self.index[fk] = entry
        self._used += self._size_of(entry) - self._size_of(old)

    def remove(self, fk: bytes) -> E | None:
        """Take an entry out (a delete, an overwrite, a move up); None if it was not here."""
        entry: E | None = self.index.pop(fk, None)
        if entry is not None:
            self._used -= self._size_of(entry)
            self.policy.remove(fk)
        return entry

    def evict(self, fk: bytes) -> E:
        """Take out the entry the policy chose as its victim (the policy learns from its evictions)."""
        entry: E = self.index.pop(fk)
        self._used -= self._size_of(entry)
        self.policy.evict(fk)
        return entry

    def victim(self, skip: Callable[[Hashable], bool], incoming: bytes) -> bytes | None:
        """The key to give up next for ``incoming``, passing over keys ``skip`` names: what the callers'
        hints give up first (``memstore.retention``), else the policy's choice."""
        if self.retention is not None:
            return self.retention.victim(self.policy.victim, skip, self.index, incoming)  # type: ignore[return-value]
        return self.policy.victim(skip, incoming)  # type: ignore[return-value]

    def access(self, fk: bytes) -> None:
        self.policy.access(fk)

    def report(self) -> dict[str, Any]:
        """The tier's part of ``stats()``: its size, budget and counters."""
        s = self.stats
        return {
            "items": len(self.index),
            "bytes": self.used,
            "capacity_bytes": self.capacity,
            **{name: getattr(s, name) for name in TIER_COUNTERS[3:]},
            "compression_ratio": self.compression_ratio(),
            "map_bytes": 0,
            **s.extra,
        }

    def compression_ratio(self) -> float | None:
        """Decoded bytes over stored bytes; None when nothing is stored or it is unknown."""
        return None
