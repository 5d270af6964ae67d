"""kill -9 in the middle of writes: every acknowledged persistent record survives, nothing is wrong."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from tests.conftest import arena_of, open_store
from tests.crash_writer import value_for

ROUNDS = int(os.environ.get("MEMSTORE_CRASH_ROUNDS", "5"))


def test_kill9_loses_no_acknowledged_persistent_write(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    path = str(tmp_path / "s")
    acked: set[int] = set()
    start = 0
    # the child imports tests.crash_writer from the repository root, and keeps any path it was given
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    for _round in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_writer", path, str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + rng.uniform(0.05, 0.6)
        while time.monotonic() < deadline:
            line = child.stdout.readline().split()
            if line and line[0] == "ack":
                acked.update(range(int(line[1]), int(line[2])))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for line in child.stdout.read().splitlines():  # acks written before the kill count too
            parts = line.split()
            if parts and parts[0] == "ack":
                acked.update(range(int(parts[1]), int(parts[2])))
        dead_arena = arena_of(path)  # the dead child's arena, by its full name
        assert os.path.exists(dead_arena)  # a kill leaves it behind; the next open reclaims it
        t0 = time.monotonic()
        with open_store(path, hot_bytes=256 << 10, warm_bytes=256 << 10) as s:
            assert time.monotonic() - t0 < 30  # reopening never hangs on a dead owner
            s.create_namespace("p", durability="persistent")
            assert not os.path.exists(dead_arena)
            for i in sorted(acked):
                assert s.get(b"p%d" % i, ns="p") == value_for("p", i), f"acknowledged record p{i} lost"
            top = max(acked, default=0) + 20
            for i in range(top):
                got = s.get(b"c%d" % i, promote=False)
                assert got is None or got == value_for("c", i), f"wrong bytes for c{i}"
        start = max(acked, default=0) + 5
    assert len(acked) > 0
