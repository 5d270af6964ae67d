"""Replay a Mooncake-format trace through memstore's eviction and admission policies, with Belady's
OPT as the reference: ``python bench/run.py replay --trace PATH [--block-tokens 512]
[--capacity 0.01,0.05,0.1] [--partial-blocks]``.

Capacity is a fraction of the trace's distinct blocks. By default only full blocks are cached, as
memstore's KV layer does (a partial last block is recomputed, and in the conversation trace it is
almost never asked for again); ``--partial-blocks`` caches them too, as the trace's reference figures
do. Cold writes are counted for every block evicted from the cache, with each admission policy.
``hits_after_miss`` is the share of a policy's block hits that come after its request's first miss:
the engine recomputes from that miss on, so they save nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.agent_trace import run_agent
from bench.common import print_table, write_result
from bench.replay_bounds import (
    OracleAdmission,
    class_ttl_bound,
    conversation_stats,
    future_accesses,
    request_classes,
)
from bench.replay_hosts import run_hosts
from bench.replay_store import run_store
from memstore.admission import AdmitAll, SeenTwice
from memstore.policy import POLICIES, PrefixGreedyDual, make_policy
from memstore.replay import Request, load_trace, replay
from memstore.settings import DEFAULTS

# The Mooncake FAST'25 conversation trace, shipped compressed (bench/traces/README.md says where from).
DEFAULT_TRACE = Path(__file__).resolve().parent / "traces" / "mooncake_fast25_conversation_trace.jsonl.xz"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trace",
        default=str(DEFAULT_TRACE),
        help="Mooncake-format JSONL trace, plain or .xz/.gz (default: bench/traces/ conversation trace)",
    )
    p.add_argument("--block-tokens", type=int, default=512, help="tokens per hash id")
    p.add_argument("--capacity", default="0.01,0.05,0.1", help="cache sizes as fractions of distinct blocks")
    p.add_argument("--partial-blocks", action="store_true", help="cache partial last blocks too")
    p.add_argument(
        "--hosts",
        type=int,
        help="route the trace over this many hosts and compare them with and without a shared pool "
        "(bench/replay_hosts.py)",
    )
    p.add_argument(
        "--local-share",
        type=float,
        default=0.5,
        help="with --hosts: the share of a host's bytes it keeps for itself when there is a pool",
    )
    p.add_argument(
        "--policy", default=str(DEFAULTS["policy"]), help="with --hosts: each host's eviction policy"
    )
    p.add_argument(
        "--agent",
        action="store_true",
        help="replay a generated agent trace (bench/agent_trace.py) without and with its session hints",
    )
    p.add_argument(
        "--store",
        action="store_true",
        help="drive the trace through a real TieredStore at byte budgets (bench/replay_store.py)",
    )
    p.add_argument(
        "--requests",
        help="replay only these requests, START:END as a Python slice (for example :6015 and 6015: for "
        "the two halves of the conversation trace)",
    )


def _bounds_of(requests: str | None) -> tuple[int | None, int | None]:
    """``--requests START:END`` as slice bounds (None: from the first, or to the last)."""
    start, _, end = (requests or ":").partition(":")
    return (int(start) if start else None, int(end) if end else None)


def _full_blocks(trace: list[Request], block_tokens: int) -> list[Request]:
    return [
        r if r.input_length % block_tokens == 0 else dataclasses.replace(r, hash_ids=r.hash_ids[:-1])
        for r in trace
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.agent:
        return run_agent(args)
    trace = load_trace(args.trace)
    if args.quick:
        trace = trace[: len(trace) // 4]
    start, end = _bounds_of(args.requests)
    trace = trace[start:end]
    distinct = len({h for r in trace for h in r.hash_ids})
    cached = trace if args.partial_blocks else _full_blocks(trace, args.block_tokens)
    if args.hosts is not None:
        return run_hosts(args, cached, distinct)
    if args.store:
        return run_store(args, cached, len({h for r in cached for h in r.hash_ids}))
    fractions = [float(x) for x in args.capacity.split(",")]
    policies = [*POLICIES, "opt"]
    rows: list[dict[str, Any]] = []
    for frac in fractions:
        cap = max(1, int(distinct * frac))
        for name in tqdm(policies, desc=f"replay @{frac:g}", unit="policy"):
            r = replay(cached, name, cap, block_tokens=args.block_tokens)
            row = {
                "capacity": frac,
                "blocks": cap,
                "policy": name,
                "prefix_hit_ratio": r.prefix_hit_ratio,
                "block_hit_ratio": r.block_hit_ratio,
                "hits_after_miss": r.hits_after_miss / max(r.block_hits, 1),
            }
            if name != "opt":
                for adm in (AdmitAll(), SeenTwice()):
                    a = replay(cached, name, cap, block_tokens=args.block_tokens, admission=adm)
                    row[f"cold_writes_{adm.name}"] = a.cold_writes
                    row[f"cold_writes_read_{adm.name}"] = a.cold_writes_read
            rows.append(row)
    print_table(
        rows,
        [
            "capacity",
            "blocks",
            "policy",
            "prefix_hit_ratio",
            "block_hit_ratio",
            "hits_after_miss",
            "cold_writes_all",
            "cold_writes_read_all",
            "cold_writes_seen-twice",
            "cold_writes_read_seen-twice",
        ],
    )
    summary: dict[str, Any] = {f"{r['policy']}@{r['capacity']:g}": r["prefix_hit_ratio"] for r in rows}
    summary["prefix_gd_history_sweep"] = _history_sweep(cached, distinct, fractions, args.block_tokens)
    summary["bounds"] = _bounds(cached, distinct, fractions, args.block_tokens)
    summary["trace_stats"] = stats = conversation_stats(trace)
    print(
        f"{stats['conversations']} conversations, {stats['single_turn']} of one turn; "
        f"{stats['blocks_reused']} of {stats['distinct_blocks']} blocks used more than once; "
        "first turns followed by another, by log2(1 + blocks): "
        + ", ".join(f"{b}: {share:.2f}" for b, (_, share) in stats["first_turn_followed_by_length"].items())
    )
    online = [p for p in policies if p != "opt"]
    summary["best_policy"] = max(online, key=lambda p: sum(summary[f"{p}@{f:g}"] for f in fractions))
    summary["trace"] = Path(args.trace).name.removesuffix(".xz").removesuffix(".gz")
    summary["requests"] = len(trace)
    summary["distinct_blocks"] = distinct
    summary["partial_blocks_cached"] = bool(args.partial_blocks)
    name = "replay-" + Path(args.trace).name.split(".")[0] + ("-partial" if args.partial_blocks else "")
    if args.requests:
        name += f"-requests-{start or 0}-{'end' if end is None else end}"
    path = write_result(
        name,
        rows,
        summary,
        args=args,
        config={
            "quick": args.quick,
            "block_tokens": args.block_tokens,
            "capacity": fractions,
            "requests": args.requests,
        },
    )
    _plot(rows, summary["bounds"], fractions, path.with_suffix(".png"))
    print(f"best online policy: {summary['best_policy']}; wrote {path} and {path.with_suffix('.png')}")
    return summary


def _history_sweep(
    trace: list[Request], distinct: int, fractions: list[float], block_tokens: int
) -> dict[str, list[float]]:
    """prefix-gd with other lengths of its use-count memory (4 evicted keys per tracked key is the
    default): how much the figures depend on that choice."""
    sweep: dict[str, list[float]] = {}
    rows = []
    for history in (1, 2, 4, 8, 16):
        ratios = []
        for frac in fractions:
            r = replay(
                trace,
                f"prefix-gd history={history}",
                max(1, int(distinct * frac)),
                block_tokens=block_tokens,
                make=lambda c, h=history: PrefixGreedyDual(c, history=h),
            )
            ratios.append(r.prefix_hit_ratio)
        sweep[str(history)] = ratios
        rows.append(
            {"history": history, **{f"prefix_hit@{f:g}": x for f, x in zip(fractions, ratios, strict=True)}}
        )
    print("prefix-gd by the length of its use-count memory (evicted keys per tracked key):")
    print_table(rows, ["history", *(f"prefix_hit@{f:g}" for f in fractions)])
    return sweep


def _bounds(
    trace: list[Request], distinct: int, fractions: list[float], block_tokens: int
) -> dict[str, float]:
    """How far better admission could go (see ``bench/replay_bounds.py``): prefix-gd and LRU told
    which blocks never come back, and the class-TTL model."""
    caps = [max(1, int(distinct * f)) for f in fractions]
    bounds: dict[str, float] = {}
    for name in ("lru", "prefix-gd"):
        for frac, cap in zip(fractions, caps, strict=True):
            r = replay(
                trace,
                name,
                cap,
                block_tokens=block_tokens,
                make=lambda c, n=name: OracleAdmission(make_policy(n, c), future_accesses(trace)),
            )
            bounds[f"{name}+oracle-admission@{frac:g}"] = r.prefix_hit_ratio
    ttl = class_ttl_bound(trace, request_classes(trace), caps, block_tokens)
    bounds.update({f"class-ttl@{f:g}": x for f, x in zip(fractions, ttl, strict=True)})
    print("bounds: online policies told which blocks come back (oracle admission), and the class-TTL model:")
    print_table(
        [
            {"bound": b, **{f"prefix_hit@{f:g}": bounds[f"{b}@{f:g}"] for f in fractions}}
            for b in ("lru+oracle-admission", "prefix-gd+oracle-admission", "class-ttl")
        ],
        ["bound", *(f"prefix_hit@{f:g}" for f in fractions)],
    )
    return bounds


def _plot(rows: list[dict[str, Any]], bounds: dict[str, float], fractions: list[float], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        ys = [
            next(r["prefix_hit_ratio"] for r in rows if r["policy"] == policy and r["capacity"] == f)
            for f in fractions
        ]
        ax.plot(
            [100 * f for f in fractions],
            [100 * y for y in ys],
            marker="o",
            label=policy,
            linestyle="--" if policy == "opt" else "-",
        )
    for bound in dict.fromkeys(k.split("@")[0] for k in bounds):
        ax.plot(
            [100 * f for f in fractions],
            [100 * bounds[f"{bound}@{f:g}"] for f in fractions],
            marker="x",
            linestyle=":",
            label=f"{bound} (bound)",
        )
    ax.set_xlabel("cache capacity (% of distinct blocks)")
    ax.set_ylabel("token prefix hit ratio (%)")
    ax.set_xscale("log")
    ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
