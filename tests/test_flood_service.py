"""Many clients put 1 MiB values into ``memstore serve`` far past its budgets for 30 s: the server's RSS
stays within 1.25x the budgets plus its baseline (taken after a light warm-up), the excess becomes
eviction (cache class) or RESOURCE_EXHAUSTED (persistent class, once cold is full: the writer deletes its
oldest and goes on without a restart), earlier data stays readable, and health checks answer throughout.

The budgets are a few hundred MiB, as a small real deployment's would be. Requests in flight (eight
1 MiB puts, each copied by gRPC, protobuf and the store, and the cold writer's queue) take a fixed
40-90 MiB whatever the budgets; with budgets of 80 MiB that fixed part alone came near the 1.25x bound
on one machine and passed it on another, while nothing grew with the bytes offered."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter, deque

import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memstore import Client, RemoteError
from tests.conftest import MiB, rss_parts, serve_command, wait_serving

SECONDS = float(os.environ.get("MEMSTORE_FLOOD_SECONDS", "30"))
HOT, WARM, COLD = 32 * MiB, 32 * MiB, 512 * MiB
FIELDS = ("RssAnon", "RssFile", "RssShmem")  # heap, mapped files (the cold tier), the hot arena
CLIENTS, PERSISTENT_CLIENTS = 8, 2


def _light_load(sock: str, n: int, blocks: list[bytes]) -> None:
    with Client(sock, local="never") as c:
        c.put_many([(b"w%d-%d" % (n, i), blocks[i]) for i in range(2)])
        c.delete_many([b"w%d-%d" % (n, i) for i in range(2)])


def test_flood_of_many_clients_against_the_server(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    cmd, sock = serve_command(tmp_path, "--hot-bytes", "32MiB", "--warm-bytes", "32MiB", cold="512MiB")
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    server = psutil.Process(proc.pid)
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    health_failures: list[str] = []
    health_checks = 0
    peak = 0
    peak_parts = dict.fromkeys(FIELDS, 0)
    lock = threading.Lock()
    first_persistent: dict[bytes, bytes] = {}
    resumed: list[bytes] = []
    try:
        wait_serving(sock)
        with Client(sock, local="never") as c:
            c.create_namespace("p", durability="persistent")
        blocks = [np.random.default_rng(seed + n).bytes(MiB) for n in range(8)]
        # Baseline after a light warm-up of the same shape (8 clients, 16 MiB in all, then deleted), so
        # per-thread state (zstd contexts, allocator pools) is in it and the flood measures data only.
        warm_up = [threading.Thread(target=_light_load, args=(sock, n, blocks)) for n in range(CLIENTS)]
        for t in warm_up:
            t.start()
        for t in warm_up:
            t.join(60)
        baseline = server.memory_info().rss
        base_parts = rss_parts(proc.pid, FIELDS)

        def flood(n: int) -> None:
            persistent = n < PERSISTENT_CLIENTS
            ns = "p" if persistent else "default"
            stored: deque[bytes] = deque()  # a persistent writer's keys, oldest first
            deleted = False
            with Client(sock, local="never", retries=0, timeout=30) as c:
                i = 0
                while not stop.is_set():
                    key = b"f%d-%d" % (n, i)
                    value = blocks[i % 8][:-8] + i.to_bytes(8, "little")  # distinct, incompressible
                    try:
                        c.put(key, value, ns=ns)
                        outcome = "OK"
                        if deleted:
                            resumed.append(key)  # a persistent put that went through after a delete
                        if persistent and len(first_persistent) < 8:
                            first_persistent[key] = value  # kept to the end and read back
                        elif persistent:
                            stored.append(key)
                    except RemoteError as exc:
                        outcome = exc.code.name
                        if outcome == "RESOURCE_EXHAUSTED" and stored:  # cold is full: make room, go on
                            c.delete_many([stored.popleft() for _ in range(min(4, len(stored)))], ns=ns)
                            outcome += " then delete"
                            deleted = True
                    with lock:
                        outcomes[outcome] += 1
                    i += 1

        def watch() -> None:
            nonlocal peak, health_checks
            with grpc.insecure_channel(sock) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                while not stop.is_set():
                    peak = max(peak, server.memory_info().rss)
                    for f, now in rss_parts(proc.pid, FIELDS).items():
                        peak_parts[f] = max(peak_parts[f], now)
                    try:
                        answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                        if answer.status != health_pb2.HealthCheckResponse.SERVING:
                            health_failures.append(str(answer.status))
                    except grpc.RpcError as exc:
                        health_failures.append(exc.code().name)
                    health_checks += 1
                    time.sleep(0.1)

        threads = [threading.Thread(target=flood, args=(n,)) for n in range(CLIENTS)]
        threads.append(threading.Thread(target=watch))
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join(60)
        peak = max(peak, server.memory_info().rss)
        with Client(sock, local="never") as c:
            stats = c.stats()
            keys = list(first_persistent)
            assert c.get_many(keys, ns="p") == [first_persistent[k] for k in keys]  # earlier data intact
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
    budgets = HOT + WARM + COLD
    put_bytes = sum(outcomes.values()) * MiB
    print(
        f"{SECONDS:.0f}s, {CLIENTS} clients: {dict(outcomes)}, {put_bytes / MiB:.0f} MiB offered "
        f"({put_bytes / budgets:.1f}x the budgets); server RSS baseline {baseline / MiB:.0f} MiB, "
        f"peak {peak / MiB:.0f} MiB (bound {(baseline + 1.25 * budgets) / MiB:.0f}; growth by part, MiB: "
        f"{ {f: (peak_parts[f] - base_parts[f]) // MiB for f in FIELDS} }); "
        f"{health_checks} health checks, {len(health_failures)} failed; {len(resumed)} persistent puts "
        "went through after a delete"
    )
    assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED then delete"}, outcomes
    assert put_bytes > 2 * budgets, "the flood did not go past the budgets"
    # persistent writers hit the wall, deleted and went on; cache data was evicted from cold
    assert outcomes["RESOURCE_EXHAUSTED then delete"] > 0 and resumed and stats["cold"]["evictions"] > 0
    assert outcomes["OK"] * MiB > 2 * budgets
    assert peak <= baseline + 1.25 * budgets
    assert health_checks > 0 and not health_failures, health_failures
