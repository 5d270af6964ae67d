"""Defaults in one place, each with the reason for its value."""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30

DEFAULTS: dict[str, object] = {
    # Hot tier: uncompressed, in shared memory. Big enough for a few requests' KV on a laptop.
    "hot_bytes": 256 * MiB,
    # Warm tier: compressed records in process memory.
    "warm_bytes": 512 * MiB,
    # Cold tier: the LMDB map size of a new store (an existing one keeps its own unless told otherwise).
    "cold_bytes": 4 * GiB,
    # Eviction order of every tier. prefix-gd keeps the most prefixes of KV blocks in the replays (see
    # README, "Eviction, admission, prefetch"), at byte budgets through the real store too; for keys
    # put without parents every key is a leaf, and it is a scan-resistant probation + GreedyDual.
    "policy": "prefix-gd",
    # Byte-plane zstd: about 1.45x on bf16 KV, falls back to zstd-1 for bytes.
    "warm_codec": "byteplane",
    "cold_codec": "byteplane",
}

# Keys: LMDB allows 511 bytes; the namespace prefix takes up to 65 of them.
MAX_KEY_BYTES = 400
MAX_NAMESPACE_CHARS = 64
# Share of the LMDB map that records may use: the rest is B-tree pages and copy-on-write room.
COLD_FILL = 0.85
COLD_RESERVED = 1 * MiB
