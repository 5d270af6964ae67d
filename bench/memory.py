"""Agent memory: put and search throughput and latency with 384-dimensional embeddings, in-process and
over gRPC, next to a plain numpy brute-force search and LangGraph's ``InMemoryStore`` in the same run."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import print_table, write_result
from bench.peers import MemstoreServer
from memstore import Client, TieredStore
from memstore.memory import MemoryStore

DIM = 384


def _latency(fn: Callable[[int], Any], n: int) -> tuple[float, float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e3, times[int(0.99 * (len(times) - 1))] * 1e3


def _bulk(put_many: Callable[[list[dict[str, Any]]], Any], vecs: np.ndarray, batch: int = 1000) -> float:
    t0 = time.perf_counter()
    for b in range(0, len(vecs), batch):
        put_many(
            [
                {
                    "namespace": (f"u{i % 16}", "facts"),
                    "key": f"k{i}",
                    "embedding": vecs[i],
                    "metadata": {"i": i},
                }
                for i in range(b, min(b + batch, len(vecs)))
            ]
        )
    return len(vecs) / (time.perf_counter() - t0)


def _row(
    system: str, n: int, put_rate: float, put_lat: tuple[float, float], search_lat: tuple[float, float]
) -> dict[str, Any]:
    return {
        "system": system,
        "records": n,
        "bulk_put_per_s": put_rate,
        "put_p50_ms": put_lat[0],
        "put_p99_ms": put_lat[1],
        "search_p50_ms": search_lat[0],
        "search_p99_ms": search_lat[1],
    }


def _one_size(n: int, rng: np.random.Generator, queries: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    qs = rng.standard_normal((queries, DIM)).astype(np.float32)
    extra = rng.standard_normal((queries, DIM)).astype(np.float32)

    # numpy brute force: the floor for an exact search
    norms = np.linalg.norm(vecs, axis=1)

    def brute(i: int) -> Any:
        s = vecs @ qs[i] / (norms * np.linalg.norm(qs[i]))
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])]

    rows.append(
        _row("numpy brute force", n, float("nan"), (float("nan"), float("nan")), _latency(brute, queries))
    )

    # memstore in-process
    path = tempfile.mkdtemp(prefix="bench-memory-")
    try:
        store = TieredStore(
            path, hot_bytes=512 << 20, warm_bytes=256 << 20, cold_bytes=4 << 30, prefault=False
        )
        mem = MemoryStore(store, sweep_interval=None)
        rate = _bulk(mem.put_many, vecs)
        put_lat = _latency(lambda i: mem.put(("u0", "new"), f"x{i}", embedding=extra[i]), queries)
        search_lat = _latency(lambda i: mem.search((), vector=qs[i], top_k=10), queries)
        rows.append(_row("memstore in-process", n, rate, put_lat, search_lat))
        mem.close()
        store.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)

    # memstore over gRPC (its own server process)
    with (
        MemstoreServer(unix=True, hot="512MiB", warm="256MiB", cold="4GiB") as srv,
        Client(srv.target) as c,
    ):
        rate = _bulk(c.memory.put_many, vecs)
        put_lat = _latency(lambda i: c.memory.put(("u0", "new"), f"x{i}", embedding=extra[i]), queries)
        search_lat = _latency(lambda i: c.memory.search((), vector=qs[i], top_k=10), queries)
        rows.append(_row("memstore gRPC", n, rate, put_lat, search_lat))

    # LangGraph's InMemoryStore with an index whose "embedding" looks up the same vectors
    from langgraph.store.memory import InMemoryStore

    table = {f"k{i}": vecs[i] for i in range(n)} | {f"q{i}": qs[i] for i in range(queries)}
    table |= {f"x{i}": extra[i] for i in range(queries)}
    lg = InMemoryStore(
        index={"dims": DIM, "embed": lambda texts: [table[t].tolist() for t in texts], "fields": ["text"]}
    )
    t0 = time.perf_counter()
    for b in range(0, n, 1000):
        from langgraph.store.base import PutOp

        lg.batch(
            [
                PutOp((f"u{i % 16}", "facts"), f"k{i}", {"text": f"k{i}", "i": i})
                for i in range(b, min(b + 1000, n))
            ]
        )
    rate = n / (time.perf_counter() - t0)
    put_lat = _latency(lambda i: lg.put(("u0", "new"), f"x{i}", {"text": f"x{i}"}), queries)
    search_lat = _latency(lambda i: lg.search((), query=f"q{i}", limit=10), queries)
    rows.append(_row("langgraph InMemoryStore", n, rate, put_lat, search_lat))
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [10_000] if args.quick else [10_000, 100_000]
    queries = 50 if args.quick else 200
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for n in tqdm(sizes, desc="memory", unit="size"):
        rows += _one_size(n, rng, queries)
    print_table(
        rows,
        ["system", "records", "bulk_put_per_s", "put_p50_ms", "put_p99_ms", "search_p50_ms", "search_p99_ms"],
    )
    summary: dict[str, Any] = {}
    for r in rows:
        tag = r["system"].replace(" ", "_").replace("-", "_").lower() + f"_{r['records'] // 1000}k"
        summary[f"{tag}_search_p50_ms"] = r["search_p50_ms"]
        summary[f"{tag}_bulk_put_per_s"] = r["bulk_put_per_s"]
    top = max(sizes) // 1000
    summary["targets"] = {
        f"in-process search p50 at {top}k <= 10 ms": summary[f"memstore_in_process_{top}k_search_p50_ms"]
        <= 10
    }
    path = write_result("memory", rows, summary, args=args, config={"quick": args.quick, "dim": DIM})
    print(f"wrote {path}")
    return summary
