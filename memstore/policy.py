"""Eviction policies: the seam that owns order only.

A policy is told when a key is inserted (with its parent in a prefix chain, when known), accessed,
removed (deleted) or evicted (removed for space), and is asked for a victim. It never touches data;
the store (or the replay simulator) does the moving. Pinned keys are skipped through the ``skip``
predicate the caller passes in. Policies register in ``POLICIES`` by name.

- ``lru``: least recently used first.
- ``lfu``: least frequently used first, ties by recency.
- ``s3fifo``: S3-FIFO (Yang et al., SOSP'23): a small FIFO for new keys, a main FIFO with reinsertion,
  and a ghost list of recent small-queue evictions.
- ``arc``: ARC (Megiddo and Modha, FAST'03): recency and frequency lists sized by ghost hits.
- ``prefix-lru``, ``prefix-slru``, ``prefix-gd``: leaves of the prefix tree first
  (``memstore.prefix_policy``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol

from memstore.prefix_policy import PrefixGreedyDual, PrefixLRU, PrefixSLRU

Skip = Callable[[Hashable], bool]


class EvictionPolicy(Protocol):
    name: str

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None: ...

    def access(self, key: Hashable) -> None: ...

    def remove(self, key: Hashable) -> None:
        """The key is gone for a reason other than space (deleted, moved away)."""
        ...

    def evict(self, key: Hashable) -> None:
        """The key was evicted for space (ghost lists remember it)."""
        ...

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        """The key to evict next (still tracked until ``evict``), or None when every key is skipped.
        ``incoming`` is the key the room is for, when known (ARC's choice depends on it). ``skip`` may
        raise to end the walk: the policy's order then stays as it was (bar its own moves, such as
        S3-FIFO's promotions)."""
        ...

    def ordered(self) -> list[Hashable]:
        """Every tracked key, the next victim first (an approximation for non-LRU policies)."""
        ...

    def __len__(self) -> int: ...


class LRU:
    name = "lru"

    def __init__(self, capacity: int = 0) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def access(self, key: Hashable) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    evict = remove

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        for key in self._order:
            if not skip(key):
                return key
        return None

    def ordered(self) -> list[Hashable]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)


class LFU:
    name = "lfu"

    def __init__(self, capacity: int = 0) -> None:
        self._freq: dict[Hashable, int] = {}
        self._buckets: dict[int, OrderedDict[Hashable, None]] = {}

    def _place(self, key: Hashable, f: int) -> None:
        self._freq[key] = f
        self._buckets.setdefault(f, OrderedDict())[key] = None

    def _unplace(self, key: Hashable) -> int | None:
        f = self._freq.pop(key, None)
        if f is not None:
            bucket = self._buckets[f]
            del bucket[key]
            if not bucket:
                del self._buckets[f]
        return f

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        self._unplace(key)
        self._place(key, 1)

    def access(self, key: Hashable) -> None:
        f = self._unplace(key)
        if f is not None:
            self._place(key, f + 1)

    def remove(self, key: Hashable) -> None:
        self._unplace(key)

    evict = remove

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        for f in sorted(self._buckets):
            for key in self._buckets[f]:
                if not skip(key):
                    return key
        return None

    def ordered(self) -> list[Hashable]:
        return [k for f in sorted(self._buckets) for k in self._buckets[f]]

    def __len__(self) -> int:
        return len(self._freq)


def _first(queue: OrderedDict[Hashable, None], skip: Skip) -> Hashable | None:
    return next((k for k in queue if not skip(k)), None)


class S3FIFO:
    """S3-FIFO (Yang et al., SOSP'23) on this seam. Two choices differ from the paper's fixed-size
    queues, so the store can use it on byte budgets: the small queue's share (a tenth) is of the keys
    tracked now, and a key promoted from small to main starts main with its count reset."""

    name = "s3fifo"
    SMALL = 0.1

    def __init__(self, capacity: int = 0) -> None:
        self._small: OrderedDict[Hashable, None] = OrderedDict()
        self._main: OrderedDict[Hashable, None] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._freq: dict[Hashable, int] = {}

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        self.remove(key)
        self._freq[key] = 0
        if key in self._ghost:
            del self._ghost[key]
            self._main[key] = None
        else:
            self._small[key] = None

    def access(self, key: Hashable) -> None:
        if key in self._freq:
            self._freq[key] = min(self._freq[key] + 1, 3)

    def remove(self, key: Hashable) -> None:
        self._small.pop(key, None)
        self._main.pop(key, None)
        self._freq.pop(key, None)

    def evict(self, key: Hashable) -> None:
        if key in self._small:
            self._ghost[key] = None
            while len(self._ghost) > max(len(self._main), 1):
                self._ghost.popitem(last=False)
        self.remove(key)

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        # Bounded passes: promotions and reinsertions reorder queues, each key moves at most 4 times.
        for _ in range(4 * len(self._freq) + 1):
            total = len(self._small) + len(self._main)
            if not total:
                return None
            use_small = bool(self._small) and (len(self._small) >= self.SMALL * total or not self._main)
            # Skipped keys keep their places (moving them would reorder a queue for a caller's reasons).
            key = _first(self._small if use_small else self._main, skip)
            if key is None:
                use_small = not use_small
                key = _first(self._small if use_small else self._main, skip)
                if key is None:
                    return None
            if use_small:
                if self._freq[key] > 1:  # accessed while on probation: promote to main
                    del self._small[key]
                    self._main[key] = None
                    self._freq[key] = 0
                    continue
                return key
            if self._freq[key] > 0:  # second chance in main
                self._freq[key] -= 1
                self._main.move_to_end(key)
                continue
            return key
        return None

    def ordered(self) -> list[Hashable]:
        return list(self._small) + list(self._main)

    def __len__(self) -> int:
        return len(self._freq)


