"""Per-tier put and get throughput, next to numpy memcpy and raw py-lmdb measured in the same run.

Values are bf16-like KV arrays (normal floats truncated to their top 16 bits, shipped as uint16), the
data the store exists for. Gets from warm and cold use ``promote=False`` so each round reads the tier
being measured.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from typing import Any

import lmdb
import numpy as np
from tqdm import tqdm

from bench.common import KiB, MiB, human_size, median, print_table, rounds, write_result
from memstore import TieredStore

SIZES = [16 * KiB, 256 * KiB, MiB, 4 * MiB]


def bf16_values(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pool = [
        (rng.standard_normal(size // 2).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        for _ in range(min(count, 8))
    ]
    out = []
    for i in range(count):
        v = pool[i % len(pool)].copy()
        v[0] = i  # every value distinct
        out.append(v)
    return out


def _figures(put: list[float], get: list[float], size: int, ratio: float) -> dict[str, float]:
    """Median rates of the put and get rounds (bytes/s) as GB/s and operations/s."""
    return {
        "put_GBps": median(put) / 1e9,
        "get_GBps": median(get) / 1e9,
        "put_ops": median(put) / size,
        "get_ops": median(get) / size,
        "ratio": ratio,
    }


def _store(path: str, total: int, tier: str) -> TieredStore:
    big = 2 * total + 64 * MiB
    budgets = {
        "hot": {"hot_bytes": big, "warm_bytes": big, "cold_bytes": 2 * big},
        "warm": {"hot_bytes": 0, "warm_bytes": big, "cold_bytes": 2 * big},
        "cold": {"hot_bytes": 0, "warm_bytes": 0, "cold_bytes": 2 * big},
    }[tier]
    return TieredStore(path, **budgets)


def _measure_store(tier: str, codec: str, values: list[np.ndarray], repeat: int) -> dict[str, float]:
    size = values[0].nbytes
    total = size * len(values)
    keys = [b"k%06d" % i for i in range(len(values))]
    path = tempfile.mkdtemp(prefix="memstore-bench-")
    try:
        with _store(path, total, tier) as s:
            s.create_namespace("b", warm_codec=codec, cold_codec=codec)

            def put_all() -> int:
                for k, v in zip(keys, values, strict=True):
                    s.put(k, v, ns="b")
                s.flush()  # background compression and cold commits count as part of the put
                return total

            put = rounds(put_all, repeat=max(1, repeat // 2))
            st = s.stats()
            assert st[tier]["items"] == len(values), (tier, st[tier]["items"])

            def get_all() -> int:
                for k in keys:
                    if s.get(k, ns="b", promote=False) is None:
                        raise AssertionError("benchmark value missing")
                return total

            get = rounds(get_all, repeat=repeat)
            ratio = st[tier]["compression_ratio"] or 1.0
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return _figures(put, get, size, ratio)


def _measure_memcpy(values: list[np.ndarray], repeat: int) -> dict[str, float]:
    size = values[0].nbytes
    dst = np.empty_like(values[0])

    def copy_all() -> int:
        for v in values:
            np.copyto(dst, v)
        return size * len(values)

    r = rounds(copy_all, repeat=repeat)
    return _figures(r, r, size, 1.0)


def _measure_lmdb(values: list[np.ndarray], repeat: int) -> dict[str, float]:
    size = values[0].nbytes
    total = size * len(values)
    keys = [b"k%06d" % i for i in range(len(values))]
    path = tempfile.mkdtemp(prefix="lmdb-bench-")
    try:
        env = lmdb.open(path, map_size=4 * total + 64 * MiB, sync=False, metasync=False)

        def put_all() -> int:
            for i in range(0, len(keys), 16):  # the same group size as memstore's writer at most
                with env.begin(write=True) as txn:
                    for k, v in zip(keys[i : i + 16], values[i : i + 16], strict=True):
                        txn.put(k, v)
            return total

        def get_all() -> int:
            with env.begin() as txn:
                for k in keys:
                    if txn.get(k) is None:
                        raise AssertionError("missing")
            return total

        put = rounds(put_all, repeat=max(1, repeat // 2))
        get = rounds(get_all, repeat=repeat)
        env.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)
    return _figures(put, get, size, 1.0)


PATHS: list[tuple[str, str, str | None]] = [
    ("numpy memcpy", "memcpy", None),
    ("memstore hot", "hot", "byteplane"),
    ("memstore warm (byteplane)", "warm", "byteplane"),
    ("memstore cold (raw codec)", "cold", "raw"),
    ("memstore cold (byteplane)", "cold", "byteplane"),
    ("py-lmdb (raw)", "lmdb", None),
]


def run(args: argparse.Namespace) -> dict[str, Any]:
    total = (16 if args.quick else 64) * MiB
    repeat = 3 if args.quick else 7
    rows: list[dict[str, Any]] = []
    jobs = [(size, p) for size in SIZES for p in PATHS]
    for size, (label, kind, codec) in tqdm(jobs, desc="tiers", unit="case"):
        values = bf16_values(size, max(4, total // size))
        if kind == "memcpy":
            m = _measure_memcpy(values, repeat)
        elif kind == "lmdb":
            m = _measure_lmdb(values, repeat)
        else:
            m = _measure_store(kind, codec or "raw", values, repeat)
        rows.append({"size": human_size(size), "size_bytes": size, "path": label, **m})
    print_table(rows, ["size", "path", "put_GBps", "get_GBps", "put_ops", "get_ops", "ratio"])

    def fig(path: str, size: int, key: str) -> float:
        return next(r[key] for r in rows if r["path"] == path and r["size_bytes"] == size)

    summary: dict[str, Any] = {}
    for size in SIZES:
        s = human_size(size)
        summary[f"memcpy_{s}_GBps"] = fig("numpy memcpy", size, "get_GBps")
        summary[f"hot_get_{s}_GBps"] = fig("memstore hot", size, "get_GBps")
        summary[f"hot_put_{s}_GBps"] = fig("memstore hot", size, "put_GBps")
        summary[f"warm_get_bf16_{s}_GBps"] = fig("memstore warm (byteplane)", size, "get_GBps")
        summary[f"cold_get_{s}_GBps"] = fig("memstore cold (raw codec)", size, "get_GBps")
        summary[f"lmdb_get_{s}_GBps"] = fig("py-lmdb (raw)", size, "get_GBps")
        summary[f"hot_vs_memcpy_get_{s}"] = summary[f"hot_get_{s}_GBps"] / summary[f"memcpy_{s}_GBps"]
        summary[f"cold_vs_lmdb_get_{s}"] = summary[f"cold_get_{s}_GBps"] / summary[f"lmdb_get_{s}_GBps"]
    summary["warm_bf16_compression_ratio"] = fig("memstore warm (byteplane)", MiB, "ratio")
    summary["targets"] = {
        "hot_vs_memcpy_get_1MiB >= 0.5": summary["hot_vs_memcpy_get_1MiB"] >= 0.5,
        "cold_vs_lmdb_get_1MiB >= 0.8": summary["cold_vs_lmdb_get_1MiB"] >= 0.8,
        "warm_get_bf16_1MiB_GBps >= 1.0": summary["warm_get_bf16_1MiB_GBps"] >= 1.0,
    }
    path = write_result(
        "tiers", rows, summary, args=args, config={"quick": args.quick, "bytes_per_case": total}
    )
    _plot(rows, path.with_suffix(".png"))
    print(
        f"\nhot get 1MiB = {summary['hot_vs_memcpy_get_1MiB']:.2f}x memcpy; "
        f"cold get 1MiB = {summary['cold_vs_lmdb_get_1MiB']:.2f}x py-lmdb; "
        f"warm bf16 get 1MiB = {summary['warm_get_bf16_1MiB_GBps']:.2f} GB/s"
    )
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key in zip(axes, ("get_GBps", "put_GBps"), strict=True):
        for label, _, _ in PATHS:
            pts = [(r["size_bytes"], r[key]) for r in rows if r["path"] == label]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(SIZES, [human_size(s) for s in SIZES])
        ax.set_title(key.replace("_GBps", " GB/s"))
        ax.set_xlabel("value size")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GB/s (median)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
