"""Admission to the cold tier: which demoted cache blocks are worth an SSD write.

Most KV blocks are never read again (76% in the Mooncake conversation trace), so writing every
demoted block to SSD spends write bandwidth and endurance on data that never comes back. An admission
policy sees every access and decides, at demotion time, whether a block goes to cold or is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol


class Admission(Protocol):
    name: str

    def admit(self, key: Hashable) -> bool: ...

    def seen(self, key: Hashable) -> None: ...


class AdmitAll:
    name = "all"

    def admit(self, key: Hashable) -> bool:
        return True

    def seen(self, key: Hashable) -> None:
        return


class SeenTwice:
    """Write a block to cold only once it has been asked for twice (NVIDIA Dynamo KVBM's rule)."""

    name = "seen-twice"

    def __init__(self, memory: int = 1 << 20) -> None:
        self.memory = memory
        self._counts: dict[Hashable, int] = {}

    def seen(self, key: Hashable) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        if len(self._counts) > self.memory:  # forget the oldest half; a bounded doorkeeper
            for k in list(self._counts)[: self.memory // 2]:
                del self._counts[k]

    def admit(self, key: Hashable) -> bool:
        return self._counts.get(key, 0) >= 2


ADMISSIONS: dict[str, Callable[[], Admission]] = {"all": AdmitAll, "seen-twice": SeenTwice}


def make_admission(name: str) -> Admission:
    try:
        return ADMISSIONS[name]()
    except KeyError:
        raise ValueError(f"unknown cold admission policy {name!r}; known: {sorted(ADMISSIONS)}") from None
