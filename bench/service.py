"""The service next to Redis, in one run: GB/s and ops/s for put and get over TCP and a unix socket.

Both servers run in their own process on this machine; clients are threads of this process (one
connection each). memstore is measured twice, with the shared-memory path off (that is the transport
benchmark's): over its data plane (``Client(local="never", data="tcp")`` when the server is reached over
TCP, as from another host; ``data="auto"``, its unix socket, when the server is on a unix socket), and
over gRPC alone (``data="never"``). Redis is redis-py with hiredis, on TCP or its unix socket. Batches
compare ``get_many`` of 32 values of 1 MiB with ``MGET`` of 32, and of 100 values of 100 B with ``MGET``
of 100.
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
    target: str,
    op: str,
    size: int,
    threads: int,
    payloads: list[bytes],
    seconds: float,
    rounds: int,
    data: str,
) -> list[float]:
    clients = [Client(target, local="never", data=data) for _ in range(threads)]

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


def _batches(
    target: str, redis: RedisServer, unix: bool, data: str, seconds: float, rounds: int
) -> dict[str, float]:
    """Items/s for 100 values of 100 B per call, and GB/s for 32 values of 1 MiB per call."""
    rng = np.random.default_rng(1)
    keys = [b"small-%d" % i for i in range(1000)]
    values = [bytes([i % 251]) * 100 for i in range(1000)]
    big_keys = [b"big-%d" % i for i in range(32)]
    big = [rng.bytes(MiB) for _ in big_keys]
    state = {"i": 0}
    out: dict[str, float] = {}

    def sliding(get: Callable[[list[bytes]], list[Any]]) -> Callable[[int], Callable[[], int]]:
        def op() -> int:
            i = state["i"] = (state["i"] + 100) % 1000
            if get(keys[i : i + 100])[0] != values[i]:
                raise AssertionError("wrong value")
            return 100

        return lambda _t: op

    def batch(get: Callable[[list[bytes]], list[Any]]) -> Callable[[int], Callable[[], int]]:
        def op() -> int:
            got = get(big_keys)
            if got[7] != big[7]:
                raise AssertionError("wrong value")
            return 32 * MiB

        return lambda _t: op

    with Client(target, local="never", data=data) as c:
        c.put_many(list(zip(keys, values, strict=True)))
        c.put_many(list(zip(big_keys, big, strict=True)))
        out["memstore_get_many_small"] = median(_threaded(1, sliding(c.get_many), seconds, rounds))

        def mem_put() -> int:
            i = state["i"] = (state["i"] + 100) % 1000
            c.put_many(list(zip(keys[i : i + 100], values[i : i + 100], strict=True)))
            return 100

        out["memstore_put_many_small"] = median(_threaded(1, lambda _t: mem_put, seconds, rounds))
        out["memstore_get_many_32x1MiB"] = median(_threaded(1, batch(c.get_many), seconds, rounds))
    r = redis.client(unix)
    r.mset(dict(zip(keys, values, strict=True)))
    r.mset(dict(zip(big_keys, big, strict=True)))
    out["redis_mget_small"] = median(_threaded(1, sliding(r.mget), seconds, rounds))

    def redis_put() -> int:
        i = state["i"] = (state["i"] + 100) % 1000
        r.mset(dict(zip(keys[i : i + 100], values[i : i + 100], strict=True)))
        return 100

    out["redis_mset_small"] = median(_threaded(1, lambda _t: redis_put, seconds, rounds))
    out["redis_mget_32x1MiB"] = median(_threaded(1, batch(r.mget), seconds, rounds))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    pool_large_allocations()  # for every client in this process, Redis's included
    seconds = 0.25 if args.quick else 0.5
    rounds = 3 if args.quick else 5
    thread_counts = [1, 4]
    sizes = [MiB] if args.quick else SIZES
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    batches: dict[str, dict[str, dict[str, float]]] = {}
    with RedisServer() as redis:
        for transport in ("tcp", "unix"):
            unix = transport == "unix"
            data = "auto" if unix else "tcp"  # over TCP, the data plane as a client on another host uses it
            batches[transport] = {}
            with MemstoreServer(unix=unix) as mem:
                cases = [(s, op, th) for s in sizes for op in ("put", "get") for th in thread_counts]
                for size, op, threads in tqdm(cases, desc=f"service {transport}", unit="case"):
                    payloads = [rng.bytes(size) for _ in range(KEYS_PER_THREAD)]
                    fig = {
                        name: median(
                            _memstore_case(mem.target, op, size, threads, payloads, seconds, rounds, mode)
                        )
                        for name, mode in (("data", data), ("grpc", "never"))
                    }
                    r = median(_redis_case(redis, unix, op, size, threads, payloads, seconds, rounds))
                    rows.append(
                        {
                            "transport": transport,
                            "size": human_size(size),
                            "size_bytes": size,
                            "op": op,
                            "threads": threads,
                            "data_plane_GBps": fig["data"] / 1e9,
                            "grpc_GBps": fig["grpc"] / 1e9,
                            "redis_GBps": r / 1e9,
                            "data_plane_vs_redis": fig["data"] / r,
                            "grpc_vs_redis": fig["grpc"] / r,
                        }
                    )
                for name, mode in (("data_plane", data), ("grpc", "never")):
                    batches[transport][name] = _batches(mem.target, redis, unix, mode, seconds, rounds)
    columns = ["transport", "size", "op", "threads", "data_plane_GBps", "grpc_GBps", "redis_GBps"]
    print_table(rows, [*columns, "data_plane_vs_redis", "grpc_vs_redis"])
    print("\nbatches, one call each: 100 values of 100 B (items/s), 32 values of 1 MiB (GB/s)")
    for transport, by_path in batches.items():
        for path, figs in by_path.items():
            mget, big, big_mget = (
                figs["redis_mget_small"],
                figs["memstore_get_many_32x1MiB"] / 1e9,
                figs["redis_mget_32x1MiB"] / 1e9,
            )
            print(
                f"  {transport} {path}: get {figs['memstore_get_many_small']:,.0f} items/s (MGET "
                f"{mget:,.0f}), put {figs['memstore_put_many_small']:,.0f} items/s "
                f"(MSET {figs['redis_mset_small']:,.0f}), 32 x 1 MiB {big:.2f} GB/s (MGET {big_mget:.2f})"
            )
    summary = _summary(rows, batches)
    path = write_result(
        "service",
        rows,
        summary,
        args=args,
        config={"quick": args.quick, "seconds_per_round": seconds, "rounds": rounds, "sizes": sizes},
    )
    _plot(rows, path.with_suffix(".png"), sizes)
    print(
        f"\nover TCP, one thread, 1 MiB: get {summary['remote_get_1MiB_GBps']:.2f} GB/s against Redis "
        f"{summary['redis_get_1MiB_GBps']:.2f} ({summary['remote_vs_redis_get_1MiB']:.2f}x), put "
        f"{summary['remote_put_1MiB_GBps']:.2f} against {summary['redis_put_1MiB_GBps']:.2f} "
        f"({summary['remote_vs_redis_put_1MiB']:.2f}x); 32 x 1 MiB "
        f"{summary['remote_vs_redis_mget_32x1MiB']:.2f}x MGET; 100 x 100 B "
        f"{summary['remote_vs_redis_mget_small']:.2f}x MGET"
    )
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _summary(rows: list[dict[str, Any]], batches: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """The figures by name: ``remote_*`` is the data plane over TCP, ``grpc_*`` gRPC alone."""
    summary: dict[str, Any] = {}
    for r in rows:
        tag = (
            f"{r['op']}_{r['size']}"
            + ("" if r["threads"] == 1 else f"_{r['threads']}t")
            + ("" if r["transport"] == "tcp" else "_unix")
        )
        summary[f"remote_{tag}_GBps"] = r["data_plane_GBps"]
        summary[f"grpc_{tag}_GBps"] = r["grpc_GBps"]
        summary[f"redis_{tag}_GBps"] = r["redis_GBps"]
        summary[f"remote_vs_redis_{tag}"] = r["data_plane_vs_redis"]
        summary[f"grpc_vs_redis_{tag}"] = r["grpc_vs_redis"]
    for transport, by_path in batches.items():
        sfx = "" if transport == "tcp" else "_unix"
        for path, figs in by_path.items():
            name = "remote" if path == "data_plane" else "grpc"
            summary[f"{name}_get_many_32x1MiB_GBps{sfx}"] = figs["memstore_get_many_32x1MiB"] / 1e9
            summary[f"{name}_small_get_items_per_s{sfx}"] = figs["memstore_get_many_small"]
            summary[f"{name}_small_put_items_per_s{sfx}"] = figs["memstore_put_many_small"]
        figs = by_path["data_plane"]
        summary[f"redis_mget_32x1MiB_GBps{sfx}"] = figs["redis_mget_32x1MiB"] / 1e9
        summary[f"redis_mget_small_items_per_s{sfx}"] = figs["redis_mget_small"]
        summary[f"redis_mset_small_items_per_s{sfx}"] = figs["redis_mset_small"]
        summary[f"remote_vs_redis_mget_32x1MiB{sfx}"] = (
            figs["memstore_get_many_32x1MiB"] / figs["redis_mget_32x1MiB"]
        )
        summary[f"remote_vs_redis_mget_small{sfx}"] = (
            figs["memstore_get_many_small"] / figs["redis_mget_small"]
        )
    summary["targets"] = {
        "remote get 1 MiB >= 1.5x Redis GET": summary["remote_vs_redis_get_1MiB"] >= 1.5,
        "remote put 1 MiB >= 1.0x Redis SET": summary["remote_vs_redis_put_1MiB"] >= 1.0,
        "remote get_many 32 x 1 MiB >= 1.5x MGET": summary["remote_vs_redis_mget_32x1MiB"] >= 1.5,
        "remote get_many 100 x 100 B >= 0.5x MGET": summary["remote_vs_redis_mget_small"] >= 0.5,
    }
    return summary


def _plot(rows: list[dict[str, Any]], out: Any, sizes: list[int]) -> None:
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
                for n, (col, name) in enumerate((("data_plane_GBps", "data plane"), ("grpc_GBps", "gRPC"))):
                    ax.plot(
                        xs,
                        [r[col] for r in sel],
                        style,
                        marker="o^"[n],
                        color=f"C{4 * n + threads // 4}",
                        label=f"memstore {name} {transport} {threads}t",
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
        ax.set_xticks(sizes, [human_size(s) for s in sizes])
        ax.set_title(f"{op} GB/s by value size")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GB/s (median)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
