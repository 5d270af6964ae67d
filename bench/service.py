"""The service next to Redis, in one run: GB/s and ops/s for put and get over TCP and a unix socket.

Both servers run in their own process on this machine; clients are threads of this process (one
connection each): memstore through ``memstore.Client(local="never")`` (gRPC only: the shared-memory
path is the transport benchmark's), values as raw bytes in about 1 MiB messages; Redis through redis-py
with hiredis. Small lookups compare ``get_many`` of 100 keys
with ``MGET`` of 100 keys.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import KiB, MiB, human_size, median, print_table, write_result
from bench.peers import MemstoreServer, RedisServer
from memstore import Client
from memstore.tuning import pool_large_allocations

SIZES = [16 * KiB, 256 * KiB, MiB, 4 * MiB]
KEYS_PER_THREAD = 8


def _threaded(
    threads: int, setup: Callable[[int], Callable[[], int]], seconds: float, rounds: int
) -> list[float]:
    """Each thread runs its op in a loop for ``seconds``; a round's rate is the sum of what all did."""
    ops = [setup(t) for t in range(threads)]
    rates = []
    for _ in range(rounds):
        done = [0] * threads
        barrier = threading.Barrier(threads + 1)

        def run(t: int, barrier: threading.Barrier = barrier, done: list[int] = done) -> None:
            barrier.wait()
            end = time.perf_counter() + seconds
            n = 0
            while time.perf_counter() < end:
                n += ops[t]()
            done[t] = n

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        t0 = time.perf_counter()
        barrier.wait()
        for w in workers:
            w.join()
        rates.append(sum(done) / (time.perf_counter() - t0))
    return rates


def _memstore_case(
    target: str, op: str, size: int, threads: int, payloads: list[bytes], seconds: float, rounds: int
) -> list[float]:
    clients = [Client(target, local="never") for _ in range(threads)]

    def setup(t: int) -> Callable[[], int]:
        c = clients[t]
        keys = [b"t%d-k%d" % (t, i) for i in range(KEYS_PER_THREAD)]
        c.put_many(list(zip(keys, payloads, strict=False)))
        state = {"i": 0}

        def do() -> int:
            i = state["i"] = (state["i"] + 1) % KEYS_PER_THREAD
            if op == "get":
                if c.get(keys[i]) is None:
                    raise AssertionError("missing value")
            else:
                c.put(keys[i], payloads[i])
            return size

        return do

    try:
        return _threaded(threads, setup, seconds, rounds)
    finally:
        for c in clients:
            c.close()


def _redis_case(
    redis: RedisServer,
    unix: bool,
    op: str,
    size: int,
    threads: int,
    payloads: list[bytes],
    seconds: float,
    rounds: int,
) -> list[float]:
    def setup(t: int) -> Callable[[], int]:
        r = redis.client(unix)
        keys = [b"t%d-k%d" % (t, i) for i in range(KEYS_PER_THREAD)]
        for k, v in zip(keys, payloads, strict=False):
            r.set(k, v)
        state = {"i": 0}

        def do() -> int:
            i = state["i"] = (state["i"] + 1) % KEYS_PER_THREAD
            if op == "get":
                if r.get(keys[i]) is None:
                    raise AssertionError("missing value")
            else:
                r.set(keys[i], payloads[i])
            return size

        return do

    return _threaded(threads, setup, seconds, rounds)


