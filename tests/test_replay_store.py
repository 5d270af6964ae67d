"""The store replay (``bench/replay_store.py``) counts as the block replay does: with compression off and
a byte budget of exactly N blocks, a real store under LRU or prefix-gd serves the same prefix tokens as
the simulated cache of N blocks."""

from __future__ import annotations

import itertools
import random

import numpy as np

from bench.replay_store import Blocks, map_for, replay_store
from memstore import TieredStore
from memstore.replay import Request, replay


def _trace(seed: int) -> list[Request]:
    rng = random.Random(seed)
    heads = [rng.randrange(1000) for _ in range(6)]
    out = []
    for i in range(80):
        head = rng.choice(heads)
        tail = [head * 10 + rng.randrange(3) for _ in range(rng.randint(0, 2))]
        ids = (head, *tail)
        out.append(Request(float(i), 512 * len(ids), ids))
    return out


def test_store_replay_matches_the_block_replay(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # blocks of 256 KiB, so that several of them are well above the smallest LMDB map the store makes
    blocks = Blocks((np.arange(2 * 8 * 128 * 64) % 65536).astype(np.uint16).reshape(1, 2, 8, 128, 64))
    probe_path = str(tmp_path / "probe")
    with TieredStore(probe_path, hot_bytes=0, warm_bytes=0, cold_bytes=map_for(4 << 20)) as probe:
        probe.create_namespace("kv", warm_codec="raw", cold_codec="raw")
        probe.put(b"%016x" % 1, blocks(1), ns="kv")
        cost = probe.stats()["cold"]["bytes"]  # what one block takes of the cold budget
    for seed, policy in itertools.product(range(3), ("lru", "prefix-gd")):
        trace = _trace(seed)
        path = str(tmp_path / f"s{seed}-{policy}")
        with TieredStore(path, hot_bytes=0, warm_bytes=0, cold_bytes=map_for(8 * cost), policy=policy) as s:
            fits = s.stats()["cold"]["capacity_bytes"] // cost  # as many whole blocks as the budget holds
            got = replay_store(trace, s, "raw", blocks, block_tokens=512, promote=False)
            assert s.stats()["cold"]["items"] == fits
        # the store is not told which blocks the request holds: the block replay without that pin
        expected = replay(trace, policy, fits, block_tokens=512, pin_in_use=False)
        assert 0 < expected.prefix_tokens < expected.total_tokens
        assert (got["prefix_tokens"], got["total_tokens"]) == (expected.prefix_tokens, expected.total_tokens)
