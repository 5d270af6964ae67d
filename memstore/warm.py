"""The warm tier: records in process memory, compressed with their namespace's warm codec.

A record demoted from hot arrives raw and is compressed later by the compactor
(``memstore.compactor``), which swaps the compressed record in only if the raw one is still current.
Records are immutable ``bytes``, so readers check and decode them outside the store's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memstore.policy import EvictionPolicy
from memstore.quota import Usage
from memstore.record import RecordMeta
from memstore.tier import Tier


@dataclass(slots=True)
class WarmEntry:
    record: bytes  # header + payload, immutable
    meta: RecordMeta
    clean: bool  # an identical copy is in the cold tier: dropping this entry loses nothing
    compressed: bool


class WarmTier(Tier[WarmEntry]):
    """Compressed records in memory, within ``capacity`` bytes of records."""

    def __init__(
        self, capacity: int, policy: EvictionPolicy, usage: Usage, tenant_of: Callable[[bytes], str]
    ) -> None:
        super().__init__("warm", capacity, policy, usage, tenant_of, lambda w: len(w.record))

    def compression_ratio(self) -> float | None:
        return sum(w.meta.raw_len for w in self.index.values()) / self.used if self.used else None