def _small_batches(
    target: str, redis: RedisServer, unix: bool, seconds: float, rounds: int
) -> dict[str, float]:
    keys = [b"small-%d" % i for i in range(1000)]
    values = [bytes([i % 251]) * 100 for i in range(1000)]
    out: dict[str, float] = {}
    with Client(target, local="never") as c:
        c.put_many(list(zip(keys, values, strict=True)))
        state = {"i": 0}

        def mem_get() -> int:
            i = state["i"] = (state["i"] + 100) % 1000
            got = c.get_many(keys[i : i + 100])
            assert got[0] == values[i]
            return 100

        out["memstore_get_many"] = median(_threaded(1, lambda _t: mem_get, seconds, rounds))

        def mem_put() -> int:
            i = state["i"] = (state["i"] + 100) % 1000
            c.put_many(list(zip(keys[i : i + 100], values[i : i + 100], strict=True)))
            return 100

        out["memstore_put_many"] = median(_threaded(1, lambda _t: mem_put, seconds, rounds))
    r = redis.client(unix)
    r.mset(dict(zip(keys, values, strict=True)))

    def redis_get() -> int:
        i = state["i"] = (state["i"] + 100) % 1000
        got = r.mget(keys[i : i + 100])
        assert got[0] == values[i]
        return 100

    out["redis_mget"] = median(_threaded(1, lambda _t: redis_get, seconds, rounds))

    def redis_put() -> int:
        i = state["i"] = (state["i"] + 100) % 1000
        r.mset(dict(zip(keys[i : i + 100], values[i : i + 100], strict=True)))
        return 100

    out["redis_mset"] = median(_threaded(1, lambda _t: redis_put, seconds, rounds))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    pool_large_allocations()  # for every client in this process, Redis's included
    seconds = 0.25 if args.quick else 0.5
    rounds = 3 if args.quick else 5
    thread_counts = [1, 4]
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    small: dict[str, dict[str, float]] = {}
    with RedisServer() as redis:
        for transport in ("tcp", "unix"):
            unix = transport == "unix"
            with MemstoreServer(unix=unix) as mem:
                cases = [(s, op, th) for s in SIZES for op in ("put", "get") for th in thread_counts]
                for size, op, threads in tqdm(cases, desc=f"service {transport}", unit="case"):
                    payloads = [rng.bytes(size) for _ in range(KEYS_PER_THREAD)]
                    m = median(_memstore_case(mem.target, op, size, threads, payloads, seconds, rounds))
                    r = median(_redis_case(redis, unix, op, size, threads, payloads, seconds, rounds))
                    rows.append(
                        {
                            "transport": transport,
                            "size": human_size(size),
                            "size_bytes": size,
                            "op": op,
                            "threads": threads,
                            "memstore_GBps": m / 1e9,
                            "redis_GBps": r / 1e9,
                            "memstore_ops": m / size,
                            "redis_ops": r / size,
                            "ratio": m / r,
                        }
                    )
                small[transport] = _small_batches(mem.target, redis, unix, seconds, rounds)
    print_table(
        rows,
        [
            "transport",
            "size",
            "op",
            "threads",
            "memstore_GBps",
            "redis_GBps",
            "memstore_ops",
            "redis_ops",
            "ratio",
        ],
    )
    print("\nbatched 100-byte values, 100 per call (items/s):")
    for transport, figs in small.items():
        print(f"  {transport}: " + ", ".join(f"{k}={v:,.0f}" for k, v in figs.items()))

    summary: dict[str, Any] = {}
    for r in rows:
        tag = (
            f"{r['op']}_{r['size']}"
            + ("" if r["threads"] == 1 else f"_{r['threads']}t")
            + ("" if r["transport"] == "tcp" else "_unix")
        )
        summary[f"grpc_{tag}_GBps"] = r["memstore_GBps"]
        summary[f"redis_{tag}_GBps"] = r["redis_GBps"]
        summary[f"grpc_vs_redis_{tag}"] = r["ratio"]
    for transport, figs in small.items():
        sfx = "" if transport == "tcp" else "_unix"
        summary[f"grpc_get_many_100x100B_items_per_s{sfx}"] = figs["memstore_get_many"]
        summary[f"redis_mget_100x100B_items_per_s{sfx}"] = figs["redis_mget"]
        summary[f"grpc_vs_redis_get_many_100x100B{sfx}"] = figs["memstore_get_many"] / figs["redis_mget"]
        summary[f"grpc_put_many_100x100B_items_per_s{sfx}"] = figs["memstore_put_many"]
        summary[f"redis_mset_100x100B_items_per_s{sfx}"] = figs["redis_mset"]
    summary["targets"] = {"grpc_vs_redis_get_1MiB >= 1.0": summary["grpc_vs_redis_get_1MiB"] >= 1.0}
    path = write_result(
        "service",
        rows,
        summary,
        args=args,
        config={"quick": args.quick, "seconds_per_round": seconds, "rounds": rounds},
    )
    _plot(rows, path.with_suffix(".png"))
    print(
        f"\nget 1MiB over TCP: memstore {summary['grpc_get_1MiB_GBps']:.2f} GB/s, "
        f"redis {summary['redis_get_1MiB_GBps']:.2f} GB/s, ratio {summary['grpc_vs_redis_get_1MiB']:.2f}"
    )
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, op in zip(axes, ("get", "put"), strict=True):
        for transport, style in (("tcp", "-"), ("unix", "--")):
            for threads in (1, 4):
                sel = [
                    r
                    for r in rows
                    if r["op"] == op and r["transport"] == transport and r["threads"] == threads
                ]
                xs = [r["size_bytes"] for r in sel]
                ax.plot(
                    xs,
                    [r["memstore_GBps"] for r in sel],
                    style,
                    marker="o",
                    color=f"C{threads // 4}",
                    label=f"memstore {transport} {threads}t",
                )
                ax.plot(
                    xs,
                    [r["redis_GBps"] for r in sel],
                    style,
                    marker="s",
                    color=f"C{2 + threads // 4}",
                    label=f"redis {transport} {threads}t",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(SIZES, [human_size(s) for s in SIZES])
        ax.set_title(f"{op} GB/s by value size")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GB/s (median)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
