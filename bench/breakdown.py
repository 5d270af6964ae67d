"""Where a 1 MiB value's time goes: each step of a put and a get timed alone, in one run.

The tiers benchmark compares a hot put with one numpy copy into a single destination, which stays in
the CPU's cache; a put instead writes a fresh place of the arena and checksums the value. This lists
those parts side by side (copies into one place and into fresh places, xxh3 of the value, the store's
hot put and get, py-lmdb's get and the store's cold get), then the fixed cost of a call on each path
(a gRPC unary call, a data-plane frame, a plain socket round trip of the value), so that a shortfall
against a target can be read off as the sum of its parts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import lmdb
import numpy as np
import xxhash

from bench.common import MiB, median, print_table, rounds, write_result
from memstore import Client, TieredStore
from memstore.tuning import pool_large_allocations

COUNT = 64
SMALL = "store hot get_many of 100 x 100 B (per call, no value of 1 MiB)"


def _per_op(fn: Callable[[], int], repeat: int) -> float:
    """Median microseconds per operation; ``fn`` runs a round and returns how many operations it did."""
    return 1e6 / median(rounds(fn, repeat=repeat))


def _memory_steps(values: list[np.ndarray], repeat: int) -> dict[str, float]:
    dst = np.empty_like(values[0])
    fresh = np.zeros(COUNT * MiB, dtype=np.uint8)  # touched once: no page faults in the rounds

    def one_place() -> int:
        for v in values:
            np.copyto(dst, v)
        return len(values)

    def fresh_places() -> int:
        for i, v in enumerate(values):
            fresh[i * MiB : (i + 1) * MiB] = v.view(np.uint8)
        return len(values)

    def checksum() -> int:
        for v in values:
            xxhash.xxh3_64_intdigest(v)
        return len(values)

    return {
        "numpy copy into one destination (the tiers reference)": _per_op(one_place, repeat),
        "numpy copy into a fresh place each time": _per_op(fresh_places, repeat),
        "xxh3-64 of the value": _per_op(checksum, repeat),
    }


def _store_steps(values: list[np.ndarray], repeat: int) -> dict[str, float]:
    keys = [b"k%03d" % i for i in range(len(values))]
    out: dict[str, float] = {}
    big = 4 * COUNT * MiB
    d = tempfile.mkdtemp(prefix="memstore-breakdown-")
    try:
        with TieredStore(f"{d}/hot", hot_bytes=big, warm_bytes=big, cold_bytes=2 * big) as s:

            def put() -> int:
                for k, v in zip(keys, values, strict=True):
                    s.put(k, v)
                return len(keys)

            def get() -> int:
                for k in keys:
                    s.get(k)
                return len(keys)

            out["store hot put"] = _per_op(put, repeat)
            out["store hot get"] = _per_op(get, repeat)
            small = [b"s%03d" % i for i in range(100)]
            s.put_many([(k, bytes(100)) for k in small])

            def small_batch() -> int:
                for _ in range(20):
                    s.get_many(small)
                return 20

            out["store hot get_many of 100 x 100 B (per call, no value of 1 MiB)"] = _per_op(
                small_batch, repeat
            )
        with TieredStore(f"{d}/cold", hot_bytes=0, warm_bytes=0, cold_bytes=2 * big) as s:
            s.create_namespace("b", warm_codec="raw", cold_codec="raw")
            for k, v in zip(keys, values, strict=True):
                s.put(k, v, ns="b")
            s.flush()

            def cold_get() -> int:
                for k in keys:
                    s.get(k, ns="b", promote=False)
                return len(keys)

            out["store cold get (raw codec, page cache)"] = _per_op(cold_get, repeat)
        env = lmdb.open(f"{d}/lmdb", map_size=2 * big, sync=False, metasync=False)
        with env.begin(write=True) as txn:
            for k, v in zip(keys, values, strict=True):
                txn.put(k, v)

        def lmdb_get() -> int:
            with env.begin() as txn:
                for k in keys:
                    txn.get(k)
            return len(keys)

        out["py-lmdb get (page cache)"] = _per_op(lmdb_get, repeat)
        env.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def _call_steps(value: bytes, repeat: int) -> dict[str, float]:
    from memstore_server import create_server

    out: dict[str, float] = {}
    d = tempfile.mkdtemp(prefix="memstore-breakdown-")
    store = TieredStore(f"{d}/s", hot_bytes=64 * MiB, warm_bytes=64 * MiB, cold_bytes=256 * MiB)
    running = create_server(store, "127.0.0.1:0")
    try:
        target = f"127.0.0.1:{running.port}"
        with (
            Client(target, local="never", data="never") as grpc_only,
            Client(target, local="never", data="tcp") as data,
        ):

            def unary() -> int:
                for _ in range(20):
                    grpc_only.contains(b"absent")
                return 20

            def frame() -> int:
                for _ in range(20):
                    data.get(b"absent")
                return 20

            data.get(b"absent")
            out["gRPC unary call, no value (Exists)"] = _per_op(unary, repeat)
            out["data-plane frame over TCP, no value (a miss)"] = _per_op(frame, repeat)
    finally:
        running.stop(0)
        store.close()
        shutil.rmtree(d, ignore_errors=True)
    out["Python TCP round trip of the value (sendmsg, recv)"] = _per_op(_socket_round_trips(value), repeat)
    return out


def _socket_round_trips(value: bytes) -> Callable[[], int]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def serve() -> None:
        while server.recv(1):
            server.sendmsg([value])

    threading.Thread(target=serve, daemon=True).start()

    def trips() -> int:
        for _ in range(20):
            client.sendall(b"?")
            client.recv(len(value), socket.MSG_WAITALL)
        return 20

    return trips


def run(args: argparse.Namespace) -> dict[str, Any]:
    pool_large_allocations()
    repeat = 3 if args.quick else 7
    rng = np.random.default_rng(0)
    values = [rng.integers(0, 1 << 16, MiB // 2, dtype=np.uint16) for _ in range(COUNT)]
    load = os.getloadavg()[0]
    steps = {**_memory_steps(values, repeat), **_store_steps(values, repeat)}
    steps.update(_call_steps(values[0].tobytes(), repeat))
    rows = [
        {"step": name, "us_per_op": us, "GBps": (MiB / (us * 1e-6) / 1e9) if "no value" not in name else None}
        for name, us in steps.items()
    ]
    print_table(rows, ["step", "us_per_op", "GBps"])
    summary = {
        "load_average_at_start": load,
        "hot_put_us": steps["store hot put"],
        "copy_fresh_us": steps["numpy copy into a fresh place each time"],
        "xxh3_us": steps["xxh3-64 of the value"],
        "copy_one_place_us": steps["numpy copy into one destination (the tiers reference)"],
        "cold_get_us": steps["store cold get (raw codec, page cache)"],
        "lmdb_get_us": steps["py-lmdb get (page cache)"],
        "grpc_unary_us": steps["gRPC unary call, no value (Exists)"],
        "data_frame_us": steps["data-plane frame over TCP, no value (a miss)"],
        "small_get_many_100_us": steps[SMALL],
    }
    summary["hot_put_rest_us"] = summary["hot_put_us"] - summary["copy_fresh_us"] - summary["xxh3_us"]
    path = write_result("breakdown", rows, summary, args=args, config={"quick": args.quick, "values": COUNT})
    _plot(rows, path.with_suffix(".png"))
    print(
        f"\nhot put {summary['hot_put_us']:.0f} us = copy into a fresh place "
        f"{summary['copy_fresh_us']:.0f} + "
        f"xxh3 {summary['xxh3_us']:.0f} + the rest {summary['hot_put_rest_us']:.0f}; the tiers reference "
        f"copy takes {summary['copy_one_place_us']:.0f} us"
    )
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.barh([r["step"] for r in rows][::-1], [r["us_per_op"] for r in rows][::-1], color="C0")
    ax.set_xlabel("microseconds per operation, 1 MiB values (median)")
    ax.set_title("where a 1 MiB value's time goes")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
