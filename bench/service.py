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
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import KiB, MiB, human_size, median, print_table, write_result
from bench.mooncake_peer import MooncakePeer, Unavailable
from bench.peers import MemstoreServer, RedisServer
from memstore import Client
from memstore.tuning import pool_large_allocations

SIZES = [16 * KiB, 256 * KiB, MiB, 4 * MiB]
KEYS_PER_THREAD = 8


def _round(ops: list[Callable[[], int]], seconds: float) -> float:
    """Each thread runs its op in a loop for ``seconds``; the rate is the sum of what all did."""
    done = [0] * len(ops)
    barrier = threading.Barrier(len(ops) + 1)

    def run(t: int) -> None:
        barrier.wait()
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            n += ops[t]()
        done[t] = n

    workers = [threading.Thread(target=run, args=(t,)) for t in range(len(ops))]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    barrier.wait()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - t0)


def interleaved(
    systems: dict[str, list[Callable[[], int]]], seconds: float, rounds: int
) -> dict[str, list[float]]:
    """Rounds of every system in turn (the order rotating), so that a change in the machine's load
    falls on all of them alike rather than on whichever ran last."""
    names = list(systems)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(_round(systems[name], seconds))
    return rates


def _cycling(
    get: Callable[[bytes], Any],
    put: Callable[[bytes, Any], Any],
    prefix: bytes,
    op: str,
    size: int,
    payloads: list[bytes],
) -> Callable[[], int]:
    """One thread's op on one system: a get or a put of its own keys in turn (stored first)."""
    keys = [prefix + b"-k%d" % i for i in range(KEYS_PER_THREAD)]
    for k, v in zip(keys, payloads, strict=False):
        put(k, v)
    state = {"i": 0}

    def do() -> int:
        i = state["i"] = (state["i"] + 1) % KEYS_PER_THREAD
        if op == "get":
            got = get(keys[i])
            if got is None or len(got) != size:
                raise AssertionError("missing or wrong value")
        else:
            put(keys[i], payloads[i])
        return size

    return do


