"""A flood of puts far over every budget keeps memory bounded and turns the excess into eviction."""

from __future__ import annotations

import os

import numpy as np

from tests.conftest import MiB, open_store, rss_bytes


def _rss_anon_shmem() -> int:
    return rss_bytes("self", ("RssAnon", "RssShmem"))


def test_flood_stays_within_budgets(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    hot, warm, cold = 8 * MiB, 16 * MiB, 64 * MiB
    rng = np.random.default_rng(seed)
    blocks = [rng.bytes(MiB) for _ in range(8)]  # reused so the test itself does not grow
    with open_store(str(tmp_path / "s"), hot_bytes=hot, warm_bytes=warm, cold_bytes=cold, prefault=True) as s:
        for i in range(20):  # warm up allocator pools before the baseline
            s.put(b"w%d" % i, blocks[i % 8])
        base = _rss_anon_shmem()
        peak = base
        total = 0
        for i in range(400):
            s.put(b"k%d" % i, blocks[i % 8][:-1] + bytes([i % 256]))
            total += MiB
            if i % 20 == 0:
                peak = max(peak, _rss_anon_shmem())
        s.flush()
        peak = max(peak, _rss_anon_shmem())
        st = s.stats()
        assert total > 3 * (hot + warm + cold)
        # Warm is the only tier that grows in process memory (hot is preallocated, cold is a file);
        # the writer's queue is bounded at 8 MiB for this warm size. 48 MiB covers interpreter noise.
        print(f"rss growth {(peak - base) / MiB:.1f} MiB")
        assert peak - base <= warm + 8 * MiB + 48 * MiB, (peak - base) / MiB
        assert st["cold"]["bytes"] <= st["cold"]["capacity_bytes"]
        assert st["cold"]["evictions"] > 0
        assert os.path.getsize(tmp_path / "s" / "cold" / "data.mdb") <= cold
        assert st["hot"]["items"] + st["warm"]["items"] + st["cold"]["items"] < 100
        # The newest values are still there and intact.
        assert s.get(b"k399") == blocks[399 % 8][:-1] + bytes([399 % 256])
