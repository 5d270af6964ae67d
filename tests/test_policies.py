"""Eviction policies against simple references, prefix closure, pins, and OPT against brute force."""

from __future__ import annotations

import dataclasses
import math
import random
from functools import cache

import pytest

from bench.replay_bounds import (
    OracleAdmission,
    class_ttl_bound,
    conversation_stats,
    future_accesses,
    request_classes,
)
from memstore.admission import SeenTwice
from memstore.policy import POLICIES, make_policy
from memstore.prefix_policy import PrefixGreedyDual
from memstore.replay import Request, replay


def _simulate(policy_name: str, seq: list[int], capacity: int) -> list[int]:
    """Drive a policy as a cache would; return the evicted keys in order."""
    policy = make_policy(policy_name, capacity)
    cached: set[int] = set()
    evicted = []
    for k in seq:
        if k in cached:
            policy.access(k)
            continue
        while len(cached) >= capacity:
            v = policy.victim(lambda _k: False, k)
            assert v in cached
            policy.evict(v)
            cached.discard(v)  # type: ignore[arg-type]
            evicted.append(v)
        cached.add(k)
        policy.insert(k)
    assert len(policy) == len(cached)
    return evicted  # type: ignore[return-value]


def _reference_lru(seq: list[int], capacity: int) -> list[int]:
    order: list[int] = []
    evicted = []
    for k in seq:
        if k in order:
            order.remove(k)
        elif len(order) >= capacity:
            evicted.append(order.pop(0))
        order.append(k)
    return evicted


def _reference_lfu(seq: list[int], capacity: int) -> list[int]:
    freq: dict[int, int] = {}
    last: dict[int, int] = {}
    evicted = []
    for t, k in enumerate(seq):
        if k in freq:
            freq[k] += 1
        else:
            if len(freq) >= capacity:
                v = min(freq, key=lambda x: (freq[x], last[x]))
                evicted.append(v)
                del freq[v], last[v]
            freq[k] = 1
        last[k] = t
    return evicted


def _reference_arc(seq: list[int], c: int) -> list[int]:
    """ARC as printed in Megiddo and Modha (FAST'03), Figure 4: lists with the LRU end first."""
    t1: list[int] = []
    t2: list[int] = []
    b1: list[int] = []
    b2: list[int] = []
    p = 0.0
    evicted = []

    def replace(x: int) -> None:
        if t1 and ((x in b2 and len(t1) == p) or len(t1) > p):
            b1.append(t1.pop(0))
            evicted.append(b1[-1])
        else:
            b2.append(t2.pop(0))
            evicted.append(b2[-1])

    for x in seq:
        if x in t1 or x in t2:  # case I
            (t1 if x in t1 else t2).remove(x)
            t2.append(x)
        elif x in b1:  # case II
            p = min(c, p + max(len(b2) / len(b1), 1))
            replace(x)
            b1.remove(x)
            t2.append(x)
        elif x in b2:  # case III
            p = max(0, p - max(len(b1) / len(b2), 1))
            replace(x)
            b2.remove(x)
            t2.append(x)
        else:  # case IV
            if len(t1) + len(b1) == c:
                if len(t1) < c:
                    b1.pop(0)
                    replace(x)
                else:
                    evicted.append(t1.pop(0))
            elif len(t1) + len(t2) + len(b1) + len(b2) >= c:
                if len(t1) + len(t2) + len(b1) + len(b2) == 2 * c:
                    b2.pop(0)
                replace(x)
            t1.append(x)
    return evicted


def _reference_s3fifo(seq: list[int], capacity: int) -> list[int]:
    """S3-FIFO as memstore runs it (a small queue of a tenth of the keys, a main queue with up to three
    reinsertions, a ghost queue as long as main), written with plain lists, oldest first."""
    small: list[int] = []
    main: list[int] = []
    ghost: list[int] = []
    freq: dict[int, int] = {}
    evicted = []
    for k in seq:
        if k in freq:
            freq[k] = min(freq[k] + 1, 3)
            continue
        while len(freq) >= capacity:
            if small and (len(small) >= 0.1 * len(freq) or not main):
                v = small.pop(0)
                if freq[v] > 1:  # used while on probation: to main, with its count reset
                    main.append(v)
                    freq[v] = 0
                    continue
                ghost.append(v)
                ghost = ghost[-max(len(main), 1) :]
            else:
                v = main.pop(0)
                if freq[v] > 0:
                    freq[v] -= 1
                    main.append(v)
                    continue
            del freq[v]
            evicted.append(v)
        freq[k] = 0
        if k in ghost:
            ghost.remove(k)
            main.append(k)
        else:
            small.append(k)
    return evicted


