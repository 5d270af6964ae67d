"""The trace over N hosts, with and without a shared pool: ``python bench/run.py replay --hosts N``.

The fleet has the same bytes in every setting: ``--capacity`` (a fraction of the trace's distinct
blocks) is the whole fleet's, and each host holds its N-th share. Without the pool, a host caches its
share itself; with the pool, it keeps ``--local-share`` of it (memstore's own tiers) and gives the rest
to the pool (Redis, evicting its least recently used block), which every host reads. A block a host
computed is published to the pool; a local miss that the pool holds is a hit, and the block is placed
locally. One host with the fleet's bytes is the reference: a pool at best reaches it.

Routing: ``conversation`` sends every request of a conversation (requests sharing their second block,
as ``bench/replay_bounds.py`` reads the trace) to one host, conversations dealt round robin; ``random``
sends each request to a host drawn at random (seeded), as a balancer that knows nothing of prefixes.
"""

from __future__ import annotations

import argparse
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.common import print_table, write_result
from memstore.policy import make_policy
from memstore.replay import BlockCache, Request, block_span, replay

ROUTINGS = ("conversation", "random")


def route(trace: list[Request], hosts: int, routing: str, seed: int = 0) -> list[int]:
    """The host of each request."""
    if routing == "random":
        rng = random.Random(seed)
        return [rng.randrange(hosts) for _ in trace]
    if routing != "conversation":
        raise ValueError(f"unknown routing {routing!r}; known: {', '.join(ROUTINGS)}")
    dealt: dict[int, int] = {}
    out = []
    for i, r in enumerate(trace):
        conversation = r.hash_ids[1] if len(r.hash_ids) > 1 else -1 - i  # one block: a conversation alone
        out.append(dealt.setdefault(conversation, len(dealt) % hosts))
    return out


class LRUPool:
    """The pool: block ids, evicting the least recently used beyond ``capacity`` (Redis's
    ``allkeys-lru``, without its sampling)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, h: int) -> bool:
        return h in self._blocks

    def read(self, h: int) -> None:
        self._blocks.move_to_end(h)

    def publish(self, h: int) -> None:
        self._blocks[h] = None
        self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)


def replay_hosts(
    trace: list[Request],
    hosts: list[int],
    caches: list[BlockCache],
    pool: LRUPool | None,
    block_tokens: int,
) -> dict[str, float]:
    """Token hit ratio of ``trace`` with request i served by ``caches[hosts[i]]``, and the shares of
    tokens served from the host's own cache and from the pool."""
    total = local = pooled = 0
    for req, host in zip(trace, hosts, strict=True):
        cache = caches[host]
        in_use = set(req.hash_ids)
        total += req.input_length
        leading = True
        parent: int | None = None
        for i, h in enumerate(req.hash_ids):
            tokens = block_span(req, i, block_tokens)
            if h in cache:
                cache.access(h)
                local += tokens if leading else 0
            elif pool is not None and h in pool:
                pool.read(h)
                cache.insert(h, parent, in_use)
                pooled += tokens if leading else 0
            else:
                leading = False  # computed from here on, stored, and published
                cache.insert(h, parent, in_use)
                if pool is not None:
                    pool.publish(h)
            parent = h
    total = max(total, 1)
    return {"hit_ratio": (local + pooled) / total, "local": local / total, "pool": pooled / total}


def run_hosts(args: argparse.Namespace, trace: list[Request], distinct: int) -> dict[str, Any]:
    n, share = args.hosts, args.local_share
    if n < 2:
        raise SystemExit("bench/run.py replay: --hosts needs at least 2 hosts")
    if not 0 < share <= 1:
        raise SystemExit("bench/run.py replay: --local-share is a fraction in (0, 1]")
    fractions = [float(x) for x in args.capacity.split(",")]
    rows: list[dict[str, Any]] = []
    for frac in tqdm(fractions, desc=f"replay over {n} hosts", unit="capacity"):
        fleet = max(n, int(distinct * frac))
        one = replay(trace, args.policy, fleet, block_tokens=args.block_tokens)
        for routing in ROUTINGS:
            hosts = route(trace, n, routing)
            kept = max(1, int(fleet // n * share))  # with the pool: blocks a host keeps, the rest pooled
            settings = {"no pool": (fleet // n, None), "pool": (kept, LRUPool(fleet - n * kept))}
            for setting, (per_host, pool) in settings.items():
                caches = [BlockCache(make_policy(args.policy, per_host), per_host) for _ in range(n)]
                got = replay_hosts(trace, hosts, caches, pool, args.block_tokens)
                rows.append(
                    {
                        "capacity": frac,
                        "fleet_blocks": fleet,
                        "routing": routing,
                        "setting": setting,
                        "blocks_per_host": per_host,
                        "pool_blocks": pool.capacity if pool else 0,
                        "hit_ratio": got["hit_ratio"],
                        "from_host": got["local"],
                        "from_pool": got["pool"],
                        "one_host_hit_ratio": one.prefix_hit_ratio,
                    }
                )
    print_table(
        rows,
        [
            "capacity",
            "routing",
            "setting",
            "blocks_per_host",
            "pool_blocks",
            "hit_ratio",
            "from_host",
            "from_pool",
            "one_host_hit_ratio",
        ],
    )
    summary: dict[str, Any] = {}
    for r in rows:
        tag = f"{r['routing']}@{r['capacity']:g}"
        summary[f"{'pool' if r['setting'] == 'pool' else 'no_pool'}_{tag}"] = r["hit_ratio"]
        summary[f"one_host@{r['capacity']:g}"] = r["one_host_hit_ratio"]
    for routing in ROUTINGS:
        for f in fractions:
            tag = f"{routing}@{f:g}"
            summary[f"pool_gain_{tag}"] = summary[f"pool_{tag}"] / max(summary[f"no_pool_{tag}"], 1e-12)
    summary.update(
        hosts=n, local_share=share, policy=args.policy, requests=len(trace), distinct_blocks=distinct
    )
    name = f"replay-hosts-{n}-local-{share:g}-" + Path(args.trace).name.split(".")[0]
    path = write_result(
        name,
        rows,
        summary,
        args=args,
        config={"quick": args.quick, "block_tokens": args.block_tokens, "capacity": fractions, "hosts": n},
    )
    _plot(rows, fractions, n, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], fractions: list[float], n: int, out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ROUTINGS), figsize=(10, 4), sharey=True)
    xs = [100 * f for f in fractions]
    for ax, routing in zip(axes, ROUTINGS, strict=True):
        for setting, style in (("no pool", "o-"), ("pool", "s-")):
            ys = [
                100 * next(r["hit_ratio"] for r in rows if (r["routing"], r["setting"], r["capacity"]) == key)
                for key in ((routing, setting, f) for f in fractions)
            ]
            ax.plot(xs, ys, style, label=f"{n} hosts, {setting}")
        one = [100 * next(r["one_host_hit_ratio"] for r in rows if r["capacity"] == f) for f in fractions]
        ax.plot(xs, one, "k:", label="one host with the fleet's bytes")
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}%" for x in xs])
        ax.set_title(f"routing: {routing}")
        ax.set_xlabel("fleet's bytes (% of distinct blocks)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("token prefix hit ratio (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
