"""Soak for leaks (opt-in: ``python3 -m pytest -m slow tests/test_soak.py``; MEMSTORE_SOAK_SECONDS sets
the length, 120 by default). ``memstore serve`` takes a steady mix of puts, gets, deletes, batch calls,
memory records and short-lived connections; once warmed up its RSS, open files, threads and LMDB reader
slots must stop growing."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time

import numpy as np
import psutil
import pytest

from memstore import Client
from tests.conftest import MiB, rss_bytes, serve_command, wait_serving

SECONDS = float(os.environ.get("MEMSTORE_SOAK_SECONDS", "120"))

pytestmark = pytest.mark.slow


def _traffic(sock: str, n: int, seed: int, stop: threading.Event, errors: list[str]) -> None:
    rng = random.Random(seed + n)
    blob = np.random.default_rng(seed + n).bytes(MiB)
    while not stop.is_set():
        try:  # a fresh connection per burst: connection setup and teardown must not leak either
            with Client(sock, local="never") as c:
                for _ in range(50):
                    i = rng.randrange(400)
                    roll = rng.random()
                    size = rng.choice((100, 4096, 65536, MiB))
                    if roll < 0.4:
                        c.put(b"s%d-%d" % (n, i), blob[:size])
                    elif roll < 0.7:
                        got = c.get(b"s%d-%d" % (n, i))
                        assert got is None or got == blob[: len(got)]
                    elif roll < 0.8:
                        c.delete(b"s%d-%d" % (n, i))
                    elif roll < 0.9:
                        c.put_many([(b"b%d-%d" % (n, j), blob[:4096]) for j in range(i, i + 20)])
                        c.get_many([b"b%d-%d" % (n, j) for j in range(i, i + 20)])
                    else:
                        c.memory.put(["soak"], f"r{n}-{i}", {"note": "x" * rng.randrange(2000)})
                        c.memory.get(["soak"], f"r{n}-{i}")
                        c.memory.delete(["soak"], f"r{n}-{i}", hard=True)  # versions are kept: stay steady
        except Exception as exc:
            errors.append(repr(exc))
            return


def test_soak_for_leaks(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    cmd, sock = serve_command(tmp_path, cold="32MiB")
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    server = psutil.Process(proc.pid)
    stop = threading.Event()
    errors: list[str] = []
    samples: list[tuple[float, int, int, int, int]] = []  # (t, rss, fds, threads, reader slots)
    anon: list[int] = []  # the heap part of RSS (the rest is the LMDB map, the arena and libraries)
    try:
        wait_serving(sock)
        threads = [threading.Thread(target=_traffic, args=(sock, n, seed, stop, errors)) for n in range(4)]
        for t in threads:
            t.start()
        start = time.monotonic()
        with Client(sock, local="never") as probe:
            while time.monotonic() - start < SECONDS and not errors:
                time.sleep(SECONDS / 60)
                readers = probe.stats()["cold"]["reader_slots"]
                samples.append(
                    (
                        time.monotonic() - start,
                        server.memory_info().rss,
                        server.num_fds(),
                        server.num_threads(),
                        readers,
                    )
                )
                anon.append(rss_bytes(proc.pid))
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
    assert not errors, errors[:3]
    warm = samples[len(samples) // 3 :]  # the first third fills the tiers and the pools
    t = np.array([s[0] for s in warm])
    rss = np.array([s[1] for s in warm], dtype=float)
    slope = float(np.polyfit(t, rss, 1)[0]) * 60 / MiB
    print(
        f"{SECONDS:.0f}s soak, {len(samples)} samples: RSS {rss[0] / MiB:.0f} -> {rss[-1] / MiB:.0f} MiB "
        f"(slope {slope:+.2f} MiB/min after warm-up), fds {[s[2] for s in warm][::5]}, "
        f"threads {[s[3] for s in warm][::5]}, LMDB reader slots {[s[4] for s in warm][::5]}; "
        f"anonymous RSS after warm-up min {min(anon[len(anon) // 3 :]) / MiB:.0f} MiB, "
        f"max {max(anon[len(anon) // 3 :]) / MiB:.0f} MiB, last {anon[-1] / MiB:.0f} MiB"
    )
    # Growth after warm-up stays under 2% of the warm RSS over the whole window: a leak of even one
    # small buffer per request would pass that within seconds.
    assert rss.max() - rss[0] <= 0.02 * rss[0] + 4 * MiB
    assert max(s[2] for s in warm) <= warm[0][2] + 4  # file descriptors
    assert max(s[3] for s in warm) <= max(s[3] for s in samples[: len(samples) // 3]) + 2  # threads
    assert max(s[4] for s in samples) <= 64  # reader slots: bounded by threads, not by requests
