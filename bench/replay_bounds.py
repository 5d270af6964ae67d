"""What a better policy could reach on a trace: two bounds between the online policies and OPT.

- **Oracle admission** (a replay): an online policy that is told, at each access, whether the block
  will ever be asked for again; blocks that will not are evicted before any other. Eviction order
  among the rest is the policy's own. The gap between a policy and its oracle-admission run is what
  a perfect guess of "does this block come back" is worth.
- **Class TTL** (a model, not a replay): requests are put in classes by what an online cache knows
  when a request is done (its conversation depth, its length, its output length); each class keeps
  its requests' blocks for the time that is best for it, with a fraction of a class admitted where
  that helps. The classes' return statistics are taken from the whole trace in advance, which no
  online policy has, so this overstates what such a policy can learn. Any policy that decides from a
  request's class and the time since its last use only chooses, per class, when to give the blocks up
  (or a random mix of such times), and capacity here is an average over the trace rather than a limit
  at every instant: within this model such policies do no better. A request's value is the
  tokens its conversation's next request shares with it, if that request comes within the time; its
  cost is its full blocks times the time they are held. The shared first block (held by every
  policy) is added as it is.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

from memstore.policy import EvictionPolicy, Skip
from memstore.replay import Request

# Times (s) a class may keep its requests' blocks; 0 means "not admitted".
TTL_GRID_S = (0, 5, 10, 15, 20, 30, 45, 60, 75, 90, 120, 150, 180, 240, 300, 420, 600, 900, 1200, 1800, 3600)


def future_accesses(trace: Sequence[Request]) -> Counter[int]:
    return Counter(h for r in trace for h in r.hash_ids)


class OracleAdmission:
    """Wraps a policy; keys with no access left (per ``remaining``, counted down on every insert and
    access) leave the wrapped policy and are the first victims. In a prefix tree a key with no access
    left has no child with one left either, so removing it never strands a live child."""

    def __init__(self, inner: EvictionPolicy, remaining: Counter[int]) -> None:
        self.inner = inner
        self.name = inner.name + "+oracle-admission"
        self._remaining = remaining
        self._dead: OrderedDict[Hashable, None] = OrderedDict()

    def _used(self, key: Hashable) -> bool:
        """Counts one access down; True when it was the key's last."""
        self._remaining[key] -= 1  # type: ignore[index]
        return self._remaining[key] <= 0  # type: ignore[index]

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        if self._used(key):
            self._dead[key] = None
        else:
            self.inner.insert(key, None if parent in self._dead else parent)

    def access(self, key: Hashable) -> None:
        if not self._used(key):
            self.inner.access(key)
        elif key not in self._dead:
            self.inner.remove(key)
            self._dead[key] = None

    def remove(self, key: Hashable) -> None:
        if key in self._dead:
            del self._dead[key]
        else:
            self.inner.remove(key)

    def evict(self, key: Hashable) -> None:
        if key in self._dead:
            del self._dead[key]
        else:
            self.inner.evict(key)

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        for key in self._dead:
            if not skip(key):
                return key
        return self.inner.victim(skip, incoming)

    def ordered(self) -> list[Hashable]:
        return [*self._dead, *self.inner.ordered()]

    def __len__(self) -> int:
        return len(self._dead) + len(self.inner)


def _log2_bucket(x: float, top: int) -> int:
    return min(int(math.log2(1 + max(x, 0))), top)


def request_classes(trace: Sequence[Request]) -> list[tuple[int, int, int]]:
    """Per request: (conversation depth up to 3, log2 of its blocks up to 7, log2 of its output / 3)."""
    seen: Counter[int] = Counter()
    out = []
    for r in trace:
        conversation = r.hash_ids[1] if len(r.hash_ids) > 1 else -1
        out.append(
            (
                min(seen[conversation], 3),
                _log2_bucket(len(r.hash_ids), 7),
                _log2_bucket(r.output_length, 12) // 3,
            )
        )
        seen[conversation] += 1
    return out


