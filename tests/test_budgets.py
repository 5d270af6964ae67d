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


def test_incompressible_values_are_not_stored_larger_than_they_are(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    # Random bytes do not compress, and a codec frame around them is bigger than they are. The
    # compactor swapped such frames into warm, whose bytes then went past its budget (found by the
    # store model test: 24577 bytes in a 24576-byte warm tier).
    rng = np.random.default_rng(seed)
    value = rng.bytes(3000)
    probe = open_store(
        str(tmp_path / "s"), hot_bytes=0, warm_bytes=1 << 20, cold_bytes=MiB, background_compression=False
    )
    with probe as s:
        s.put(b"probe", value)  # no hot tier: straight to warm, as it is (nothing compresses it here)
        record = s.stats()["warm"]["bytes"]
    with open_store(str(tmp_path / "t"), hot_bytes=0, warm_bytes=record, cold_bytes=MiB) as s:
        s.put(b"k", value)  # fills warm exactly; then the compactor has its go at it
        s.flush()
        st = s.stats()
        assert st["warm"]["items"] == 1
        assert st["warm"]["bytes"] <= st["warm"]["capacity_bytes"]
        assert s.get(b"k", promote=False) == value
    for codec in ("zstd", "byteplane", "int8", "ecq"):  # a frame never makes a value bigger
        with open_store(str(tmp_path / codec), hot_bytes=0, warm_bytes=1 << 20, cold_bytes=MiB) as s:
            s.create_namespace("n", warm_codec=codec)
            s.put(b"k", value, ns="n")
            s.flush()
            assert s.stats()["warm"]["bytes"] <= len(value) + 64, codec
