"""``python bench/run.py retention``: what a tier's choice of a block to give up costs when every block
it holds is in an open session (an agent platform whose every request names its session).

Each run fills a policy with ``N`` blocks in sessions of 50 (a prompt chain each), all open, and times
``Retention.victim`` as a tier calls it: once with no session paused, where the choice walks the
policy's whole order past protected blocks before it settles on the policy's first, and once with one
session paused, where the walk stops after ``memstore.retention.SCAN`` protected blocks and the paused
session's tail goes. Median of the calls after the first (the first also clears entries the policy
left stale while it was filled); the ratio is how much the bound saves.

Beside it, what a store that never hints pays: microseconds per cycle of the policy's hot path (a block
stored as the next of its chain, one earlier block read, the policy's victim given up), median of five
runs of ``HOT_CYCLES`` cycles on a policy holding ``N`` blocks.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from memstore.policy import make_policy
from memstore.retention import Hint, Retention

SESSION_BLOCKS = 50
CALLS = 31
HOT_CYCLES = 20_000


def _median_ms(name: str, n: int, paused: bool) -> float:
    policy = make_policy(name, n)
    retention = Retention()
    held: set[tuple[int, int]] = set()
    for s in range(n // SESSION_BLOCKS):
        chain = [(s, i) for i in range(SESSION_BLOCKS)]
        for i, key in enumerate(chain):
            policy.insert(key, chain[i - 1] if i else None)
        retention.hint(chain, Hint(session=f"s{s}"))
        held.update(chain)
    if paused:
        retention.pause_session("s0")
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        retention.victim(policy.victim, lambda k: False, held)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def _hot_us(name: str, n: int) -> float:
    """Microseconds per insert, access and eviction, no hints anywhere."""
    rng = random.Random(n)
    runs = []
    for _ in range(5):
        policy = make_policy(name, n)
        for i in range(n):
            policy.insert(i, i - 1 if i % SESSION_BLOCKS else None)
        keys = list(range(n))  # keys put, one per slot, for the reads (some since given up: a no-op read)
        start = time.perf_counter()
        for i in range(n, n + HOT_CYCLES):
            policy.insert(i, i - 1 if i % SESSION_BLOCKS else None)
            policy.access(keys[rng.randrange(n)])
            keys[rng.randrange(n)] = i
            policy.evict(policy.victim(lambda k: False))
        runs.append(time.perf_counter() - start)
    return 1e6 * statistics.median(runs) / HOT_CYCLES


def run(args: Any) -> dict[str, Any]:
    from tqdm import tqdm

    from bench.common import print_table, write_result

    sizes = [2_000, 10_000] if args.quick else [10_000, 50_000, 200_000]
    policies = ["lru", "s3fifo", "arc", "prefix-lru", "prefix-slru", "prefix-gd"]
    rows = []
    for n in sizes:
        for name in tqdm(policies, desc=f"{n:,} blocks", unit="policy"):
            walk, bounded = _median_ms(name, n, False), _median_ms(name, n, True)
            rows.append(
                {
                    "blocks": n,
                    "policy": name,
                    "none_paused_ms": walk,
                    "one_paused_ms": bounded,
                    "ratio": walk / bounded,
                    "unhinted_us_per_cycle": _hot_us(name, n),
                }
            )
    print_table(
        rows, ["blocks", "policy", "none_paused_ms", "one_paused_ms", "ratio", "unhinted_us_per_cycle"]
    )
    summary = {f"{r['policy']}@{r['blocks']}": round(r["ratio"], 1) for r in rows}
    path = write_result(
        "retention",
        rows,
        summary,
        args=args,
        config={"sizes": sizes, "session_blocks": SESSION_BLOCKS, "hot_cycles": HOT_CYCLES},
    )
    _plot(rows, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in dict.fromkeys(r["policy"] for r in rows):
        pts = [r for r in rows if r["policy"] == name]
        (line,) = ax.plot(
            [r["blocks"] for r in pts], [r["none_paused_ms"] for r in pts], marker="o", label=name
        )
        ax.plot(
            [r["blocks"] for r in pts],
            [r["one_paused_ms"] for r in pts],
            "--",
            marker="x",
            color=line.get_color(),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("blocks in the tier, all in open sessions")
    ax.set_ylabel("ms per victim choice (median)")
    ax.set_title("solid: none paused (whole walk); dashed: one paused")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
