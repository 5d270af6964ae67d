"""Per-tenant quotas: byte limits per tier, a record limit, and reserved shares.

A namespace belongs to the tenant its qualified name names (``memstore.tenancy``: the server qualifies
every name a caller gives with the tenant of the caller's credentials; agent memory is a tenant's own
internal namespace and counts toward its quota like any other). For each tenant with a quota:

- ``hot_bytes`` / ``warm_bytes`` / ``cold_bytes``: the most bytes its records take in that tier. Room
  for its new data is made from its own records first (demoted or, in cold, evicted); a persistent
  record over its cold limit is refused (``QuotaExceededError``, RESOURCE_EXHAUSTED over gRPC).
- ``records``: the most distinct keys it holds; a put of a new key beyond it is refused.
- ``reserved_<tier>_bytes``: while its records take no more than this in a tier, other tenants'
  pressure never moves them out of it; only its own puts do.

Quotas are a JSON file (``memstore serve --quotas FILE``)::

    {"alice": {"hot_bytes": "1GiB", "cold_bytes": "20GiB", "records": 100000, "reserved_hot_bytes": "256MiB"}}
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Generic, TypeVar

from memstore import tenancy
from memstore.errors import QuotaExceededError

TIERS = ("hot", "warm", "cold")
DEFAULT_TENANT = "default"

E = TypeVar("E")


@dataclass(frozen=True)
class Quota:
    hot_bytes: int | None = None
    warm_bytes: int | None = None
    cold_bytes: int | None = None
    records: int | None = None
    reserved_hot_bytes: int = 0
    reserved_warm_bytes: int = 0
    reserved_cold_bytes: int = 0

    def limit(self, tier: str) -> int | None:
        value: int | None = getattr(self, f"{tier}_bytes")
        return value

    def reserved(self, tier: str) -> int:
        value: int = getattr(self, f"reserved_{tier}_bytes")
        return value


def parse_quotas(spec: dict[str, Any], parse_size: Callable[[Any], int]) -> dict[str, Quota]:
    """``{tenant: {field: size or count}}`` -> quotas; unknown fields and bad values are refused."""
    names = {f.name for f in fields(Quota)}
    quotas = {}
    for tenant, entry in spec.items():
        if not isinstance(entry, dict) or not set(entry) <= names:
            raise ValueError(f"quota of {tenant!r}: an object with fields among {sorted(names)}")
        values = {k: (int(v) if k == "records" else parse_size(v)) for k, v in entry.items()}
        if any(v < 0 for v in values.values()):
            raise ValueError(f"quota of {tenant!r}: negative value")
        quotas[str(tenant)] = Quota(**values)
    return quotas


def load_quotas(path: str, parse_size: Callable[[Any], int]) -> dict[str, Quota]:
    with open(path) as f:
        spec = json.load(f)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a JSON object of tenant -> quota")
    return parse_quotas(spec, parse_size)


class Usage:
    """Bytes per tier and distinct records per tenant, kept up to date by ``AccountedIndex``."""

    def __init__(self, counted: set[str]) -> None:
        self.bytes: dict[str, Counter[str]] = {tier: Counter() for tier in TIERS}
        self.items: dict[str, Counter[str]] = {tier: Counter() for tier in TIERS}
        self.records: Counter[str] = Counter()
        self._counted = counted  # tenants whose records are counted (those with a quota)
        self._tiers_holding: Counter[bytes] = Counter()

    def added(self, tier: str, tenant: str, fk: bytes, nbytes: int, *, item: bool = True) -> None:
        self.bytes[tier][tenant] += nbytes
        self.items[tier][tenant] += item
        if tenant in self._counted:
            self._tiers_holding[fk] += 1
            if self._tiers_holding[fk] == 1:
                self.records[tenant] += 1

    def removed(self, tier: str, tenant: str, fk: bytes, nbytes: int, *, item: bool = True) -> None:
        self.bytes[tier][tenant] -= nbytes
        self.items[tier][tenant] -= item
        if tenant in self._counted:
            self._tiers_holding[fk] -= 1
            if self._tiers_holding[fk] <= 0:
                del self._tiers_holding[fk]
                self.records[tenant] -= 1

    def holds(self, fk: bytes) -> bool:
        return fk in self._tiers_holding

    def tenants(self) -> set[str]:
        """Tenants holding anything in some tier."""
        return {t for tier in TIERS for t, n in self.items[tier].items() if n > 0}


class AccountedIndex(dict[bytes, E], Generic[E]):
    """A tier's index (full key -> entry) that reports every entry added or removed to ``Usage``."""

    def __init__(
        self, tier: str, usage: Usage, tenant_of: Callable[[bytes], str], size_of: Callable[[E], int]
    ) -> None:
        super().__init__()
        self._tier, self._usage, self._tenant_of, self._size_of = tier, usage, tenant_of, size_of

    def __setitem__(self, fk: bytes, entry: E) -> None:
        if fk in self:
            del self[fk]
        super().__setitem__(fk, entry)
        self._usage.added(self._tier, self._tenant_of(fk), fk, self._size_of(entry))

    def __delitem__(self, fk: bytes) -> None:
        entry = super().pop(fk)
        self._usage.removed(self._tier, self._tenant_of(fk), fk, self._size_of(entry))

    def pop(self, fk: bytes, *default: Any) -> Any:
        if fk not in self:
            if default:
                return default[0]
            raise KeyError(fk)
        entry = self[fk]
        del self[fk]
        return entry

    def clear(self) -> None:
        for fk in list(self):
            del self[fk]


