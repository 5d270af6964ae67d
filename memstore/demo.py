"""A short tour of the library: ``python -m memstore.demo [PATH]``."""

from __future__ import annotations

import sys
import tempfile

import numpy as np

from memstore import TieredStore


def _same(store: TieredStore, key: bytes, want: np.ndarray) -> bool:
    got = store.get(key)
    return got is not None and bool(np.array_equal(got, want))


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="memstore-demo-")
    rng = np.random.default_rng(0)
    blocks = {b"block-%d" % i: rng.standard_normal((2, 8, 512, 64)).astype(np.float16) for i in range(64)}
    with TieredStore(path, hot_bytes=16 << 20, warm_bytes=32 << 20, cold_bytes=1 << 30) as store:
        store.put_many(blocks)
        assert all(_same(store, k, v) for k, v in blocks.items())
        store.flush()
        stats = store.stats()
    print(f"stored {len(blocks)} KV blocks of {blocks[b'block-0'].nbytes >> 10} KiB in {path}")
    for tier in ("hot", "warm", "cold"):
        s = stats[tier]
        ratio = f"{s['compression_ratio']:.2f}x" if s["compression_ratio"] else "-"
        print(f"  {tier:5} items={s['items']:4} bytes={s['bytes']:>11,} ratio={ratio}")
    with TieredStore(path, hot_bytes=16 << 20, warm_bytes=32 << 20, cold_bytes=1 << 30) as store:
        ok = all(_same(store, k, v) for k, v in blocks.items())
    print(f"reopened: all blocks intact = {ok}")


if __name__ == "__main__":
    main()