def _reference_prefix_slru(seq: list[int], capacity: int) -> list[int]:
    """prefix-slru on flat keys (all leaves): probation and protected LRU lists and a probation ghost
    list as long as the keys tracked; protected is evicted from while it holds more than half."""
    probation: list[int] = []
    protected: list[int] = []
    ghost: list[int] = []
    evicted = []
    for k in seq:
        if k in probation or k in protected:
            (probation if k in probation else protected).remove(k)
            protected.append(k)
            continue
        while len(probation) + len(protected) >= capacity:
            tracked = len(probation) + len(protected)
            segment = protected if len(protected) > 0.5 * tracked else probation
            segment = segment or protected or probation  # the other one when it is empty
            v = segment.pop(0)
            if segment is probation:
                ghost.append(v)
                ghost = ghost[-max(tracked, 1) :]
            evicted.append(v)
        if k in ghost:
            ghost.remove(k)
            protected.append(k)
        else:
            probation.append(k)
    return evicted


def _reference_prefix_gd(seq: list[int], capacity: int) -> list[int]:
    """prefix-gd's rules written plainly (flat keys, so every key is a leaf): scans instead of heaps."""
    uses: dict[int, int] = {}
    prio: dict[int, tuple[float, int]] = {}  # (priority, placement order) decides ties as a heap would
    history: dict[int, int] = {}  # evicted key -> uses, oldest first
    ghosts: tuple[dict[int, int], dict[int, int]] = ({}, {})  # evicted key -> eviction number
    state = {"tick": 0, "order": 0, "L": 0.0, "target": 0.5, "evictions": 0}
    evicted = []

    def place(k: int) -> None:
        state["order"] += 1
        if uses[k]:
            prio[k] = (state["L"] + math.log2(1 + uses[k]), state["order"])
        else:
            state["tick"] += 1
            prio[k] = (float(state["tick"]), state["order"])

    for k in seq:
        if k in uses:
            uses[k] += 1
            place(k)
            continue
        if len(uses) >= capacity:
            new = [x for x in uses if not uses[x]]
            old = [x for x in uses if uses[x]]
            first, second = (new, old) if len(new) > state["target"] * len(uses) else (old, new)
            v = min(first or second, key=prio.__getitem__)
            evicted.append(v)
            if uses[v]:
                state["L"] = max(state["L"], prio[v][0])
            state["evictions"] += 1
            tracked = len(uses)  # the windows count the victim, still tracked when it is evicted
            ghosts[uses[v] > 0][v] = state["evictions"]
            for g in ghosts:
                for x in [x for x, n in g.items() if n < state["evictions"] - tracked]:
                    del g[x]
            history[v] = uses.pop(v)
            del prio[v]
            while len(history) > 4 * tracked:
                del history[next(iter(history))]
        u = history.pop(k) + 1 if k in history else 0
        for reused, g in enumerate(ghosts):
            if g.pop(k, None) is not None:
                step = max(1.0, len(ghosts[1 - reused]) / (len(g) + 1)) / max(len(uses), 1)
                state["target"] = min(1.0, max(0.0, state["target"] + (-step if reused else step)))
        uses[k] = u
        place(k)
    return evicted