class QuotaGuard:
    """The store's quotas applied: whose a key is, whether a tier can take more of a tenant's bytes,
    and which victims another tenant's reserved share protects. Callers hold the store's lock."""

    def __init__(self, quotas: dict[str, Quota], usage: Usage) -> None:
        self.quotas = quotas
        self.usage = usage
        self._tenant_by_prefix: dict[bytes, str] = {}
        self._any_reserved = {tier: any(q.reserved(tier) for q in quotas.values()) for tier in TIERS}

    def tenant_of(self, fk: bytes) -> str:
        prefix = fk[: 1 + fk[0]]
        tenant = self._tenant_by_prefix.get(prefix)
        if tenant is None:
            tenant = self._tenant_by_prefix[prefix] = tenancy.tenant_of(prefix[1:].decode())
        return tenant

    def _limit(self, tier: str, tenant: str) -> int | None:
        quota = self.quotas.get(tenant)
        return quota.limit(tier) if quota is not None else None

    def over(self, tier: str, fk: bytes, nbytes: int) -> bool:
        """True if fk's tenant cannot have ``nbytes`` more in ``tier`` even with its own records moved out."""
        tenant = self.tenant_of(fk)
        limit = self._limit(tier, tenant)
        return limit is not None and self.usage.bytes[tier][tenant] + nbytes > limit

    def make_room(
        self,
        tier: str,
        fk: bytes,
        nbytes: int,
        victim: Callable[[Callable[[Any], bool], bytes], bytes | None],
        move_out: Callable[[bytes], bool],
        pinned: set[bytes],
    ) -> bool:
        """Make room for nbytes of fk's tenant under its own limit in ``tier``, from its own records
        (``victim`` picks one, ``move_out`` moves it down); False if the limit cannot take them."""
        tenant = self.tenant_of(fk)
        limit = self._limit(tier, tenant)
        if limit is None:
            return True
        if nbytes > limit:
            return False
        while self.usage.bytes[tier][tenant] + nbytes > limit:
            found = victim(lambda k: k == fk or k in pinned or self.tenant_of(k) != tenant, fk)
            if found is None or not move_out(found):
                return False
        return True

    def skip_for(self, tier: str, fk: bytes, pinned: set[bytes]) -> Callable[[Any], bool]:
        """Victims for fk's room: not pinned, and not from another tenant inside its reserved share."""
        if not self._any_reserved[tier]:
            return pinned.__contains__
        owner = self.tenant_of(fk)

        def skip(key: Any) -> bool:
            if key in pinned:
                return True
            tenant = self.tenant_of(key)
            quota = self.quotas.get(tenant)
            return (
                tenant != owner
                and quota is not None
                and self.usage.bytes[tier][tenant] <= quota.reserved(tier)
            )

        return skip

    def check_records(self, fk: bytes) -> None:
        """A new key of a tenant at its record limit is refused before anything is written."""
        tenant = self.tenant_of(fk)
        quota = self.quotas.get(tenant)
        if quota is None or quota.records is None or self.usage.holds(fk):
            return
        if self.usage.records[tenant] >= quota.records:
            raise QuotaExceededError(
                f"tenant {tenant!r} holds {quota.records} records, its quota: delete some or raise it"
            )

    def report(self) -> dict[str, dict[str, Any]]:
        """Usage of every tenant holding records or with a quota, next to its limits."""
        return {tenant: self.usage_of(tenant) for tenant in sorted(self.usage.tenants() | set(self.quotas))}

    def usage_of(self, tenant: str) -> dict[str, Any]:
        """One tenant's bytes and records per tier, with its quota (None if it has none)."""
        quota = self.quotas.get(tenant)
        return {
            **{f"{tier}_bytes": self.usage.bytes[tier][tenant] for tier in TIERS},
            **{f"{tier}_items": self.usage.items[tier][tenant] for tier in TIERS},
            "records": self.usage.records[tenant],
            "quota": asdict(quota) if quota is not None else None,
        }
