"""Replaying prefix-block traces through the store's eviction and admission policies.

A trace is a list of requests, each a chain of block ids (Mooncake format: one id per
``block_tokens`` tokens of the prompt; equal ids mean equal prefixes). The simulated cache holds
``capacity`` blocks; a request reads its blocks in order, a missing block is computed and inserted
(with its predecessor as parent), and the blocks of the request being served are never evicted
while it runs. Evicted blocks may be written to a cold tier, if the admission policy lets them.

Figures: block hit ratio; token-weighted prefix hit ratio (only a request's leading hits count, up to
its first miss; the last block weighs its partial length); hits after a miss (the engine recomputes
from its first miss on, so these save nothing); cold writes and how many of them were read again.
``opt`` is Belady's offline optimum on the same accesses, as the reference.
"""

from __future__ import annotations

import gzip
import heapq
import json
import lzma
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from memstore.admission import Admission
from memstore.policy import EvictionPolicy, make_policy
from memstore.retention import Hint, Retention


@dataclass(frozen=True)
class Request:
    timestamp: float
    input_length: int
    hash_ids: tuple[int, ...]
    output_length: int = 0
    session: str = ""  # agent traces: the session the request belongs to
    end_session: bool = False  # ... and whether it is that session's last
    pause_session: bool = False  # ... or whether the session waits after it (a tool call)
    resume_in: float = 0.0  # ... and the caller's estimate of the seconds it waits (0: none)


def load_trace(path: str) -> list[Request]:
    """A Mooncake-format JSONL trace (one request a line), plain or compressed with xz or gzip."""
    out = []
    openers: dict[str, Callable[..., Any]] = {".xz": lzma.open, ".gz": gzip.open}
    opener = openers.get(os.path.splitext(path)[1], open)
    with opener(path, "rt") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out.append(
                    Request(
                        float(r["timestamp"]),
                        int(r["input_length"]),
                        tuple(r["hash_ids"]),
                        int(r.get("output_length", 0)),
                        str(r.get("session", "")),
                        bool(r.get("end_session", False)),
                        bool(r.get("pause_session", False)),
                        float(r.get("resume_in", 0.0)),
                    )
                )
    return out


@dataclass
class ReplayResult:
    policy: str
    capacity: int
    block_hits: int
    block_accesses: int
    prefix_tokens: int
    total_tokens: int
    cold_writes: int = 0
    cold_writes_read: int = 0
    hits_after_miss: int = 0  # hits on blocks past a request's first miss: worthless to prefix caching

    def count_hit(self, req: Request, i: int, leading: bool, block_tokens: int) -> None:
        """Block ``i`` of ``req`` was cached: its tokens count while the request has not missed yet;
        after its first miss the engine recomputes anyway, so the hit saves nothing."""
        self.block_hits += 1
        if leading:
            self.prefix_tokens += block_span(req, i, block_tokens)
        else:
            self.hits_after_miss += 1

    @property
    def block_hit_ratio(self) -> float:
        return self.block_hits / max(self.block_accesses, 1)

    @property
    def prefix_hit_ratio(self) -> float:
        return self.prefix_tokens / max(self.total_tokens, 1)


def block_span(req: Request, i: int, block_tokens: int) -> int:
    """Tokens block ``i`` covers: a full block, or the rest of the prompt for the last one. A request
    whose partial last block was left out of the trace (see ``bench/replay.py``) keeps those tokens in
    its ``input_length``: they count as recomputed, never as a hit of the last full block."""
    return max(0, min(block_tokens, req.input_length - block_tokens * i))