@pytest.mark.parametrize(
    "name,reference",
    [
        ("lru", _reference_lru),
        ("lfu", _reference_lfu),
        ("prefix-lru", _reference_lru),
        ("s3fifo", _reference_s3fifo),
        ("arc", _reference_arc),
        ("prefix-slru", _reference_prefix_slru),
        ("prefix-gd", _reference_prefix_gd),
    ],
)
def test_policies_match_their_reference(name, reference, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    for _ in range(30):
        seq = [rng.randrange(12) for _ in range(200)]
        cap = rng.randrange(1, 8)
        assert _simulate(name, seq, cap) == reference(seq, cap)


@pytest.mark.parametrize("name", ["s3fifo", "arc", "prefix-gd"])
def test_scan_resistant_policies_keep_a_hot_set_through_a_scan(name) -> None:  # type: ignore[no-untyped-def]
    hot = list(range(5))
    seq = hot * 6 + list(range(100, 160)) + hot  # a one-time scan of 60 keys between uses
    evicted = _simulate(name, seq, 16)
    assert not set(hot) & set(evicted), name
    assert set(hot) & set(_simulate("lru", seq, 16))  # LRU loses them


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_skipped_keys_are_never_victims(name, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    policy = make_policy(name, 16)
    keys = list(range(40))
    for k in keys:
        policy.insert(k)
    pinned = set(rng.sample(keys, 20))
    for _ in range(20):
        v = policy.victim(pinned.__contains__)
        assert v is not None and v not in pinned
        policy.evict(v)
    assert policy.victim(pinned.__contains__) is None  # only pinned keys left


def _tree_trace(rng: random.Random, n: int) -> list[Request]:
    """Random conversations: each request extends an earlier chain or starts a new one."""
    chains: list[tuple[int, ...]] = []
    next_id = 0
    out = []
    for t in range(n):
        base = rng.choice(chains)[: rng.randrange(1, 6)] if chains and rng.random() < 0.7 else ()
        new = tuple(range(next_id, next_id + rng.randrange(1, 5)))
        next_id += len(new)
        chain = base + new
        chains.append(chain)
        out.append(Request(t, 512 * len(chain), chain))
    return out


@pytest.mark.parametrize("name", ["prefix-lru", "prefix-slru", "prefix-gd"])
def test_prefix_policies_keep_every_cached_block_s_parent(name, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    trace = _tree_trace(rng, 300)
    policy = make_policy(name, 30)
    parent_of = {h: (r.hash_ids[i - 1] if i else None) for r in trace for i, h in enumerate(r.hash_ids)}
    cached: set[int] = set()
    for req in trace:
        in_use = set(req.hash_ids)
        prev = None
        for h in req.hash_ids:
            if h in cached:
                policy.access(h)
            else:
                while len(cached) >= 30:
                    v = policy.victim(in_use.__contains__)
                    assert v is not None
                    assert not any(parent_of[c] == v for c in cached), "evicted a block with cached children"
                    policy.evict(v)
                    cached.discard(v)  # type: ignore[arg-type]
                cached.add(h)
                policy.insert(h, prev)
            prev = h
        for c in cached:
            assert parent_of[c] is None or parent_of[c] in cached, "a cached block lost its parent"


def _brute_force_hits(seq: list[int], capacity: int) -> int:
    @cache
    def best(i: int, cache: frozenset[int]) -> int:
        if i == len(seq):
            return 0
        k = seq[i]
        if k in cache:
            return 1 + best(i + 1, cache)
        options = [best(i + 1, cache)]  # bypass: do not cache it
        if len(cache) < capacity:
            options.append(best(i + 1, cache | {k}))
        else:
            options += [best(i + 1, (cache - {v}) | {k}) for v in cache]
        return max(options)

    return best(0, frozenset())


def test_opt_matches_brute_force(seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    for _ in range(40):
        seq = [rng.randrange(5) for _ in range(rng.randrange(4, 13))]
        cap = rng.randrange(1, 4)
        trace = [Request(t, 512, (k,)) for t, k in enumerate(seq)]
        assert replay(trace, "opt", cap).block_hits == _brute_force_hits(seq, cap), (seq, cap)


def test_opt_bounds_every_online_policy(seed) -> None:  # type: ignore[no-untyped-def]
    trace = _tree_trace(random.Random(seed), 400)
    opt = replay(trace, "opt", 40).block_hits
    for name in POLICIES:
        assert replay(trace, name, 40).block_hits <= opt, name


@pytest.mark.parametrize("name", ["lru", "opt"])
def test_prefix_hit_tokens_weigh_each_block_by_what_it_covers(name: str) -> None:
    # 1200 tokens: blocks of 512, 512 and 176. The second request hits its first two blocks, then
    # misses: 1024 of 2400 tokens.
    partial = [Request(0, 1200, (1, 2, 3)), Request(1, 1200, (1, 2, 4))]
    r = replay(partial, name, 10)
    assert (r.prefix_tokens, r.total_tokens) == (1024, 2400)
    # With the partial last blocks left out of the trace (only full blocks cached), the second request
    # hits both its blocks: its 176 trailing tokens are still recomputed, not credited to block 2.
    full = [Request(0, 1200, (1, 2)), Request(1, 1200, (1, 2))]
    r = replay(full, name, 10)
    assert (r.prefix_tokens, r.total_tokens) == (1024, 2400)


def test_seen_twice_admission_writes_fewer_blocks(seed) -> None:  # type: ignore[no-untyped-def]
    trace = _tree_trace(random.Random(seed), 400)
    every = replay(trace, "lru", 30, admission=None)
    twice = replay(trace, "lru", 30, admission=SeenTwice())
    assert every.block_hits == twice.block_hits  # admission to cold does not change the hot cache
    assert twice.cold_writes > 0
    from memstore.admission import AdmitAll

    assert replay(trace, "lru", 30, admission=AdmitAll()).cold_writes > twice.cold_writes


@pytest.mark.parametrize("name", ["prefix-lru", "prefix-slru", "prefix-gd"])
def test_parents_named_in_a_cycle_do_not_jam_eviction(name) -> None:  # type: ignore[no-untyped-def]
    """Parents come from clients: a cycle (b extends a, then a is put again extending b) must not leave
    nothing to evict."""
    policy = make_policy(name, 4)
    policy.insert("a")
    policy.insert("b", "a")
    policy.insert("a", "b")
    policy.insert("c", "b")
    evicted = []
    while len(policy):
        v = policy.victim(lambda _k: False)
        assert v is not None
        policy.evict(v)
        evicted.append(v)
    assert sorted(evicted) == ["a", "b", "c"]


def test_oracle_admission_evicts_a_block_that_never_comes_back_first() -> None:
    # Capacity 2: LRU evicts block 1 for block 3 and misses 1 again; told that 2 never comes back,
    # the policy evicts 2 instead and hits.
    trace = [Request(t, 512, (k,)) for t, k in enumerate([1, 2, 3, 1])]
    assert replay(trace, "lru", 2).block_hits == 0
    oracle = replay(
        trace, "lru", 2, make=lambda c: OracleAdmission(make_policy("lru", c), future_accesses(trace))
    )
    assert oracle.block_hits == 1


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_oracle_admission_runs_every_policy_within_opt(name, seed) -> None:  # type: ignore[no-untyped-def]
    trace = _tree_trace(random.Random(seed), 400)
    opt = replay(trace, "opt", 30).block_hits
    r = replay(trace, name, 30, make=lambda c: OracleAdmission(make_policy(name, c), future_accesses(trace)))
    assert 0 < r.block_hits <= opt


def _ttl_trace() -> list[Request]:
    # Conversation A: a request of 3 full blocks, continued 10 s later (sharing all 3). C never
    # comes back. 5120 tokens in all; the shared first block of each request gives 1536 of them.
    return [
        Request(0, 3 * 512, (0, 1, 2)),
        Request(0, 3 * 512, (0, 5, 6)),
        Request(10_000, 4 * 512, (0, 1, 2, 3)),
    ]


def test_class_ttl_bound_by_hand() -> None:
    trace = _ttl_trace()
    # Each request its own class: keeping A's 2 blocks past the first for 10 s (an occupancy of 2
    # blocks over the 10 s span) earns its 1024 tokens; half that capacity earns half.
    own = class_ttl_bound(trace, ["a", "c", "b"], [0, 1, 2, 5])
    assert own == pytest.approx([1536 / 5120, 2048 / 5120, 2560 / 5120, 2560 / 5120])
    # One class: the smallest TTL past 10 s is 15 s, and it holds C's and B's blocks too
    # (2*10 + 2*15 + 3*15 = 95 block-seconds, 9.5 blocks).
    one = class_ttl_bound(trace, ["x"] * 3, [4.75, 9.5])
    assert one == pytest.approx([2048 / 5120, 2560 / 5120])


def test_request_classes_count_conversation_depth() -> None:
    trace = [dataclasses.replace(r, output_length=o) for r, o in zip(_ttl_trace(), (0, 7, 600), strict=True)]
    assert request_classes(trace) == [(0, 2, 0), (0, 2, 1), (1, 2, 3)]


def test_conversation_stats_by_hand() -> None:
    stats = conversation_stats(_ttl_trace())
    assert (stats["conversations"], stats["single_turn"]) == (2, 1)
    assert (stats["blocks_reused"], stats["distinct_blocks"]) == (3, 6)  # blocks 0, 1, 2 of 0, 1, 2, 3, 5, 6
    # two first turns, both of 3 blocks (log2 bucket 2); one of them goes on
    assert stats["first_turn_followed_by_length"] == {"2": [2, 0.5]}


def test_hits_after_a_miss_are_counted_apart() -> None:
    # Capacity 3; block 4 needs room. LRU evicts 1, the chain's head: the chain comes back, misses 1
    # and hits 2 and 3 after the miss, which saves nothing. prefix-lru evicts the tail, 3: the chain
    # hits 1 and 2 before its miss.
    trace = [Request(0, 1536, (1, 2, 3)), Request(1, 512, (4,)), Request(2, 1536, (1, 2, 3))]
    lru = replay(trace, "lru", 3)
    assert (lru.block_hits, lru.hits_after_miss, lru.prefix_tokens) == (2, 2, 0)
    prefix = replay(trace, "prefix-lru", 3)
    assert (prefix.block_hits, prefix.hits_after_miss, prefix.prefix_tokens) == (2, 0, 1024)


def test_prefix_gd_remembers_a_bounded_number_of_evicted_keys(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A store of many small records evicts millions of keys: what it remembers of them is capped."""
    monkeypatch.setattr(PrefixGreedyDual, "MAX_HISTORY", 50)
    policy = PrefixGreedyDual()
    for k in range(100):
        policy.insert(k)
    for k in range(100, 10_000):
        victim = policy.victim(lambda _: False)
        policy.evict(victim)
        policy.insert(k)
    assert len(policy) == 100 and len(policy._history) == 50  # 4 x 100 tracked would be 400


def test_s3fifo_leaves_skipped_keys_where_they_were() -> None:
    """A key a caller skips (pinned, protected by a hint) keeps its place in the queue."""
    policy = make_policy("s3fifo")
    for k in "abc":
        policy.insert(k)
    assert policy.victim(lambda k: k == "a") == "b"
    assert policy.victim(lambda k: False) == "a"  # still the oldest: not sent to the back


class _Stop(Exception):
    pass


def _stopping(after: int):  # type: ignore[no-untyped-def]
    """A skip that passes over every key and raises on its ``after + 1``-th call."""
    calls = 0

    def skip(key: object) -> bool:
        nonlocal calls
        calls += 1
        if calls > after:
            raise _Stop
        return True

    return skip


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_walk_that_skip_ends_leaves_the_order_as_it_was(name, seed) -> None:  # type: ignore[no-untyped-def]
    """Retention ends a long walk past protected keys by raising from ``skip``: the policy must then
    choose exactly as a twin that was never asked."""
    rng = random.Random(seed)
    trace = _tree_trace(rng, 60)
    asked, twin = make_policy(name, 64), make_policy(name, 64)
    for policy in (asked, twin):
        for req in trace:
            parent = None
            for h in req.hash_ids:
                if h in set(policy.ordered()):
                    policy.access(h)
                else:
                    policy.insert(h, parent)
                parent = h
    pinned = set(rng.sample(sorted(set(asked.ordered())), len(asked) // 2))
    for stop_after in (1, 3, len(asked) // 3, len(asked) - 1):
        with pytest.raises(_Stop):
            asked.victim(_stopping(stop_after))
    while len(twin):  # the same victims, in the same order, pinned keys passed over
        a, b = asked.victim(pinned.__contains__), twin.victim(pinned.__contains__)
        assert a == b, name
        if a is None:
            break
        asked.evict(a), twin.evict(b)  # type: ignore[func-returns-value]


def test_a_walk_retention_bounds_never_sorts() -> None:
    """The prefix policies pop up to POPS live entries before they sort the rest: more than the
    protected blocks retention lets a walk pass (SCAN), so its bounded walk stays a few pops."""
    from memstore import prefix_policy
    from memstore.retention import SCAN

    assert prefix_policy.POPS > SCAN


@pytest.mark.parametrize("name", ["prefix-lru", "prefix-gd"])
def test_a_walk_past_more_than_pops_keys_still_finds_the_first_in_order(name) -> None:  # type: ignore[no-untyped-def]
    """Past POPS skipped entries the walk goes on over a sorted copy: the same key as the order says."""
    from memstore import prefix_policy

    rng = random.Random(7)
    policy = make_policy(name)
    n = 3 * prefix_policy.POPS
    for i in range(n):  # chains of 3: leaves and parents, reused or not
        policy.insert(i, i - 1 if i % 3 else None)
        if rng.random() < 0.3:
            policy.access(i)
    order = policy.ordered()
    for allowed in (order[-1], order[n // 2], order[-2]):
        skip = lambda k, allowed=allowed: k != allowed  # noqa: E731
        assert policy.victim(skip) == allowed
    leaves = [k for k in order if k % 3 == 2]
    assert policy.victim(lambda k: k not in leaves[-2:]) == leaves[-2]  # leaves first, in order
    assert len(policy) == n and sorted(policy.ordered()) == list(range(n))  # nothing lost on the way


@pytest.mark.parametrize("name", ["prefix-lru", "prefix-gd"])
def test_the_order_of_every_key_follows_uses_once_a_walk_has_built_it(name) -> None:  # type: ignore[no-untyped-def]
    """The order a walk takes when every leaf is skipped is built by the first such walk, then kept: keys
    used or inserted after it are found where ``ordered()`` puts them."""
    policy = make_policy(name)
    for i in range(30):  # chains of 3: two parents and a leaf each
        policy.insert(i, i - 1 if i % 3 else None)
    parents = [k for k in policy.ordered() if k % 3 != 2]
    assert policy.victim(lambda k: k not in parents) == parents[0]  # every leaf skipped: built here
    for k in parents[:5]:
        policy.access(k), policy.access(k)  # type: ignore[func-returns-value]
    policy.insert(100, parents[-1])
    policy.insert(101, 100)  # a new parent, 100, and its leaf
    order = [k for k in policy.ordered() if k in {*parents, 100}]
    assert order[0] == parents[5] and policy.victim(lambda k: k not in parents) == parents[5]
    used = [k for k in order if k in {*parents[:5], 100}]
    assert policy.victim(lambda k: k not in used) == used[0]
    assert policy.victim(lambda k: k != 100) == 100


def _walked_victim(policy, skip):  # type: ignore[no-untyped-def]
    """prefix-slru's choice by walking its segments in order: leaves first, then any key."""
    if len(policy._protected) > policy.PROTECTED * len(policy):
        segments = (policy._protected, policy._probation)
    else:
        segments = (policy._probation, policy._protected)
    for leaves_only in (True, False):
        for segment in segments:
            for key in segment:
                if not skip(key) and not (leaves_only and key in policy._children):
                    return key
    return None


def test_prefix_slru_finds_the_leaf_its_segments_walk_would(seed) -> None:  # type: ignore[no-untyped-def]
    """Its heaps of leaves give the key a walk of each segment in order would, on chains that grow,
    get reused, lose their tails and come back, with keys skipped at random."""
    rng = random.Random(seed)
    policy = make_policy("prefix-slru", 64)
    for req in _tree_trace(rng, 400):
        parent = None
        for h in req.hash_ids:
            if h in policy._probation or h in policy._protected:
                policy.access(h)
            else:
                while len(policy) >= 64:
                    skipped = set(rng.sample(policy.ordered(), rng.randrange(len(policy))))
                    victim = policy.victim(skipped.__contains__)
                    assert victim == _walked_victim(policy, skipped.__contains__)
                    if victim is None:
                        victim = policy.victim(lambda k: False)
                    policy.evict(victim)
                policy.insert(h, parent)
            parent = h
        if rng.random() < 0.1 and len(policy):  # a block deleted outright, its chain broken
            policy.remove(rng.choice(policy.ordered()))
