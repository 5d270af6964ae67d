"""Two processes of four threads each hammer a few hot keys through one ``memstore serve`` while
filler puts force demotions and reads force promotions: no read returns bytes no single put wrote,
nothing deadlocks (the processes finish within their time and the server still answers)."""

from __future__ import annotations

import json
import subprocess
import sys

from memstore import Client
from tests.conftest import serve_command, wait_serving

SECONDS = 8.0


def test_two_processes_hammering_hot_keys(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    cmd, target = serve_command(tmp_path)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_serving(target)
        with Client(target, local="never") as probe:
            workers = [
                subprocess.Popen(
                    [sys.executable, "-m", "tests.hammer_worker", target, str(p), str(SECONDS)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for p in range(2)
            ]
            results = []
            for w in workers:
                out, err = w.communicate(timeout=SECONDS + 60)  # a deadlock fails here
                assert w.returncode == 0, err[-2000:]
                results.append(json.loads(out.strip().splitlines()[-1]))
            print(f"hammer: {results}")
            for r in results:
                assert r["errors"] == 0 and r["inconsistent"] == 0
                assert r["reads"] > 0 and r["writes"] > 0
            stats = probe.stats()
            assert (
                stats["hot"]["demotions"] > 0
                and (stats["warm"]["promotions"] + stats["cold"]["promotions"]) > 0
            )
            assert probe.get(b"shared-0") is not None  # still serving
    finally:
        server.terminate()
        server.wait(timeout=30)
