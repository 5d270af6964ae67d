"""The pool next to Redis itself, in one run, on a real Redis Cluster of three primaries on this machine.

Server A publishes bf16 KV values (real K/V of all-MiniLM-L6-v2, ``bench/kvdata.py``) into the pool;
server B, which has never seen them, serves them to a client on its host, fetching each from the pool
(one pipelined round trip per batch), checking it and placing it in its own tiers. Next to it, redis-py's
cluster client reads the same values, stored raw, straight from the same cluster. Every value is read
once: a second read would come from B's own tiers. Also: how fast A's publications reach the pool
against redis-py writing the raw values, lookups of keys only the pool holds against pipelined
``EXISTS``, and the bytes the pool holds against the raw values.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.cluster import redis_cluster
from bench.common import KiB, MiB, human_size, median, print_table, write_result
from bench.kvdata import minilm_kv
from bench.peers import MemstoreServer
from memstore import Client

SIZES = [256 * KiB, MiB, 4 * MiB]
BATCH = 32  # values of 1 MiB in one get_many / one pipeline
LOOKUP = 32  # keys per lookup
SINGLES = 8  # one-value calls per round
PACE = 32 * MiB  # bytes put before waiting for their publication


def _values(source: np.ndarray, size: int, count: int, salt: int) -> list[np.ndarray]:
    """``count`` distinct bf16 values of ``size`` bytes, cut from the K/V at different offsets."""
    n = size // 2
    out = []
    for i in range(count):
        start = (salt * 7919 + i * 104_729) % (source.size - n)
        out.append(np.ascontiguousarray(source[start : start + n]))
    return out


def _published(client: Client, count: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pool = client.stats()["pool"]
        if pool["published"] >= count or time.monotonic() > deadline:
            return pool
        time.sleep(0.01)


class _Case:
    """One value size: published through A, read through B and straight from the cluster, each value once."""

    def __init__(self, a: Client, b: Client, direct: Any, size: int, per_call: int) -> None:
        self.a, self.b, self.direct = a, b, direct
        self.size, self.per_call = size, per_call
        self.ns = f"bench-{human_size(size)}-{per_call}"
        for c in (a, b):
            c.create_namespace(self.ns, value_dtype="<u2", value_shape=(size // 2,), shared=True)

    def publish(self, values: list[np.ndarray]) -> tuple[float, float, int]:
        """A's publication rate and redis-py's SET rate (bytes/s) for the same raw values, and the bytes
        the pool holds for them."""
        keys = [b"v%d" % i for i in range(len(values))]
        before = self.a.stats()["pool"]
        t0 = time.perf_counter()
        step = max(1, min(BATCH, PACE // self.size))  # the publication queue (64 MiB) never overflows
        for i in range(0, len(keys), step):
            self.a.put_many(list(zip(keys[i : i + step], values[i : i + step], strict=True)), ns=self.ns)
            after = _published(self.a, before["published"] + min(i + step, len(keys)))
        ours = len(keys) * self.size / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, len(keys), BATCH):
            pipe = self.direct.pipeline(transaction=False)
            for k, v in zip(keys[i : i + BATCH], values[i : i + BATCH], strict=True):
                pipe.set(self.ns.encode() + b":" + k, v.tobytes())
            pipe.execute()
        theirs = len(keys) * self.size / (time.perf_counter() - t0)
        return ours, theirs, int(after["bytes"] - before["bytes"])

    def fetch(self, values: list[np.ndarray], first: int) -> tuple[float, float, int]:
        """Bytes/s reading values first.. through B, and straight from the cluster (``per_call`` values
        per call); wrong values."""
        keys = [b"v%d" % (first + i) for i in range(len(values))]
        calls = [keys[i : i + self.per_call] for i in range(0, len(keys), self.per_call)]
        t0 = time.perf_counter()
        got = [g for call in calls for g in self.b.get_many(call, ns=self.ns)]
        ours = len(keys) * self.size / (time.perf_counter() - t0)
        wrong = sum(g is None or not np.array_equal(g, v) for g, v in zip(got, values, strict=True))
        prefix = self.ns.encode() + b":"
        t0 = time.perf_counter()
        found = []
        for call in calls:
            if len(call) == 1:
                found.append(self.direct.get(prefix + call[0]))
                continue
            pipe = self.direct.pipeline(transaction=False)
            for k in call:
                pipe.get(prefix + k)
            found += pipe.execute()
        theirs = len(keys) * self.size / (time.perf_counter() - t0)
        wrong += sum(f is None or len(f) != self.size for f in found)
        return ours, theirs, wrong


def _lookups(b: Client, direct: Any, ns: str, count: int, rounds: int) -> tuple[list[float], list[float]]:
    """Items/s of B's lookup of ``LOOKUP`` keys only the pool holds (each batch once: a lookup brings its
    leading run home) and of pipelined EXISTS of the same keys straight from the cluster."""
    ours, theirs = [], []
    for r in range(rounds):
        keys = [b"v%d" % (count + r * LOOKUP + i) for i in range(LOOKUP)]
        t0 = time.perf_counter()
        tiers = b.tiers(keys, ns=ns)
        ours.append(LOOKUP / (time.perf_counter() - t0))
        if tiers != ["pool"] * LOOKUP:
            raise AssertionError(f"lookup through B answered {tiers}")
        pipe = direct.pipeline(transaction=False)
        for k in keys:
            pipe.exists(ns.encode() + b":" + k)
        t0 = time.perf_counter()
        found = pipe.execute()
        theirs.append(LOOKUP / (time.perf_counter() - t0))
        if found != [1] * LOOKUP:
            raise AssertionError("the raw copies are missing")
    return ours, theirs


def run(args: argparse.Namespace) -> dict[str, Any]:
    from redis.cluster import ClusterNode, RedisCluster

    rounds = 3 if args.quick else 7
    source = minilm_kv(512)[1].reshape(-1)
    cases = [(s, 1) for s in SIZES] + [(MiB, BATCH)]  # (value size, values per call)
    rows: list[dict[str, Any]] = []
    loads: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp,
        redis_cluster(Path(tmp) / "redis", 3, maxmemory="2gb") as cluster,
    ):
        pool = ("--pool", cluster.url)
        with (
            MemstoreServer(unix=True, extra=pool) as server_a,
            MemstoreServer(unix=True, hot="2GiB", warm="1GiB", extra=pool) as server_b,
            Client(server_a.target) as a,
            Client(server_b.target) as b,
        ):
            direct = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster.ports])
            lookup_case = None
            for size, per_call in tqdm(cases, desc="pool", unit="case"):
                case = _Case(a, b, direct, size, per_call)
                per_round = per_call * (1 if per_call > 1 else SINGLES)
                extra = rounds * LOOKUP if per_call == BATCH else 0  # looked up, never fetched
                count = max(rounds * per_round + extra, BATCH)
                values = _values(source, size, count, salt=size + per_round)
                pub_ours, pub_theirs, pool_bytes = case.publish(values)
                fetched, direct_read, wrong = [], [], 0
                for r in range(rounds):
                    part = values[r * per_round : (r + 1) * per_round]
                    ours, theirs, bad = case.fetch(part, r * per_round)
                    fetched.append(ours)
                    direct_read.append(theirs)
                    wrong += bad
                    loads.append(os.getloadavg()[0])
                if per_call == BATCH:
                    lookup_case = case
                raw = count * size
                rows.append(
                    {
                        "size": human_size(size),
                        "size_bytes": size,
                        "values_per_call": per_call,
                        "memstore_fetch_GBps": median(fetched) / 1e9,
                        "redis_direct_GBps": median(direct_read) / 1e9,
                        "ratio": median(fetched) / median(direct_read),
                        "publish_GBps": pub_ours / 1e9,
                        "redis_set_GBps": pub_theirs / 1e9,
                        "pool_saving": raw / max(1, pool_bytes),
                        "wrong_values": wrong,
                        "rounds": rounds,
                    }
                )
            assert lookup_case is not None
            ours, theirs = _lookups(b, direct, lookup_case.ns, rounds * BATCH, rounds)
            direct.close()
    summary = _summary(rows, ours, theirs, loads)
    print_table(
        rows,
        [
            "size",
            "values_per_call",
            "memstore_fetch_GBps",
            "redis_direct_GBps",
            "ratio",
            "publish_GBps",
            "redis_set_GBps",
            "pool_saving",
            "wrong_values",
        ],
    )
    print(
        f"\nlookup of {LOOKUP} pool-only keys through B: {summary['lookup_items_per_s']:,.0f} items/s; "
        f"pipelined EXISTS: {summary['redis_exists_items_per_s']:,.0f} items/s "
        f"(ratio {summary['lookup_vs_exists']:.2f})"
    )
    load = summary["load_average_1m"]
    print(f"load average during the fetches: median {load:.2f} on {os.cpu_count()} cores")
    path = write_result(
        "pool",
        rows,
        summary,
        args=args,
        config={"quick": args.quick, "rounds": rounds, "batch": BATCH, "lookup_keys": LOOKUP},
    )
    _plot(rows, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _summary(
    rows: list[dict[str, Any]], ours: list[float], theirs: list[float], loads: list[float]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for r in rows:
        tag = r["size"] if r["values_per_call"] == 1 else f"{r['values_per_call']}x{r['size']}"
        summary[f"pool_fetch_{tag}_GBps"] = r["memstore_fetch_GBps"]
        summary[f"redis_direct_{tag}_GBps"] = r["redis_direct_GBps"]
        summary[f"pool_fetch_vs_direct_{tag}"] = r["ratio"]
    one = next(r for r in rows if r["size"] == "1MiB" and r["values_per_call"] == 1)
    summary["publish_1MiB_GBps"] = one["publish_GBps"]
    summary["redis_set_1MiB_GBps"] = one["redis_set_GBps"]
    summary["pool_saving_bf16"] = median([r["pool_saving"] for r in rows])
    summary["lookup_items_per_s"] = median(ours)
    summary["redis_exists_items_per_s"] = median(theirs)
    summary["lookup_vs_exists"] = median(ours) / median(theirs)
    summary["wrong_values"] = sum(r["wrong_values"] for r in rows)
    summary["load_average_1m"] = median(loads)
    summary["targets"] = {
        "pool fetch >= 0.8x direct read (every case)": all(r["ratio"] >= 0.8 for r in rows),
        "pool saving >= 1.45x on bf16 KV": summary["pool_saving_bf16"] >= 1.45,
    }
    return summary


def _plot(rows: list[dict[str, Any]], out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["size"] if r["values_per_call"] == 1 else f"{r['values_per_call']}x{r['size']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [r["memstore_fetch_GBps"] for r in rows], 0.4, label="through memstore B (pool)")
    ax.bar(x + 0.2, [r["redis_direct_GBps"] for r in rows], 0.4, label="redis-py, straight from the cluster")
    ax.set_xticks(x, labels)
    ax.set_ylabel("GB/s of values (median)")
    ax.set_title("A value read from the pool by a second host")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
