"""``python bench/run.py replay --store``: the trace through a real ``TieredStore``, at byte budgets.

The block replay counts capacity in blocks; what a user pays for is bytes of DRAM and SSD, and
compression and tiers change how many blocks those bytes hold. Here every block of the trace is a real
value: bf16 K/V of the trained all-MiniLM-L6-v2 (``bench/kvdata.py``; each block id gets the fixture
rolled along its tokens, so blocks differ and compress as real KV does), stored in an in-process store
with real LMDB under a scratch dir. A request walks its blocks in order: a block the store holds is read
(``get``), a missing one is computed and put with its predecessor as parent. At the same total bytes:

- ``raw, one tier``: raw values, one tier of all the bytes, LRU: what an engine's CPU offload holds
  (vLLM's offloading connector evicts its CPU blocks by LRU unless told otherwise,
  ``vllm/v1/kv_offload/lru_manager.py``); kept in the cold tier with the raw codec, so its time per
  request is LMDB's, not DRAM's;
- ``memstore defaults``: the bytes split as the default tier sizes are (hot 1 : warm 2 : cold 16),
  byteplane in warm and cold, the default eviction policy;
- ``memstore ecq``: the same split with the lossy ``ecq`` codec in warm and cold.

Figures: token prefix hit ratio (as the block replay counts it), reads served by each tier, and the
store's time per request. Next to them, two bounds from the block replay: OPT at the blocks the raw
tier's bytes hold, and the ceiling, what a cache that never evicts serves (every block's first use is
a miss whatever the store does): a ratio to the raw tier above ``ceiling / raw`` no store can reach.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from memstore import TieredStore, settings
from memstore.cold import cold_budget
from memstore.replay import Request, block_span, replay

HOT, WARM, COLD = 1, 2, 16  # the default tier sizes' proportions (256 MiB, 512 MiB, 4 GiB)
SETTINGS = ("raw, one tier", "memstore defaults", "memstore ecq")


def map_for(record_bytes: int) -> int:
    """The smallest LMDB map whose record budget (``memstore.cold.cold_budget``) is ``record_bytes``."""
    size = int((record_bytes + settings.COLD_RESERVED) / settings.COLD_FILL) + 1
    while size > 4096 and cold_budget(size - 4096) >= record_bytes:  # small maps keep a smaller reserve
        size -= 4096
    return size


def store_for(setting: str, path: str, total: int) -> tuple[TieredStore, str]:
    """A store of ``total`` bytes in all, laid out as ``setting`` says, and its namespace's codec."""
    if setting == "raw, one tier":
        raw = TieredStore(
            path, hot_bytes=0, warm_bytes=0, cold_bytes=map_for(total), prefault=False, policy="lru"
        )
        return raw, "raw"
    share = total / (HOT + WARM + COLD)
    store = TieredStore(
        path,
        hot_bytes=int(HOT * share),
        warm_bytes=int(WARM * share),
        cold_bytes=map_for(int(COLD * share)),
        prefault=False,
    )
    return store, "ecq" if setting == "memstore ecq" else "byteplane"


class Blocks:
    """A value per block id: the fixture rolled by the id along its token axis."""

    def __init__(self, base: np.ndarray) -> None:
        self.base = base
        self.tokens = base.shape[3]

    def __call__(self, h: int) -> np.ndarray:
        return np.ascontiguousarray(np.roll(self.base, h % self.tokens, axis=3))


def replay_store(
    trace: Iterable[Request],
    store: TieredStore,
    codec: str,
    blocks: Blocks,
    *,
    block_tokens: int,
    promote: bool = True,
) -> dict[str, Any]:
    """Walk ``trace`` through ``store``; the figures of one setting."""
    base = blocks.base
    store.create_namespace(
        "kv",
        warm_codec=codec,
        cold_codec=codec,
        value_dtype=base.dtype.str,
        value_shape=base.shape,
    )
    prefix = total = requests = 0
    spent = 0.0
    for req in trace:
        requests += 1
        total += req.input_length
        leading, parent = True, None
        for i, h in enumerate(req.hash_ids):
            key = b"%016x" % h
            start = time.perf_counter()
            found = store.contains(key, ns="kv") and store.get(key, ns="kv", promote=promote) is not None
            spent += time.perf_counter() - start
            if not found:
                value = blocks(h)  # what the engine computes: not the store's time
                start = time.perf_counter()
                store.put_many([(key, value)], ns="kv", parents=[parent])
                spent += time.perf_counter() - start
            if found and leading:
                prefix += block_span(req, i, block_tokens)
            leading = leading and found
            parent = key
    st = store.stats()
    return {
        "prefix_hit_ratio": prefix / max(total, 1),
        "prefix_tokens": prefix,
        "total_tokens": total,
        "reads_hot": st["hot"]["hits"],
        "reads_warm": st["warm"]["hits"],
        "reads_cold": st["cold"]["hits"],
        "ms_per_request": 1000 * spent / max(requests, 1),
        "compression_warm": st["warm"]["compression_ratio"],
        "compression_cold": st["cold"]["compression_ratio"],
    }