def _batches(
    target: str,
    redis: RedisServer,
    mooncake: MooncakePeer | None,
    unix: bool,
    data: str,
    seconds: float,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """Per path (data plane, gRPC, Redis): items/s of 100 values of 100 B per call (get and put), and
    bytes/s of 32 values of 1 MiB per call."""
    rng = np.random.default_rng(1)
    keys = [b"small-%d" % i for i in range(1000)]
    values = [bytes([i % 251]) * 100 for i in range(1000)]
    big_keys = [b"big-%d" % i for i in range(32)]
    big = [rng.bytes(MiB) for _ in big_keys]
    state = {"i": 0}

    def small_get(get: Callable[[list[bytes]], list[Any]]) -> list[Callable[[], int]]:
        def op() -> int:
            i = state["i"] = (state["i"] + 100) % 1000
            if get(keys[i : i + 100])[0] != values[i]:
                raise AssertionError("wrong value")
            return 100

        return [op]

    def small_put(put: Callable[[list[tuple[bytes, bytes]]], Any]) -> list[Callable[[], int]]:
        def op() -> int:
            i = state["i"] = (state["i"] + 100) % 1000
            put(list(zip(keys[i : i + 100], values[i : i + 100], strict=True)))
            return 100

        return [op]

    def batch(get: Callable[[list[bytes]], list[Any]]) -> list[Callable[[], int]]:
        def op() -> int:
            if get(big_keys)[7] != big[7]:
                raise AssertionError("wrong value")
            return 32 * MiB

        return [op]

    r = redis.client(unix)
    r.mset(dict(zip(keys, values, strict=True)))
    r.mset(dict(zip(big_keys, big, strict=True)))
    paths = {"data_plane": data, "grpc": "never"}
    clients = {name: Client(target, local="never", data=mode) for name, mode in paths.items()}
    try:
        for c in clients.values():
            c.put_many(list(zip(keys, values, strict=True)))
            c.put_many(list(zip(big_keys, big, strict=True)))
        if mooncake is not None:
            mooncake.put_many(list(zip(keys, values, strict=True)))
            mooncake.put_many(list(zip(big_keys, big, strict=True)))
        out: dict[str, dict[str, float]] = {name: {} for name in (*paths, "redis", "mooncake")}
        cases: list[tuple[str, Any, Any]] = [
            ("get_small", small_get, r.mget),
            ("put_small", small_put, lambda items: r.mset(dict(items))),
            ("get_32x1MiB", batch, r.mget),
        ]
        for case, make, redis_call in cases:
            systems = {
                name: make(c.put_many if case == "put_small" else c.get_many) for name, c in clients.items()
            }
            systems["redis"] = make(redis_call)
            if mooncake is not None:
                systems["mooncake"] = make(mooncake.put_many if case == "put_small" else mooncake.get_many)
            for name, rates in interleaved(systems, seconds, rounds).items():
                out[name][case] = median(rates)
        return out
    finally:
        for c in clients.values():
            c.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    pool_large_allocations()  # for every client in this process, Redis's included
    seconds = 0.25 if args.quick else 0.5
    rounds = 3 if args.quick else 5
    thread_counts = [1, 4]
    sizes = [MiB] if args.quick else SIZES
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    batches: dict[str, dict[str, dict[str, float]]] = {}
    load = os.getloadavg()[0]
    try:
        mooncake: MooncakePeer | None = MooncakePeer()
        mooncake_note = "measured over TCP (its transfer engine), a client that holds no segment"
    except Unavailable as exc:
        mooncake, mooncake_note = None, f"not measured: {exc}"
        print(f"Mooncake Store {mooncake_note}")
    with RedisServer() as redis, mooncake or contextlib.nullcontext():
        for transport in ("tcp", "unix"):
            unix = transport == "unix"
            data = "auto" if unix else "tcp"  # over TCP, the data plane as a client on another host uses it
            with MemstoreServer(unix=unix) as mem:
                cases = [(s, op, th) for s in sizes for op in ("put", "get") for th in thread_counts]
                for size, op, threads in tqdm(cases, desc=f"service {transport}", unit="case"):
                    payloads = [rng.bytes(size) for _ in range(KEYS_PER_THREAD)]
                    work = (op, size, payloads)
                    clients = {
                        name: [Client(mem.target, local="never", data=mode) for _ in range(threads)]
                        for name, mode in (("data_plane", data), ("grpc", "never"))
                    }
                    try:
                        systems = {
                            n: [_cycling(c.get, c.put, b"t%d" % t, *work) for t, c in enumerate(cs)]
                            for n, cs in clients.items()
                        }
                        rs = [redis.client(unix) for _ in range(threads)]
                        systems["redis"] = [
                            _cycling(r.get, r.set, b"t%d" % t, *work) for t, r in enumerate(rs)
                        ]
                        if mooncake is not None and not unix and threads == 1:
                            systems["mooncake"] = [_cycling(mooncake.get, mooncake.put, b"m", *work)]
                        rates = interleaved(systems, seconds, rounds)
                    finally:
                        for c in (c for cs in clients.values() for c in cs):
                            c.close()
                    fig = {name: median(r) for name, r in rates.items()}
                    rows.append(
                        {
                            "transport": transport,
                            "size": human_size(size),
                            "size_bytes": size,
                            "op": op,
                            "threads": threads,
                            **{f"{name}_GBps": v / 1e9 for name, v in fig.items()},
                            "mooncake_GBps": fig["mooncake"] / 1e9 if "mooncake" in fig else None,
                            "data_plane_vs_redis": fig["data_plane"] / fig["redis"],
                            "data_plane_vs_mooncake": (
                                fig["data_plane"] / fig["mooncake"] if "mooncake" in fig else None
                            ),
                            "grpc_vs_redis": fig["grpc"] / fig["redis"],
                        }
                    )
                peer = mooncake if not unix else None
                batches[transport] = _batches(mem.target, redis, peer, unix, data, seconds, rounds)
            if mooncake is not None:
                mooncake.close()  # measured over TCP only: its processes leave the cores to the rest
    columns = ["transport", "size", "op", "threads", "data_plane_GBps", "grpc_GBps", "redis_GBps"]
    columns += ["mooncake_GBps"] if mooncake is not None else []
    print_table(rows, [*columns, "data_plane_vs_redis", "grpc_vs_redis"])
    print("\nbatches, one call each: 100 values of 100 B (items/s), 32 values of 1 MiB (GB/s)")
    for transport, by_path in batches.items():
        for path, figs in by_path.items():
            if not figs:
                continue
            print(
                f"  {transport} {path}: get {figs['get_small']:,.0f} items/s, put {figs['put_small']:,.0f} "
                f"items/s, 32 x 1 MiB {figs['get_32x1MiB'] / 1e9:.2f} GB/s"
            )
    summary = _summary(rows, batches)
    summary["load_average_at_start"] = load
    summary["mooncake"] = mooncake_note
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
        if r["mooncake_GBps"] is not None:
            summary[f"mooncake_{tag}_GBps"] = r["mooncake_GBps"]
            summary[f"remote_vs_mooncake_{tag}"] = r["data_plane_vs_mooncake"]
        summary[f"grpc_vs_redis_{tag}"] = r["grpc_vs_redis"]
    for transport, figs in batches.items():
        sfx = "" if transport == "tcp" else "_unix"
        for name in ("data_plane", "grpc"):
            tag = "remote" if name == "data_plane" else "grpc"
            summary[f"{tag}_get_many_32x1MiB_GBps{sfx}"] = figs[name]["get_32x1MiB"] / 1e9
            summary[f"{tag}_small_get_items_per_s{sfx}"] = figs[name]["get_small"]
            summary[f"{tag}_small_put_items_per_s{sfx}"] = figs[name]["put_small"]
        summary[f"redis_mget_32x1MiB_GBps{sfx}"] = figs["redis"]["get_32x1MiB"] / 1e9
        summary[f"redis_mget_small_items_per_s{sfx}"] = figs["redis"]["get_small"]
        summary[f"redis_mset_small_items_per_s{sfx}"] = figs["redis"]["put_small"]
        if figs["mooncake"]:
            summary["mooncake_get_batch_32x1MiB_GBps"] = figs["mooncake"]["get_32x1MiB"] / 1e9
            summary["mooncake_get_batch_small_items_per_s"] = figs["mooncake"]["get_small"]
            summary["remote_vs_mooncake_get_many_32x1MiB"] = (
                figs["data_plane"]["get_32x1MiB"] / figs["mooncake"]["get_32x1MiB"]
            )
        for case, key in (
            ("get_32x1MiB", "mget_32x1MiB"),
            ("get_small", "mget_small"),
            ("put_small", "mset_small"),
        ):
            summary[f"remote_vs_redis_{key}{sfx}"] = figs["data_plane"][case] / figs["redis"][case]
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
                paths = (("data_plane_GBps", "data plane"), ("grpc_GBps", "gRPC"))
                for n, (col, name) in enumerate(paths):
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
