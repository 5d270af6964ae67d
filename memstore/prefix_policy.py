"""The prefix-aware eviction policies: a key's parent in a prefix chain (a KV block's predecessor) is
known, and only leaves of the prefix tree are victims, so a chain loses its tail before its parents, as
radix-tree caches do. ``memstore.policy`` registers them by name beside the classic ones.

- ``prefix-lru``: least recently used leaf first.
- ``prefix-slru`` (this project's): probation and protected segments with a ghost list, leaves first.
- ``prefix-gd`` (this project's): probation for new blocks, GreedyDual by uses for reused ones, the
  split tuned by ARC's ghost feedback; leaves first.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

Skip = Callable[[Hashable], bool]


Entry = tuple[Any, int, Hashable]  # (rank, seq, key): a lazy heap's entry


# Live entries a walk takes off a heap before it sorts the rest instead: more than retention's SCAN,
# so a walk that retention bounds never sorts, while one over every key sorts once.
POPS = 1100


def _first_live(heap: list[Entry], skip: Skip, live: Callable[[Entry], bool]) -> Hashable | None:
    """The key of the first entry of ``heap`` that is ``live`` and that ``skip`` passes. Entries no
    longer live go; the others stay, even when ``skip`` raises. A long walk (``skip`` passing over
    more than ``POPS``) goes on over a sorted copy: one sort, not a pop and a push per entry."""
    held: list[Entry] = []
    found = None
    try:
        while heap and len(held) < POPS:
            entry = heapq.heappop(heap)
            if not live(entry):
                continue  # stale entry
            held.append(entry)  # stays tracked until evict/remove
            if not skip(entry[2]):
                found = entry[2]
                break
        else:
            found = next((e[2] for e in sorted(heap) if live(e) and not skip(e[2])), None)
    finally:  # skip may raise: what was taken out goes back
        for entry in held:
            heapq.heappush(heap, entry)
    return found


def _heap_of(entries: Iterable[Entry]) -> list[Entry]:
    heap = list(entries)
    heapq.heapify(heap)
    return heap


def _pushed(heap: list[Entry], entry: Entry, keys: int, live: Callable[[Entry], bool]) -> list[Entry]:
    """``heap`` with ``entry`` pushed, rebuilt without its stale entries once they outnumber ``keys``."""
    heapq.heappush(heap, entry)
    if len(heap) > 2 * keys + 64:
        heap = [e for e in heap if live(e)]
        heapq.heapify(heap)
    return heap


class _PrefixTree:
    """Leaves-only eviction over a prefix tree, by a score (lowest first); subclasses define the score."""

    name = ""

    def __init__(self, capacity: int = 0) -> None:
        self._parent: dict[Hashable, Hashable | None] = {}
        self._children: dict[Hashable, int] = {}
        self._score: dict[Hashable, float] = {}
        self._heap: list[Entry] = []  # leaves, by score
        # every key, by score: for when every leaf is skipped; built when a walk first needs it, so a
        # store whose leaves always serve pays nothing for it
        self._all: list[Entry] | None = None
        self._seq = itertools.count()
        self.clock = 0

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _entry(self, key: Hashable) -> Entry:
        return (self._score[key], next(self._seq), key)

    def _push(self, key: Hashable) -> None:
        if self._children.get(key, 0) == 0:
            heapq.heappush(self._heap, self._entry(key))

    def _rank(self, key: Hashable, hit: bool) -> None:
        self._score[key] = self.score(key, hit)
        if self._all is not None:
            self._all = _pushed(self._all, self._entry(key), len(self._score), self._scored)
        self._push(key)

    def _scored(self, entry: Entry) -> bool:
        return bool(self._score.get(entry[2]) == entry[0])

    def _leaf(self, entry: Entry) -> bool:
        return self._scored(entry) and not self._children.get(entry[2], 0)

    def score(self, key: Hashable, hit: bool) -> float:
        raise NotImplementedError

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        if key in self._score:
            self.remove(key)
        if parent is not None and parent not in self._score:
            parent = None  # the parent is not cached: this key starts its own chain here
        self._parent[key] = parent
        self._children.setdefault(key, 0)
        if parent is not None:
            self._children[parent] += 1
        self._rank(key, hit=False)

    def access(self, key: Hashable) -> None:
        if key in self._score:
            self._rank(key, hit=True)

    def remove(self, key: Hashable) -> None:
        if key not in self._score:
            return
        del self._score[key]
        parent = self._parent.pop(key, None)
        if self._children.pop(key, 0):  # removed with children in place: they start chains of their own
            for child, p in self._parent.items():
                if p == key:
                    self._parent[child] = None
        if parent is not None and parent in self._children:
            self._children[parent] -= 1
            self._push(parent)  # it may have become a leaf

    evict = remove

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        found = _first_live(self._heap, skip, self._leaf)
        if found is None:  # every leaf skipped, or parents that writers named in a cycle: any key will do
            if self._all is None:
                self._all = _heap_of(map(self._entry, self._score))
            found = _first_live(self._all, skip, self._scored)
        return found

    def is_leaf(self, key: Hashable) -> bool:
        return key in self._score and self._children.get(key, 0) == 0

    def parent(self, key: Hashable) -> Hashable | None:
        return self._parent.get(key)

    def ordered(self) -> list[Hashable]:
        return sorted(self._score, key=lambda k: self._score[k])

    def __len__(self) -> int:
        return len(self._score)


class PrefixLRU(_PrefixTree):
    """Leaves only, least recently used leaf first."""

    name = "prefix-lru"

    def score(self, key: Hashable, hit: bool) -> float:
        return float(self._tick())


class PrefixSLRU:
    """This project's policy for prefix caching: a segmented LRU with a ghost list, leaves first.

    What the traces teach: most blocks are never read again, and a block that came back once comes back
    far more often than a fresh one (in the Mooncake conversation trace, OPT's hits are mostly on blocks
    already reused). So new blocks enter a probation segment; a hit, or a re-insertion of a block that
    probation evicted recently (the ghost list remembers as many keys as the cache holds), moves it to a
    protected segment. Eviction takes from probation while protected holds at least half the keys, and
    in each segment prefers leaves of the prefix tree, so a chain loses its tail before its head (a
    prefix hit needs every block above it). Sizes are fractions of the keys tracked: nothing is fitted
    to one trace, and the store can use it on byte-budgeted tiers.

    Blocks are stored head first, so a segment's oldest keys are mostly parents: each segment's leaves
    are also kept in a lazy heap by their place in it (a stamp taken when a key enters the segment or
    moves to its end), so a victim is found without walking past the parents.
    """

    name = "prefix-slru"
    PROTECTED = 0.5

    def __init__(self, capacity: int = 0) -> None:
        self._probation: OrderedDict[Hashable, None] = OrderedDict()
        self._protected: OrderedDict[Hashable, None] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._parent: dict[Hashable, Hashable] = {}
        self._children: dict[Hashable, int] = {}
        self._stamp: dict[Hashable, int] = {}  # a key's place in its segment
        self._leaves: list[list[Entry]] = [[], []]  # probation's, protected's
        self._live = (self._leaf_of(self._probation), self._leaf_of(self._protected))
        self._stamps = itertools.count()

    def _tracked(self, key: Hashable) -> bool:
        return key in self._probation or key in self._protected

    def _placed(self, key: Hashable, protected: bool) -> None:
        """``key`` is now at the end of a segment: stamped, and pushed as a leaf if it is one."""
        (self._protected if protected else self._probation)[key] = None
        self._stamp[key] = next(self._stamps)
        if key not in self._children:
            self._push(key, protected)

    def _push(self, key: Hashable, protected: bool) -> None:
        """``key``, a leaf, into its segment's heap at its place there."""
        i, stamp = int(protected), self._stamp[key]
        self._leaves[i] = _pushed(self._leaves[i], (stamp, stamp, key), len(self), self._live[i])

    def _leaf_of(self, segment: OrderedDict[Hashable, None]) -> Callable[[Entry], bool]:
        """Whether an entry of ``segment``'s heap is a leaf still at that place in it."""

        def live(entry: Entry) -> bool:
            key = entry[2]
            return key in segment and self._stamp[key] == entry[0] and key not in self._children

        return live

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        self.remove(key)
        if parent is not None and self._tracked(parent):
            self._parent[key] = parent
            self._children[parent] = self._children.get(parent, 0) + 1
        if key in self._ghost:  # evicted from probation recently and wanted again: it is a reused block
            del self._ghost[key]
            self._placed(key, True)
        else:
            self._placed(key, False)

    def access(self, key: Hashable) -> None:
        if key in self._probation:
            del self._probation[key]
            self._placed(key, True)
        elif key in self._protected:
            del self._protected[key]
            self._placed(key, True)

    def remove(self, key: Hashable) -> None:
        self._probation.pop(key, None)
        self._protected.pop(key, None)
        self._stamp.pop(key, None)
        parent = self._parent.pop(key, None)
        if parent is not None:
            self._children[parent] -= 1
            if not self._children[parent]:
                del self._children[parent]
                if self._tracked(parent):  # it became a leaf
                    self._push(parent, parent in self._protected)

    def evict(self, key: Hashable) -> None:
        if key in self._probation:
            self._ghost[key] = None
            while len(self._ghost) > max(len(self), 1):
                self._ghost.popitem(last=False)
        self.remove(key)

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        if len(self._protected) > self.PROTECTED * len(self):
            segments = (self._protected, self._probation)
        else:
            segments = (self._probation, self._protected)
        for segment in segments:
            i = int(segment is self._protected)
            found = _first_live(self._leaves[i], skip, self._live[i])
            if found is not None:
                return found
        for segment in segments:  # every leaf skipped: a parent will do
            for key in segment:
                if not skip(key):
                    return key
        return None

    def ordered(self) -> list[Hashable]:
        return list(self._probation) + list(self._protected)

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)


