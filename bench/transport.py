"""Moving values to a client on the same host, all in one run: memcpy, memstore's local path (copies out
of the shared-memory arena), memstore over gRPC, and Redis GET (hiredis over a unix socket).

Where a CUDA device is present it also restores batches straight into GPU tensors, with the arena
registered as pinned memory and without, next to torch's own pinned-memory ``copy_``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import KiB, MiB, human_size, median, print_table, rounds, write_result
from bench.peers import MemstoreServer, RedisServer
from memstore import Client
from memstore.client import LocationCache
from memstore.tuning import pool_large_allocations

SIZES = [256 * KiB, MiB, 4 * MiB]
BATCH = 32


def _rate(fn: Callable[[], int], seconds: float, repeat: int) -> float:
    """Median bytes/s over ``repeat`` rounds, each calling fn for about ``seconds``."""

    def round_() -> int:
        end = time.perf_counter() + seconds
        total = 0
        while time.perf_counter() < end:
            total += fn()
        return total

    return median(rounds(round_, repeat=repeat))


def _cuda_rows(target: str, seconds: float, repeat: int) -> list[dict[str, Any]]:
    import torch

    from memstore.gpu import load_into_tensors, register_pinned

    rows = []
    rng = np.random.default_rng(1)
    for count, size in ((32, MiB), (256, 4 * MiB)):
        keys = [b"gpu-%d-%d" % (size, i) for i in range(count)]
        total = count * size
        with Client(target, local="always") as c:
            block = rng.integers(0, 1 << 16, size=size // 2, dtype=np.uint16)
            for i in range(0, count, 16):
                c.put_many([(k, block) for k in keys[i : i + 16]])
            outs = [torch.empty(size // 2, dtype=torch.int16, device="cuda") for _ in keys]
            pinned_src = torch.empty(total, dtype=torch.uint8, pin_memory=True)
            dst = torch.empty(total, dtype=torch.uint8, device="cuda")

            def pinned_copy(pinned_src: Any = pinned_src, dst: Any = dst, total: int = total) -> int:
                dst.copy_(pinned_src, non_blocking=True)
                torch.cuda.synchronize()
                return total

            def unregistered(
                keys: list[bytes] = keys, outs: list[Any] = outs, c: Client = c, total: int = total
            ) -> int:
                assert all(n is not None for n in load_into_tensors(c, keys, outs, pinned=False))
                return total

            def registered(
                keys: list[bytes] = keys, outs: list[Any] = outs, c: Client = c, total: int = total
            ) -> int:
                assert all(n is not None for n in load_into_tensors(c, keys, outs, pinned=True))
                return total

            label = f"{count}x{human_size(size)}"
            base = _rate(pinned_copy, seconds, repeat)
            plain = _rate(unregistered, seconds, repeat)  # before the arena is registered
            arena = c._local_arena()
            assert arena is not None and register_pinned(arena), "cudaHostRegister of the arena failed"
            reg = _rate(registered, seconds, repeat)
            expect = np.frombuffer(block.tobytes(), dtype=np.int16)
            assert np.array_equal(outs[-1].cpu().numpy(), expect)
            rows += [
                {"case": f"gpu restore {label}", "path": "torch pinned copy_", "GBps": base / 1e9},
                {
                    "case": f"gpu restore {label}",
                    "path": "memstore local, arena not registered",
                    "GBps": plain / 1e9,
                },
                {
                    "case": f"gpu restore {label}",
                    "path": "memstore local, arena registered",
                    "GBps": reg / 1e9,
                },
            ]
    return rows


def _put_rows(
    local: Client, auto: Client, redis: Any, rng: np.random.Generator, seconds: float, repeat: int
) -> list[dict[str, Any]]:
    """Puts on the same host: the client's own choice (the data plane's unix socket for a batch under
    8 MiB, arena reservations above), arena reservations always, and Redis SET / MSET."""
    rows = []
    for case, count in (("put 1MiB", 1), (f"put batch {BATCH}x1MiB", BATCH)):
        items = [(b"put-%d" % i, rng.bytes(MiB)) for i in range(count)]
        total = count * MiB
        paths: list[tuple[str, Callable[[], int]]] = [
            ("memstore local put (auto)", lambda items=items, total=total: auto.put_many(items) and total),
            (
                "memstore local put through arena reservations",
                lambda items=items, total=total: local.put_many(items) and total,
            ),
        ]
        if redis is not None:
            name = "redis SET (unix socket)" if count == 1 else "redis MSET (unix socket)"
            paths.append((name, lambda items=items, total=total: redis.mset(dict(items)) and total))
        for path, fn in paths:
            rows.append({"case": case, "path": path, "GBps": _rate(fn, seconds, repeat) / 1e9})
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    pool_large_allocations()
    seconds, repeat = (0.2, 3) if args.quick else (0.5, 5)
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except ImportError:
        cuda = False
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    redis_server = None if args.no_redis else RedisServer()
    try:
        with (
            MemstoreServer(unix=True, hot="3GiB" if cuda else "1GiB", warm="256MiB", cold="8GiB") as mem,
            Client(mem.target, local="always") as local,
            Client(mem.target, local="never", data="never") as remote,
            Client(mem.target) as auto,
        ):
            redis = redis_server.client(unix=True) if redis_server else None
            cases = [(f"get {human_size(s)}", [s]) for s in SIZES] + [(f"batch {BATCH}x1MiB", [MiB] * BATCH)]
            for case, sizes in tqdm(cases, desc="transport", unit="case"):
                keys = [b"%s-%d" % (case.encode(), i) for i in range(len(sizes))]
                values = [rng.bytes(s) for s in sizes]
                total = sum(sizes)
                local.put_many(list(zip(keys, values, strict=True)))
                outs = [bytearray(s) for s in sizes]
                src = np.frombuffer(b"".join(values), dtype=np.uint8)
                dst = np.empty_like(src)
                one = len(keys) == 1

                def memcpy(src: Any = src, dst: Any = dst, total: int = total) -> int:
                    np.copyto(dst, src)
                    return total

                def local_get(keys: list[bytes] = keys, total: int = total, one: bool = one) -> int:
                    got = local.get(keys[0]) if one else local.get_many(keys)
                    assert got is not None
                    return total

                def local_into(
                    keys: list[bytes] = keys, outs: list[bytearray] = outs, total: int = total
                ) -> int:
                    local.get_into(keys, outs)
                    return total

                def grpc_get(keys: list[bytes] = keys, total: int = total, one: bool = one) -> int:
                    got = remote.get(keys[0]) if one else remote.get_many(keys)
                    assert got is not None
                    return total

                def located_each_time(
                    keys: list[bytes] = keys, outs: list[bytearray] = outs, total: int = total
                ) -> int:
                    local.locations = LocationCache()  # forget locations: one LocalGet call per batch
                    local.get_into(keys, outs)
                    return total

                paths: list[tuple[str, Callable[[], int]]] = [
                    ("numpy memcpy", memcpy),
                    ("memstore local get", local_get),
                    ("memstore local get_into", local_into),
                    ("memstore local get_into, located each time", located_each_time),
                    ("memstore gRPC get", grpc_get),
                ]
                if redis is not None:
                    for k, v in zip(keys, values, strict=True):
                        redis.set(k, v)

                    def redis_get(keys: list[bytes] = keys, total: int = total, one: bool = one) -> int:
                        got = redis.get(keys[0]) if one else redis.mget(keys)
                        assert got is not None
                        return total

                    paths.append(
                        ("redis GET (unix socket)" if one else "redis MGET (unix socket)", redis_get)
                    )
                for path, fn in paths:
                    rows.append({"case": case, "path": path, "GBps": _rate(fn, seconds, repeat) / 1e9})
            rows += _put_rows(local, auto, redis, rng, seconds, repeat)
            if cuda:
                rows += _cuda_rows(mem.target, seconds, repeat)
    finally:
        if redis_server is not None:
            redis_server.close()
    print_table(rows, ["case", "path", "GBps"])

    def fig(case: str, prefix: str) -> float:
        return next(
            (r["GBps"] for r in rows if r["case"] == case and r["path"].startswith(prefix)), float("nan")
        )

    summary: dict[str, Any] = {}
    for s in SIZES:
        h = human_size(s)
        summary[f"memcpy_{h}_GBps"] = fig(f"get {h}", "numpy memcpy")
        summary[f"local_get_{h}_GBps"] = fig(f"get {h}", "memstore local get")
        summary[f"local_get_into_{h}_GBps"] = fig(f"get {h}", "memstore local get_into")
        summary[f"grpc_get_{h}_GBps"] = fig(f"get {h}", "memstore gRPC")
        summary[f"redis_get_{h}_GBps"] = fig(f"get {h}", "redis")
        summary[f"local_vs_redis_get_{h}"] = summary[f"local_get_{h}_GBps"] / summary[f"redis_get_{h}_GBps"]
    b = f"batch {BATCH}x1MiB"
    summary["local_batch32x1MiB_GBps"] = fig(b, "memstore local get_into")
    summary["local_batch32x1MiB_new_buffers_GBps"] = fig(b, "memstore local get")
    summary["local_batch32x1MiB_located_each_time_GBps"] = fig(b, "memstore local get_into, located")
    summary["grpc_batch32x1MiB_GBps"] = fig(b, "memstore gRPC")
    summary["redis_mget32x1MiB_GBps"] = fig(b, "redis")
    summary["memcpy_32MiB_GBps"] = fig(b, "numpy memcpy")
    summary["local_batch_vs_memcpy"] = summary["local_batch32x1MiB_GBps"] / summary["memcpy_32MiB_GBps"]
    for r in rows:
        if r["case"].startswith("gpu"):
            tag = (
                r["case"].split()[-1]
                + "_"
                + (
                    "pinned_copy"
                    if "torch" in r["path"]
                    else "registered"
                    if "registered" in r["path"] and "not" not in r["path"]
                    else "unregistered"
                )
            )
            summary[f"gpu_restore_{tag}_GBps"] = r["GBps"]
    for case, tag in (("put 1MiB", "put_1MiB"), (f"put batch {BATCH}x1MiB", "put_batch32x1MiB")):
        summary[f"local_{tag}_GBps"] = fig(case, "memstore local put (")
        summary[f"arena_{tag}_GBps"] = fig(case, "memstore local put through")
        summary[f"redis_{tag}_GBps"] = fig(case, "redis")
        summary[f"local_vs_redis_{tag}"] = summary[f"local_{tag}_GBps"] / summary[f"redis_{tag}_GBps"]
    summary["targets"] = {
        "local_get_1MiB >= 4x redis": summary["local_vs_redis_get_1MiB"] >= 4,
        "local_batch32 >= 0.8x memcpy": summary["local_batch_vs_memcpy"] >= 0.8,
        "local_put_1MiB >= 2x redis SET": summary["local_vs_redis_put_1MiB"] >= 2,
    }
    summary["cuda"] = cuda
    path = write_result(
        "transport" + ("-cuda" if cuda else ""),
        rows,
        summary,
        args=args,
        config={"quick": args.quick, "seconds_per_round": seconds, "rounds": repeat},
    )
    _plot(rows, path.with_suffix(".png"))
    print(
        f"\nlocal get 1MiB {summary['local_get_1MiB_GBps']:.2f} GB/s = "
        f"{summary['local_vs_redis_get_1MiB']:.1f}x "
        f"redis; batch 32x1MiB {summary['local_batch32x1MiB_GBps']:.2f} GB/s = "
        f"{summary['local_batch_vs_memcpy']:.2f}x memcpy"
    )
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    paths = list(dict.fromkeys(r["path"] for r in rows))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(paths)
    for j, p in enumerate(paths):
        xs = [i + j * width for i, c in enumerate(cases) for r in rows if r["case"] == c and r["path"] == p]
        ys = [r["GBps"] for c in cases for r in rows if r["case"] == c and r["path"] == p]
        ax.bar(xs, ys, width, label=p)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, fontsize=8)
    ax.set_ylabel("GB/s (median)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
