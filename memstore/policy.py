"""Eviction policies: the seam that owns order only.

A policy is told when a key is inserted, accessed and removed, and is asked for a victim. It never
touches data; the store does the moving. Pinned keys are skipped through the ``skip`` predicate the
store passes in. More policies register in ``POLICIES`` by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Protocol


class EvictionPolicy(Protocol):
    name: str

    def insert(self, key: Hashable) -> None: ...

    def access(self, key: Hashable) -> None: ...

    def remove(self, key: Hashable) -> None: ...

    def victim(self, skip: Callable[[Hashable], bool]) -> Hashable | None:
        """The key to evict next (still tracked until ``remove``), or None when every key is skipped."""
        ...

    def ordered(self) -> list[Hashable]:
        """Every tracked key, the next victim first."""
        ...

    def __len__(self) -> int: ...


class LRU:
    """Least recently used first."""

    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[Hashable, None] = OrderedDict()

    def insert(self, key: Hashable) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def access(self, key: Hashable) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        self._order.pop(key, None)

    def victim(self, skip: Callable[[Hashable], bool]) -> Hashable | None:
        for key in self._order:
            if not skip(key):
                return key
        return None

    def ordered(self) -> list[Hashable]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)


POLICIES: dict[str, Callable[[], EvictionPolicy]] = {"lru": LRU}


def make_policy(name: str) -> EvictionPolicy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; known: {sorted(POLICIES)}") from None