class ARC:
    """ARC as in Megiddo and Modha's Figure 4, on this seam: the cache asks for a victim (``REPLACE``)
    with the incoming key, evicts it, then inserts the key; the ghost-list trims of case IV happen in
    ``insert``, after the eviction, which leaves the same lists."""

    name = "arc"

    def __init__(self, capacity: int = 1 << 20) -> None:
        self.c = max(1, capacity)
        self.p = 0.0
        self.t1: OrderedDict[Hashable, None] = OrderedDict()
        self.t2: OrderedDict[Hashable, None] = OrderedDict()
        self.b1: OrderedDict[Hashable, None] = OrderedDict()
        self.b2: OrderedDict[Hashable, None] = OrderedDict()
        self._pending: tuple[Hashable, float] | None = None  # (incoming key, p adapted for it)

    def _adapted(self, key: Hashable) -> float:
        """p after a ghost hit on key (cases II and III), from the list sizes before any eviction."""
        if key in self.b1:
            return min(float(self.c), self.p + max(len(self.b2) / max(len(self.b1), 1), 1.0))
        if key in self.b2:
            return max(0.0, self.p - max(len(self.b1) / max(len(self.b2), 1), 1.0))
        return self.p

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        pending, self._pending = self._pending, None
        if key in self.b1 or key in self.b2:
            self.p = pending[1] if pending is not None and pending[0] == key else self._adapted(key)
            self.b1.pop(key, None)
            self.b2.pop(key, None)
            self.t2[key] = None
        else:
            self.t1.pop(key, None)
            self.t2.pop(key, None)
            self.t1[key] = None
        while len(self.t1) + len(self.b1) > self.c and self.b1:
            self.b1.popitem(last=False)
        while len(self.t1) + len(self.t2) + len(self.b1) + len(self.b2) > 2 * self.c and self.b2:
            self.b2.popitem(last=False)

    def access(self, key: Hashable) -> None:
        if key in self.t1:
            del self.t1[key]
            self.t2[key] = None
        elif key in self.t2:
            self.t2.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        self.t1.pop(key, None)
        self.t2.pop(key, None)

    def evict(self, key: Hashable) -> None:
        if key in self.t1:
            del self.t1[key]
            self.b1[key] = None
        elif key in self.t2:
            del self.t2[key]
            self.b2[key] = None

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        p = self.p
        if incoming is not None:  # adapt once per incoming key, from the sizes before its evictions
            if self._pending is None or self._pending[0] != incoming:
                self._pending = (incoming, self._adapted(incoming))
            p = self._pending[1]
        from_t1 = bool(self.t1) and (
            (incoming is not None and incoming in self.b2 and len(self.t1) == p)
            or len(self.t1) > p
            or not self.t2
        )
        for queue in (self.t1, self.t2) if from_t1 else (self.t2, self.t1):
            for key in queue:
                if not skip(key):
                    return key
        return None

    def ordered(self) -> list[Hashable]:
        return list(self.t1) + list(self.t2)

    def __len__(self) -> int:
        return len(self.t1) + len(self.t2)


POLICIES: dict[str, Callable[[int], EvictionPolicy]] = {
    "lru": LRU,
    "lfu": LFU,
    "s3fifo": S3FIFO,
    "arc": ARC,
    "prefix-lru": PrefixLRU,
    "prefix-slru": PrefixSLRU,
    "prefix-gd": PrefixGreedyDual,
}


def make_policy(name: str, capacity: int = 1 << 16) -> EvictionPolicy:
    """A policy by name; ``capacity`` (in entries) sizes ARC's lists."""
    try:
        return POLICIES[name](capacity)
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; known: {sorted(POLICIES)}") from None


__all__ = [
    "ARC",
    "LFU",
    "LRU",
    "POLICIES",
    "S3FIFO",
    "EvictionPolicy",
    "PrefixGreedyDual",
    "PrefixLRU",
    "PrefixSLRU",
    "Skip",
    "make_policy",
]