class PrefixGreedyDual:
    """This project's second policy for prefix caching: a probation queue for new blocks, GreedyDual
    for reused ones, and ARC's feedback for the split between them; leaves of the prefix tree first.

    - A block never reused waits in probation, oldest evicted first.
    - A reused block (a hit, or a block that comes back after its eviction) is kept by GreedyDual
      (Cao and Irani, 1997; with frequency as in GDSF): its priority is ``L + log2(1 + uses)``, and
      ``L`` rises to the priority of each reused block evicted. Blocks used many times outlive those
      used once, and stale ones age out as ``L`` climbs. Use counts of evicted blocks are remembered
      for four times as many keys as are tracked (at most ``MAX_HISTORY``): conversations come back
      minutes later, long after a small cache has turned over.
    - The share of keys probation aims for adapts as ARC's target does: a block evicted from probation
      that comes back raises it, a reused block that comes back lowers it. Both ghost lists remember
      the same window of evictions (as many as the policy tracks keys), so neither signal drowns the
      other: in the conversation trace new blocks are evicted far more often than reused ones.
    Nothing is fitted to one trace: the sizes are fractions of the keys tracked, so the store can use
    it on byte-budgeted tiers.
    """

    name = "prefix-gd"
    MAX_HISTORY = 1 << 20  # evicted keys remembered at most, however many are tracked: bounded memory

    def __init__(self, capacity: int = 0, history: int = 4) -> None:
        self._history_per_key = history  # evicted keys whose use counts are remembered, per key tracked
        self._uses: dict[Hashable, int] = {}
        self._priority: dict[Hashable, float] = {}
        self._parent: dict[Hashable, Hashable] = {}
        self._children: dict[Hashable, int] = {}
        self._heaps: tuple[list[Entry], list[Entry]] = ([], [])  # leaves, never reused and reused
        # every key, leaves or not, in ``ordered()``'s order: for when every leaf is skipped; built when
        # a walk first needs it
        self._all: list[Entry] | None = None
        self._seq = itertools.count()
        self._tick = 0
        self._inflation = 0.0  # GreedyDual's L
        self._reused = 0  # keys tracked with uses >= 1
        self._target = 0.5  # share of the keys probation aims for
        self._evictions = 0
        # evicted keys -> their eviction number, for the split: never reused, and reused
        self._ghosts: tuple[OrderedDict[Hashable, int], ...] = (OrderedDict(), OrderedDict())
        self._history: OrderedDict[Hashable, int] = OrderedDict()  # evicted keys -> uses

    def _push(self, key: Hashable) -> None:
        if key not in self._children:  # only leaves are candidates
            heap = self._heaps[self._uses[key] > 0]
            heapq.heappush(heap, (self._priority[key], next(self._seq), key))

    def _place(self, key: Hashable) -> None:
        uses = self._uses[key]
        if uses:
            self._priority[key] = self._inflation + math.log2(1 + uses)
        else:
            self._tick += 1
            self._priority[key] = float(self._tick)
        self._push(key)
        if self._all is not None:
            self._all = _pushed(self._all, self._entry(key), len(self._uses), self._current)

    def _entry(self, key: Hashable) -> Entry:
        return ((self._uses[key] > 0, self._priority[key]), next(self._seq), key)

    def insert(self, key: Hashable, parent: Hashable | None = None) -> None:
        uses = self._uses.get(key, 0)  # a put of a key it holds keeps its history
        self.remove(key)
        if key in self._history:  # it came back: that is a use
            uses = self._history.pop(key) + 1
        for reused, ghost in enumerate(self._ghosts):
            if ghost.pop(key, None) is not None:  # evicted recently: a block we should have kept
                step = max(1.0, len(self._ghosts[1 - reused]) / max(len(ghost) + 1, 1)) / max(len(self), 1)
                self._target = min(1.0, max(0.0, self._target + (-step if reused else step)))
        if parent is not None and parent in self._uses:
            self._parent[key] = parent
            self._children[parent] = self._children.get(parent, 0) + 1
        self._uses[key] = uses
        self._reused += uses > 0
        self._place(key)

    def access(self, key: Hashable) -> None:
        if key in self._uses:
            self._reused += self._uses[key] == 0
            self._uses[key] += 1
            self._place(key)

    def remove(self, key: Hashable) -> None:
        if key not in self._uses:
            return
        self._reused -= self._uses.pop(key) > 0
        del self._priority[key]
        parent = self._parent.pop(key, None)
        if parent is not None:
            self._children[parent] -= 1
            if not self._children[parent]:
                del self._children[parent]
                if parent in self._uses:
                    self._push(parent)  # it became a leaf

    def evict(self, key: Hashable) -> None:
        if key in self._uses:
            uses = self._uses[key]
            if uses:
                self._inflation = max(self._inflation, self._priority[key])
            self._evictions += 1
            self._ghosts[uses > 0][key] = self._evictions
            window = self._evictions - max(len(self), 1)
            for ghost in self._ghosts:
                while ghost and next(iter(ghost.values())) < window:
                    ghost.popitem(last=False)
            self._history[key] = uses
            while len(self._history) > min(self._history_per_key * max(len(self), 1), self.MAX_HISTORY):
                self._history.popitem(last=False)
        self.remove(key)

    def _leaf(self, heap: list[Entry], reused: bool, skip: Skip) -> Hashable | None:
        def live(entry: Entry) -> bool:
            priority, _, key = entry
            return (
                self._priority.get(key) == priority
                and key not in self._children
                and (self._uses[key] > 0) == reused
            )

        return _first_live(heap, skip, live)

    def victim(self, skip: Skip, incoming: Hashable | None = None) -> Hashable | None:
        order = [False, True]  # probation first while it holds more than its target
        if len(self) - self._reused <= self._target * len(self):
            order.reverse()
        for reused in order:
            key = self._leaf(self._heaps[reused], reused, skip)
            if key is not None:
                return key
        if self._all is None:  # every leaf skipped, for the first time
            self._all = _heap_of(map(self._entry, self._uses))
        return _first_live(self._all, skip, self._current)

    def _current(self, entry: Entry) -> bool:
        (reused, priority), _, key = entry
        return bool(self._priority.get(key) == priority and (self._uses[key] > 0) == reused)

    def ordered(self) -> list[Hashable]:
        return sorted(self._uses, key=lambda k: (self._uses[k] > 0, self._priority[k]))

    def __len__(self) -> int:
        return len(self._uses)