def class_ttl_bound(
    trace: Sequence[Request],
    classes: Sequence[Hashable],
    capacities: Sequence[int],
    block_tokens: int = 512,
) -> list[float]:
    """The model's best token prefix hit ratio at each capacity (in blocks); see the module doc."""
    n = len(trace)
    times = np.array([r.timestamp / 1000 for r in trace])
    gap = np.full(n, np.inf)
    value = np.zeros(n)
    last: dict[int, int] = {}
    for j, r in enumerate(trace):
        if len(r.hash_ids) < 2:
            continue
        i = last.get(r.hash_ids[1])
        if i is not None:
            shared = 0
            for a, b in zip(trace[i].hash_ids, r.hash_ids, strict=False):
                if a != b:
                    break
                shared += 1
            gap[i] = times[j] - times[i]
            value[i] = max(shared - 1, 0) * block_tokens  # the first block is counted apart
        last[r.hash_ids[1]] = j
    cost_blocks = np.array([max(len(r.hash_ids) - 1, 0) for r in trace], dtype=float)
    total = sum(r.input_length for r in trace)
    first_block = block_tokens * sum(1 for r in trace if r.hash_ids)
    span = max(times[-1] - times[0], 1.0)

    ttl = np.array(TTL_GRID_S, dtype=float)
    labels = np.array([hash(c) for c in classes])
    tables = []  # per class: value and block-seconds for each TTL
    for label in np.unique(labels):
        m = labels == label
        within = gap[m][None, :] < ttl[:, None]
        tables.append(
            (
                (value[m][None, :] * within).sum(axis=1),
                (cost_blocks[m][None, :] * np.minimum(gap[m][None, :], ttl[:, None])).sum(axis=1),
            )
        )
    # Lagrangian sweep: for a price per block-second, each class takes its best TTL. Between two
    # neighbouring solutions, admitting a fraction of the classes that change reaches every point on
    # the line between them, so the bound at a capacity is the interpolation.
    points = {(0.0, 0.0)}
    for price in np.logspace(-5, 5, 1500):
        v = c = 0.0
        for val, cost in tables:
            k = int(np.argmax(val - price * cost))
            v += val[k]
            c += cost[k]
        points.add((c / span, v))
    hull = sorted(points)
    occupancy = np.array([p[0] for p in hull])
    hits = np.maximum.accumulate(np.array([p[1] for p in hull]))
    return [float((first_block + np.interp(cap, occupancy, hits)) / total) for cap in capacities]


def conversation_stats(trace: Sequence[Request]) -> dict[str, object]:
    """What the trace offers a guess at insertion: conversations (requests sharing their second block),
    how many have one turn, and the share of first turns followed by another, by log2 of their blocks
    and by log2 of their output (bucket -> [first turns, share])."""
    turns: Counter[int] = Counter(r.hash_ids[1] for r in trace if len(r.hash_ids) > 1)
    seen: Counter[int] = Counter()
    by_length: dict[int, list[int]] = {}
    by_output: dict[int, list[int]] = {}
    for r in trace:
        if len(r.hash_ids) < 2:
            continue
        conversation = r.hash_ids[1]
        if not seen[conversation]:
            again = int(turns[conversation] > 1)
            for table, bucket in (
                (by_length, _log2_bucket(len(r.hash_ids), 7)),
                (by_output, _log2_bucket(r.output_length, 12)),
            ):
                counts = table.setdefault(bucket, [0, 0])
                counts[0] += 1
                counts[1] += again
        seen[conversation] += 1

    def shares(table: dict[int, list[int]]) -> dict[str, list[float]]:
        return {str(b): [n, round(k / n, 3)] for b, (n, k) in sorted(table.items())}

    uses = future_accesses(trace)
    return {
        "conversations": len(turns),
        "single_turn": sum(1 for n in turns.values() if n == 1),
        "blocks_reused": sum(1 for n in uses.values() if n > 1),
        "distinct_blocks": len(uses),
        "first_turn_followed_by_length": shares(by_length),
        "first_turn_followed_by_output": shares(by_output),
    }