def run_store(args: Any, trace: list[Request], distinct: int) -> dict[str, Any]:
    from tqdm import tqdm

    from bench.common import print_table, write_result
    from bench.kvdata import minilm_kv

    _, base = minilm_kv(tokens=128)
    blocks = Blocks(base[:1])  # one layer of MiniLM's K/V per block: (1, 2, 12, 128, 32) bf16, 192 KiB
    block_bytes = blocks.base.nbytes
    fractions = [float(x) for x in args.capacity.split(",")]
    rows: list[dict[str, Any]] = []
    jobs = [(f, s) for f in fractions for s in SETTINGS]
    for frac, setting in tqdm(jobs, desc="store replay", unit="run"):
        total = int(distinct * frac * block_bytes)
        scratch = tempfile.mkdtemp(prefix="memstore-replay-")
        try:
            store, codec = store_for(setting, f"{scratch}/s", total)
            with store:
                r = replay_store(trace, store, codec, blocks, block_tokens=args.block_tokens)
                policy = store.stats()["policy"]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        rows.append(
            {"capacity": frac, "total_MiB": total / (1 << 20), "setting": setting, "policy": policy, **r}
        )
    print_table(
        rows,
        [
            "capacity",
            "total_MiB",
            "setting",
            "policy",
            "prefix_hit_ratio",
            "reads_hot",
            "reads_warm",
            "reads_cold",
            "ms_per_request",
            "compression_cold",
        ],
    )
    ceiling = replay(trace, "lru", distinct + 1, block_tokens=args.block_tokens).prefix_hit_ratio
    summary: dict[str, Any] = {
        "requests": len(trace),
        "distinct_blocks": distinct,
        "block_bytes": block_bytes,
        "ceiling": ceiling,
    }
    for frac in fractions:
        at = {r["setting"]: r["prefix_hit_ratio"] for r in rows if r["capacity"] == frac}
        raw = at["raw, one tier"] or 1e-9
        opt = replay(trace, "opt", max(1, int(distinct * frac)), block_tokens=args.block_tokens)
        summary[f"@{frac:g}"] = {
            "raw": at["raw, one tier"],
            "defaults": at["memstore defaults"],
            "ecq": at["memstore ecq"],
            "defaults_vs_raw": at["memstore defaults"] / raw,
            "ecq_vs_raw": at["memstore ecq"] / raw,
            "opt_at_raw_blocks": opt.prefix_hit_ratio,
            "ceiling_vs_raw": ceiling / raw,
        }
        print(
            f"@{frac:g} of distinct blocks' bytes: raw {at['raw, one tier']:.3f}, defaults "
            f"{at['memstore defaults']:.3f} ({at['memstore defaults'] / raw:.2f}x), ecq "
            f"{at['memstore ecq']:.3f} ({at['memstore ecq'] / raw:.2f}x); OPT at raw's blocks "
            f"{opt.prefix_hit_ratio:.3f}, ceiling {ceiling:.3f} ({ceiling / raw:.2f}x)"
        )
    name = "replay-store" + (f"-requests-{args.requests.replace(':', '-')}" if args.requests else "")
    path = write_result(
        name,
        rows,
        summary,
        args=args,
        config={
            "quick": args.quick,
            "capacity": fractions,
            "requests": args.requests,
            "block": list(base[:1].shape),
        },
    )
    _plot(rows, ceiling, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return summary


def _plot(rows: list[dict[str, Any]], ceiling: float, out: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for setting in SETTINGS:
        pts = sorted((r["total_MiB"], r["prefix_hit_ratio"]) for r in rows if r["setting"] == setting)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=setting)
    ax.axhline(ceiling, color="grey", linestyle="--", label="ceiling (a cache that never evicts)")
    ax.set_xscale("log")
    ax.set_ylim(0, ceiling * 1.25)
    ax.set_xlabel("total bytes of the store (MiB)")
    ax.set_ylabel("token prefix hit ratio")
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
