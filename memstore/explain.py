"""Why did it miss: what the store knows of a key (``memstore explain``, ``Client.explain``).

A key is in a tier, or the store says why it is not: it was never stored (as far as the store
remembers), evicted (from which tier, by which policy, how long ago), quarantined after failing its
checks, deleted, or its namespace was deleted. For a namespace whose identity is known (every KV
namespace records its ``KVIdentity``), a caller that gives its own identity also learns which fields
differ from the nearest namespace of its tenant: the usual reason a KV lookup misses everything.

Kept cheap: ``Removals`` is a bounded ring of the most recent removals (``CAPACITY`` keys, about
150 bytes each), not a log of everything; a key removed longer ago reads as never stored.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memstore import tenancy
from memstore.errors import InvalidValueError
from memstore.namespace import check_key, parse_identity

if TYPE_CHECKING:
    from memstore.store import TieredStore

CAPACITY = 1 << 16
PRESENT = ("hot", "warm", "cold", "pool")
REASONS = ("evicted", "quarantined", "deleted", "expired", "namespace_deleted")


@dataclass(frozen=True, slots=True)
class Removal:
    reason: str  # one of REASONS
    tier: str  # where the value was when it left ("" when it was in none, say a deleted namespace's)
    at: float  # time.time()
    policy: str = ""  # the eviction policy that chose it
    detail: str = ""


class Removals:
    """The most recent removals by full key, oldest forgotten first; namespaces deleted, by name."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[bytes, Removal] = OrderedDict()
        self._namespaces: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, fk: bytes, reason: str, tier: str, *, policy: str = "", detail: str = "") -> None:
        removal = Removal(reason, tier, time.time(), policy, detail)
        with self._lock:
            self._keys[fk] = removal
            self._keys.move_to_end(fk)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)

    def note_namespace(self, name: str) -> None:
        with self._lock:
            self._namespaces[name] = time.time()
            while len(self._namespaces) > 1024:
                self._namespaces.popitem(last=False)

    def of(self, fk: bytes) -> Removal | None:
        with self._lock:
            return self._keys.get(fk)

    def namespace_deleted(self, name: str) -> float | None:
        with self._lock:
            return self._namespaces.get(name)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class Explanation:
    """What the store knows of one key. ``state``: a tier (hot, warm, cold, pool) when it holds the key;
    else evicted, quarantined, deleted, expired, namespace_deleted, never_stored or no_namespace."""

    namespace: str
    key: bytes
    state: str
    tier: str = ""
    policy: str = ""
    seconds_ago: float | None = None
    detail: str = ""
    nearest_namespace: str = ""
    differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field: (asked, stored)

    @property
    def found(self) -> bool:
        return self.state in PRESENT

    def message(self) -> str:
        """One sentence a person reads."""
        ago = f" {self.seconds_ago:.1f} s ago" if self.seconds_ago is not None else ""
        ns = f"namespace {self.namespace!r}"
        text = {
            "never_stored": f"never stored in {ns} (or removed longer ago than the store remembers)",
            "no_namespace": f"{ns} does not exist",
            "namespace_deleted": f"{ns} was deleted{ago}",
            "evicted": f"evicted from {self.tier} by the {self.policy} policy{ago}",
            "quarantined": f"quarantined{ago}: it failed its checks in {self.tier} ({self.detail})",
            "deleted": f"deleted{ago} (it was in {self.tier or 'no tier'})",
            "expired": f"expired{ago}",
        }.get(self.state, f"in the {self.state} tier")
        if self.differences:
            fields = ", ".join(f"{k} {a!r} != {s!r}" for k, (a, s) in sorted(self.differences.items()))
            text += f"; the nearest namespace {self.nearest_namespace!r} has another identity: {fields}"
        return text

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "key"}
        out["key"] = self.key.hex()
        out["message"] = self.message()
        return out


def explain(store: TieredStore, key: bytes, *, ns: str = "default", identity: Any = None) -> Explanation:
    """What ``store`` knows of ``key`` in namespace ``ns`` (a qualified name, as the store has it).

    ``identity``: the caller's own identity (a ``KVIdentity``, a dict, or its canonical JSON); when the
    key is not found it is compared with the identities of the tenant's other namespaces."""
    check_key(key)
    asked = identity_dict(identity)
    view = tenancy.owner(ns).name
    options = store.namespaces()
    if ns not in options:
        deleted = store.removals.namespace_deleted(ns)
        state = "no_namespace" if deleted is None else "namespace_deleted"
        out = Explanation(view, key, state, seconds_ago=None if deleted is None else time.time() - deleted)
        return _nearest(out, asked, ns, options)
    tier = store.tiers_of([key], ns=ns)[0]
    if tier is not None:
        return Explanation(view, key, tier, tier=tier)
    removal = store.removals.of(tenancy.key_prefix(ns) + key)
    if removal is None:
        out = Explanation(view, key, "never_stored")
    else:
        out = Explanation(
            view,
            key,
            removal.reason,
            tier=removal.tier,
            policy=removal.policy,
            seconds_ago=max(0.0, time.time() - removal.at),
            detail=removal.detail,
        )
    return _nearest(out, asked, ns, options)


def identity_dict(identity: Any) -> dict[str, Any] | None:
    if identity is None or identity == "":
        return None
    if isinstance(identity, dict):
        return identity
    if hasattr(identity, "canonical_json"):
        identity = identity.canonical_json()
    return parse_identity(identity, InvalidValueError)


def _nearest(out: Explanation, asked: dict[str, Any] | None, ns: str, options: dict[str, Any]) -> Explanation:
    """Fill in the tenant's namespace whose identity differs from ``asked`` in the fewest fields."""
    if asked is None:
        return out
    me = tenancy.owner(ns)
    best: tuple[int, str, dict[str, tuple[Any, Any]]] | None = None
    for name, opts in options.items():
        who = tenancy.owner(name)
        if name == ns or who.tenant != me.tenant or who.internal or not opts.get("identity"):
            continue
        stored = json.loads(opts["identity"])
        diff = {
            k: (asked.get(k), stored.get(k))
            for k in sorted(set(asked) | set(stored))
            if asked.get(k) != stored.get(k)
        }
        if diff and (best is None or (len(diff), name) < best[:2]):
            best = (len(diff), name, diff)
    if best is not None:
        out.nearest_namespace, out.differences = tenancy.owner(best[1]).name, best[2]
    return out
