"""Benchmarks end to end, small: `python bench/run.py replay` on a small Mooncake-format trace (the JSON
holds every policy and OPT at every capacity, best_policy and the bounds; the PNG is drawn), and the
`--quick` runs of the benchmarks that need no peer outside the test extra. Every result file is
strict JSON (no NaN)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import hiding
from tests.redis_cluster import require_redis

ROOT = Path(__file__).resolve().parent.parent


def _strict(text: str) -> dict[str, Any]:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    doc: dict[str, Any] = json.loads(text, parse_constant=refuse)
    assert {"benchmark", "commit", "machine", "date", "summary", "rows"} <= doc.keys()
    return doc


def _bench(*args: str, tmpdir: Path | None = None) -> str:
    env = {**os.environ, **({"TMPDIR": str(tmpdir)} if tmpdir else {})}
    run = subprocess.run(
        [sys.executable, "bench/run.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _write_trace(path: Path, rng: random.Random) -> None:
    """Conversations over a shared first block: each turn repeats the last one's prompt and adds to it."""
    conversations: list[list[int]] = []
    next_id = 1
    lines = []
    for i in range(600):
        if conversations and rng.random() < 0.5:
            chain = rng.choice(conversations)
        else:
            chain = [0]
            conversations.append(chain)
        new = rng.randrange(1, 4)
        chain.extend(range(next_id, next_id + new))
        next_id += new
        tokens = 512 * (len(chain) - 1) + rng.randrange(1, 513)  # the last block is partial
        lines.append(
            {
                "timestamp": i * 500,
                "input_length": tokens,
                "output_length": rng.randrange(1, 800),
                "hash_ids": list(chain),
            }
        )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_replay_benchmark_writes_its_summary_and_plot(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    _write_trace(trace, random.Random(7))
    out = tmp_path / "replay.json"
    _bench("replay", "--trace", str(trace), "--capacity", "0.05,0.2", "--json", str(out))
    doc = _strict(out.read_text())
    summary = doc["summary"]
    from memstore.policy import POLICIES

    for frac in ("0.05", "0.2"):
        for policy in [*POLICIES, "opt"]:
            assert 0 <= summary[f"{policy}@{frac}"] <= 1
        for bound in ("lru+oracle-admission", "prefix-gd+oracle-admission", "class-ttl"):
            assert 0 <= summary["bounds"][f"{bound}@{frac}"] <= 1
    assert summary["best_policy"] in POLICIES
    assert summary["requests"] == 600
    # OPT maximises block hits: no policy gets more at the same capacity
    for frac in (0.05, 0.2):
        rows = [r for r in doc["rows"] if r["capacity"] == frac]
        opt = next(r["block_hit_ratio"] for r in rows if r["policy"] == "opt")
        assert all(r["block_hit_ratio"] <= opt + 1e-12 for r in rows)
        assert all(0 <= r["hits_after_miss"] <= 1 for r in rows)
    # a bigger cache never hits less under OPT
    assert summary["opt@0.2"] >= summary["opt@0.05"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    # a slice of the trace's requests
    half = tmp_path / "half.json"
    _bench("replay", "--trace", str(trace), "--requests", "300:", "--capacity", "0.1", "--json", str(half))
    doc = _strict(half.read_text())
    assert doc["summary"]["requests"] == 300 and doc["config"]["requests"] == "300:"


def test_a_conversation_stays_on_its_host_and_the_pool_serves_a_prefix_computed_elsewhere() -> None:
    from bench.replay_hosts import LRUPool, replay_hosts, route
    from memstore.policy import make_policy
    from memstore.replay import BlockCache, Request

    trace = [Request(0, 4 * 512, (1, 2, 3, 4)), Request(1, 2 * 512, (9,)), Request(2, 4 * 512, (1, 2, 3, 4))]
    conv = [Request(i, 1024, (i % 3, 100 + i % 3)) for i in range(9)]  # 3 conversations, 3 turns each
    hosts = route(conv, 2, "conversation")
    assert hosts[:3] == [0, 1, 0] and hosts[3:6] == hosts[:3] and hosts[6:] == hosts[:3]
    assert route(conv, 2, "random") == route(conv, 2, "random")  # seeded

    def run(pool: LRUPool | None) -> dict[str, float]:
        caches = [BlockCache(make_policy("lru", 8), 8) for _ in range(2)]
        return replay_hosts(trace, [0, 1, 1], caches, pool, 512)

    alone = run(None)  # host 1 never saw request 0's blocks: nothing to hit
    assert alone == {"hit_ratio": 0.0, "local": 0.0, "pool": 0.0}
    pooled = run(LRUPool(16))  # the third request finds all 4 blocks host 0 computed, in the pool
    assert pooled["pool"] == pytest.approx(4 * 512 / (10 * 512)) and pooled["local"] == 0
    small = run(LRUPool(1))  # a pool of one block keeps the last published (9): no leading hit
    assert small["hit_ratio"] == 0.0


def test_replay_over_hosts_writes_both_settings_at_the_same_bytes(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    _write_trace(trace, random.Random(3))
    out = tmp_path / "hosts.json"
    _bench("replay", "--trace", str(trace), "--hosts", "3", "--capacity", "0.1,0.3", "--json", str(out))
    doc = _strict(out.read_text())
    rows = doc["rows"]
    assert {(r["routing"], r["setting"]) for r in rows} == {
        (routing, setting) for routing in ("conversation", "random") for setting in ("no pool", "pool")
    }
    for r in rows:  # every setting has the fleet's bytes, no more
        assert 3 * r["blocks_per_host"] + r["pool_blocks"] <= r["fleet_blocks"]
        assert r["hit_ratio"] == pytest.approx(r["from_host"] + r["from_pool"])
        if r["setting"] == "no pool":
            assert r["pool_blocks"] == 0 and r["from_pool"] == 0
    summary = doc["summary"]
    assert summary["hosts"] == 3 and 0 <= summary["pool_random@0.3"] <= 1
    assert any(r["from_pool"] > 0 for r in rows if r["routing"] == "random")
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_tiers_benchmark_quick_leaves_the_committed_results_alone(tmp_path: Path) -> None:
    committed = [ROOT / "bench" / "results" / f"tiers.{ext}" for ext in ("json", "png")]
    before = [p.read_bytes() if p.exists() else None for p in committed]
    printed = _bench("tiers", "--quick", tmpdir=tmp_path)  # neither --save nor --json: a scratch copy
    assert [p.read_bytes() if p.exists() else None for p in committed] == before
    out = tmp_path / "memstore-bench" / "tiers.json"
    assert f"wrote {out}" in printed and "--save writes the committed bench/results/tiers.json" in printed
    summary = _strict(out.read_text())["summary"]
    for size in ("16KiB", "256KiB"):
        for figure in ("memcpy", "hot_get", "hot_put", "cold_get", "lmdb_get"):
            assert summary[f"{figure}_{size}_GBps"] > 0
        assert summary[f"hot_vs_memcpy_get_{size}"] == pytest.approx(
            summary[f"hot_get_{size}_GBps"] / summary[f"memcpy_{size}_GBps"]
        )
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_memory_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    _bench("memory", "--quick", "--json", str(out))
    summary = _strict(out.read_text())["summary"]
    assert summary["memstore_in_process_10k_search_p50_ms"] > 0
    assert summary["memstore_grpc_10k_bulk_put_per_s"] > 0
    assert summary["numpy_brute_force_10k_bulk_put_per_s"] is None  # nothing to put: null, not NaN


def test_pool_benchmark_quick(tmp_path: Path) -> None:
    """A second server's reads from the pool return every value as put, and the pool holds bf16 KV
    in fewer bytes than the raw values redis-py stores."""
    require_redis()
    out = tmp_path / "pool.json"
    _bench("pool", "--quick", "--json", str(out))
    doc = _strict(out.read_text())
    summary = doc["summary"]
    assert summary["wrong_values"] == 0 and all(r["wrong_values"] == 0 for r in doc["rows"])
    assert [(r["size"], r["values_per_call"]) for r in doc["rows"]] == [
        ("256KiB", 1),
        ("1MiB", 1),
        ("4MiB", 1),
        ("1MiB", 32),
    ]
    assert summary["pool_saving_bf16"] > 1.3
    assert summary["pool_fetch_vs_direct_32x1MiB"] == pytest.approx(
        summary["pool_fetch_32x1MiB_GBps"] / summary["redis_direct_32x1MiB_GBps"]
    )
    assert summary["lookup_items_per_s"] > 0 and summary["publish_1MiB_GBps"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_the_shipped_trace_is_the_published_one() -> None:
    import hashlib
    import lzma

    from bench.replay import DEFAULT_TRACE
    from memstore.replay import load_trace

    with lzma.open(DEFAULT_TRACE) as f:
        assert hashlib.sha256(f.read()).hexdigest().startswith("b8cbb061a85206d7")  # bench/traces/README.md
    trace = load_trace(str(DEFAULT_TRACE))
    assert len(trace) == 12031 and sum(len(r.hash_ids) for r in trace) == 288500


def test_without_the_bench_extra_the_runner_says_how_to_get_it(tmp_path: Path) -> None:
    env = {**os.environ, **hiding(tmp_path, "tqdm", "matplotlib")}  # only the Quickstart installed
    run = subprocess.run(
        [sys.executable, "bench/run.py", "--help"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "bench/run.py: tqdm, matplotlib missing: the benchmarks need the bench extra, "
        "python3 -m pip install -e '.[bench]'"
    ]