def replay(
    trace: Iterable[Request],
    policy_name: str,
    capacity: int,
    *,
    block_tokens: int = 512,
    admission: Admission | None = None,
    make: Callable[[int], EvictionPolicy] | None = None,
    hints: bool = False,
    pin_in_use: bool = True,
) -> ReplayResult:
    """Run ``trace`` through a cache of ``capacity`` blocks managed by the named policy (or by the one
    ``make(capacity)`` builds, reported under ``policy_name``). With ``hints``, requests' sessions,
    pauses (with their return estimates) and ends are told to the cache as the store's retention hints
    (``memstore.retention``). ``pin_in_use=False`` lets a request's own blocks be evicted while it
    runs, as a store that is not told what an engine holds does."""
    trace = list(trace)
    if policy_name == "opt" and make is None:
        return _replay_opt(trace, capacity, block_tokens)
    policy = make(capacity) if make is not None else make_policy(policy_name, capacity)
    now = [0.0]
    retention = Retention(lambda: now[0]) if hints else None
    cache = BlockCache(policy, capacity, admission, retention)
    cold_read: set[int] = set()
    res = ReplayResult(policy_name, capacity, 0, 0, 0, 0)
    for req in trace:
        in_use = set(req.hash_ids) if pin_in_use else set()
        res.total_tokens += req.input_length
        leading = True
        parent: int | None = None
        for i, h in enumerate(req.hash_ids):
            res.block_accesses += 1
            if admission is not None:
                admission.seen(h)
            if h in cache:
                res.count_hit(req, i, leading, block_tokens)
                cache.access(h)
            else:
                leading = False
                if h in cache.cold and h not in cold_read:
                    cold_read.add(h)
                cache.insert(h, parent, in_use)
            parent = h
        if retention is not None and req.session:
            now[0] = req.timestamp / 1000
            retention.hint([h for h in req.hash_ids if h in cache], Hint(session=req.session))
            if req.end_session:
                retention.end_session(req.session)
            elif req.pause_session:
                retention.pause_session(req.session, req.resume_in or None)
    res.cold_writes = cache.cold_writes
    res.cold_writes_read = len(cold_read)
    return res


class BlockCache:
    """Block ids under an eviction policy, at most ``capacity`` of them: one host's cache in a replay.
    With an admission policy, evicted blocks it admits are counted as written to cold (``cold``)."""

    def __init__(
        self,
        policy: EvictionPolicy,
        capacity: int,
        admission: Admission | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.policy, self.capacity, self.admission = policy, capacity, admission
        self.retention = retention
        self.cached: set[int] = set()
        self.cold: set[int] = set()
        self.cold_writes = 0

    def __contains__(self, h: int) -> bool:
        return h in self.cached

    def access(self, h: int) -> None:
        self.policy.access(h)

    def insert(self, h: int, parent: int | None, in_use: set[int]) -> None:
        """Cache h (extending ``parent``), evicting what the policy picks outside ``in_use``; nothing
        is cached when every block is in use."""
        while len(self.cached) >= self.capacity:
            if self.retention is not None:
                victim = self.retention.victim(self.policy.victim, in_use.__contains__, self.cached, h)
            else:
                victim = self.policy.victim(in_use.__contains__, h)
            if victim is None:
                break
            self.policy.evict(victim)
            self.cached.discard(victim)
            if self.retention is not None:
                self.retention.forget(victim)
            if self.admission is not None and victim not in self.cold and self.admission.admit(victim):
                self.cold.add(victim)  # type: ignore[arg-type]
                self.cold_writes += 1
        if len(self.cached) < self.capacity:
            self.cached.add(h)
            self.policy.insert(h, parent)


def _replay_opt(trace: list[Request], capacity: int, block_tokens: int) -> ReplayResult:
    """Belady: on a miss with a full cache, evict the block whose next use is farthest away."""
    seq = [h for req in trace for h in req.hash_ids]
    nxt = [0] * len(seq)
    last: dict[int, int] = {}
    for i in range(len(seq) - 1, -1, -1):
        nxt[i] = last.get(seq[i], 1 << 62)
        last[seq[i]] = i
    res = ReplayResult("opt", capacity, 0, 0, 0, 0)
    cached: dict[int, int] = {}  # block -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, block), lazily invalidated
    pos = 0
    for req in trace:
        res.total_tokens += req.input_length
        leading = True
        for i, h in enumerate(req.hash_ids):
            res.block_accesses += 1
            if h in cached:
                res.count_hit(req, i, leading, block_tokens)
            else:
                leading = False
                if len(cached) >= capacity:
                    while heap:
                        neg, victim = heapq.heappop(heap)
                        if cached.get(victim) == -neg:
                            if -neg < nxt[pos]:  # every cached block is needed sooner: do not cache this one
                                heapq.heappush(heap, (neg, victim))
                                victim = -1
                            break
                    if victim == -1:
                        pos += 1
                        continue
                    del cached[victim]
            cached[h] = nxt[pos]
            heapq.heappush(heap, (-nxt[pos], h))
            pos += 1
    return res
