"""The KV-cache layer: key spec golden vectors, identity isolation, one-call prefix operations."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from memstore import Client, RemoteError, TieredStore
from memstore.errors import InvalidValueError
from memstore.kv import KVCache, KVIdentity, block_keys
from memstore_server import create_server
from tests.conftest import MiB

IDENT = KVIdentity(
    model_id="meta-llama/Llama-3.1-8B",
    revision="main",
    num_layers=32,
    num_kv_heads=8,
    head_dim=128,
    kv_dtype="bfloat16",
    block_tokens=4,
)
# Golden vectors: other languages' clients must produce exactly these.
GOLDEN_JSON = (
    '{"adapter_id":"","block_tokens":4,"cache_salt":"","head_dim":128,"kv_dtype":"bfloat16",'
    '"model_id":"meta-llama/Llama-3.1-8B","num_kv_heads":8,"num_layers":32,"pp_rank":0,"pp_size":1,'
    '"revision":"main","tenant":"default","tp_rank":0,"tp_size":1,"weights_digest":""}'
)
GOLDEN_DIGEST = "7031abc6fb4c5fdab64e06f759c746c7451d644ca0541f9c3040739507afb944"
GOLDEN_KEYS = [  # tokens 0..9, blocks of 4: two full blocks, then the partial third
    "14a71d7208e7fbc4adc8aa0653b93056b274d545287e6935f1e708503fb82e30",
    "09c8c3934567d5e1293557412c78d5d8b8422e536afc45a8a87664b6db22ceac",
    "869f07c5338b7a67113d5c708d16ed43bdc60d263cd273b8635d2e39a4fc9d9c",
]
GOLDEN_ZERO_DIGEST_KEY = "97bd0c93e3cfb692ceafba049e313034792b70760e28643187f10ab76e84da5a"


def test_golden_vectors() -> None:
    assert IDENT.canonical_json().decode() == GOLDEN_JSON
    assert IDENT.digest().hex() == GOLDEN_DIGEST
    assert [k.hex() for k in block_keys(IDENT.digest(), range(10), 4, partial=True)] == GOLDEN_KEYS
    assert [k.hex() for k in block_keys(IDENT.digest(), range(10), 4)] == GOLDEN_KEYS[:2]  # full blocks only
    assert block_keys(bytes(32), [1, 2, 3, 4], 4)[0].hex() == GOLDEN_ZERO_DIGEST_KEY


def test_spec_in_plain_hashlib() -> None:
    """The rules written out with hashlib and struct only, as another language would."""
    digest = hashlib.sha256(b"memstore.kv.v1\0" + GOLDEN_JSON.encode()).digest()
    h = hashlib.sha256(b"memstore.kv.v1/root\0" + digest).digest()
    h = hashlib.sha256(h + struct.pack("<4I", 0, 1, 2, 3)).digest()
    assert h.hex() == GOLDEN_KEYS[0]


def test_keys_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from tests.test_kv import IDENT; from memstore.kv import block_keys; "
        "print(block_keys(IDENT.digest(), range(64), 4)[-1].hex())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("0", "1", "12345")
    }
    assert len(outs) == 1


@pytest.mark.parametrize(
    "field,value",
    [
        ("model_id", "other"),
        ("revision", "v2"),
        ("weights_digest", "abc"),
        ("kv_dtype", "float16"),
        ("num_layers", 33),
        ("num_kv_heads", 4),
        ("head_dim", 64),
        ("block_tokens", 8),
        ("tp_rank", 1),
        ("tp_size", 2),
        ("pp_rank", 1),
        ("pp_size", 2),
        ("adapter_id", "lora-1"),
        ("cache_salt", "s"),
        ("tenant", "acme"),
    ],
)
def test_every_identity_field_changes_every_key(field, value) -> None:  # type: ignore[no-untyped-def]
    other = replace(IDENT, **{field: value})
    assert other.digest() != IDENT.digest() and other.namespace != IDENT.namespace
    tokens = list(range(64))
    assert not set(block_keys(other.digest(), tokens, 4)) & set(block_keys(IDENT.digest(), tokens, 4))


def test_bad_tokens_and_identities() -> None:
    with pytest.raises(ValueError):
        block_keys(IDENT.digest(), [-1, 2, 3, 4], 4)
    with pytest.raises(ValueError):
        block_keys(IDENT.digest(), [1 << 32, 2, 3, 4], 4)
    with pytest.raises(ValueError):
        KVIdentity(model_id="m", num_layers=0, num_kv_heads=1, head_dim=1)
    with pytest.raises(ValueError):
        KVIdentity(model_id="m", num_layers=1, num_kv_heads=1, head_dim=1, kv_dtype="float64")


@pytest.fixture
def client(tmp_path):  # type: ignore[no-untyped-def]
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=4 * MiB, warm_bytes=4 * MiB, cold_bytes=256 * MiB, prefault=False
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock")
    with Client(f"unix:{tmp_path}/m.sock") as c:
        yield c
    running.stop(1)
    store.close()


SMALL = KVIdentity(
    model_id="tiny", num_layers=2, num_kv_heads=2, head_dim=8, kv_dtype="float16", block_tokens=4
)


def _blocks(n: int, seed: int, ident: KVIdentity = SMALL) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(ident.block_shape).astype(ident.storage_dtype) for _ in range(n)]


def test_lookup_put_get_prefetch_pin_drop(client, seed) -> None:  # type: ignore[no-untyped-def]
    kv = KVCache(client, SMALL)
    tokens = list(range(100, 122))  # 5 full blocks and 2 tokens
    assert kv.lookup(tokens).blocks == 0
    blocks = _blocks(5, seed)
    assert kv.put_blocks(tokens, blocks[:3]) == 3
    hit = kv.lookup(tokens)
    assert (hit.blocks, hit.tokens, hit.tiers) == (3, 12, ["hot"] * 3)
    got = kv.get_blocks(tokens)
    assert all(np.array_equal(a, b) for a, b in zip(got[:3], blocks, strict=False)) and got[3:] == [
        None,
        None,
    ]
    # only the leading blocks count: a hole stops the prefix
    kv.put_blocks(tokens, blocks[4:5], start=4)
    assert kv.lookup(tokens).blocks == 3
    # a shared first block, then a different continuation: exactly that block hits
    other = tokens[:4] + [7] * 18
    assert kv.lookup(other).blocks == 1
    assert kv.prefetch(tokens) == 4  # the blocks that exist are in hot afterwards
    assert kv.pin(tokens) == 4 and kv.pin(tokens, unpin=True) == 4
    assert kv.drop() == 4
    with pytest.raises(RemoteError):
        kv.lookup(tokens)  # the namespace is gone


def test_blocks_that_do_not_match_the_layout_are_refused(client, seed) -> None:  # type: ignore[no-untyped-def]
    kv = KVCache(client, SMALL)
    tokens = list(range(8))
    wrong = [np.zeros((2, 2, 2, 4, 4), dtype="<f2"), np.zeros(SMALL.block_shape, dtype="<f4"), b"raw bytes"]
    for block in wrong:
        with pytest.raises(RemoteError) as info:
            kv.put_blocks(tokens, [block])
        assert "holds arrays" in str(info.value)
    assert kv.lookup(tokens).blocks == 0


def test_two_identities_never_share_a_block(client, seed) -> None:  # type: ignore[no-untyped-def]
    a = KVCache(client, SMALL)
    b = KVCache(client, replace(SMALL, cache_salt="tenant-b"))
    tokens = list(range(16))
    a.put_blocks(tokens, _blocks(4, seed))
    assert a.lookup(tokens).blocks == 4
    assert b.lookup(tokens).blocks == 0
    assert b.get_blocks(tokens) == [None] * 4


@pytest.mark.parametrize("local", ["never", "always"])
@pytest.mark.parametrize("policy", ["lru", "prefix-lru", "prefix-gd"])
def test_put_blocks_tell_the_store_each_block_s_parent(tmp_path, seed, local, policy) -> None:  # type: ignore[no-untyped-def]
    """Through gRPC and the shared-memory path alike, a prefix-aware policy demotes a chain's tail and
    keeps its head hot (so the next lookup still hits the prefix); LRU takes the head first."""
    ident = KVIdentity(
        model_id="m", num_layers=2, num_kv_heads=4, head_dim=64, kv_dtype="float16", block_tokens=64
    )
    store = TieredStore(
        str(tmp_path / "s"),
        hot_bytes=1 * MiB,
        warm_bytes=8 * MiB,
        cold_bytes=64 * MiB,
        policy=policy,
        prefault=False,
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock")
    try:
        with Client(f"unix:{tmp_path}/m.sock", local=local) as c:
            kv = KVCache(c, ident)
            first, second = list(range(6 * 64)), list(range(10_000, 10_000 + 6 * 64))
            blocks = _blocks(12, seed, ident)  # about 130 kB each: the hot tier holds about seven
            kv.put_blocks(first, blocks[:3])
            kv.put_blocks(first, blocks[3:6], start=3)  # the parent of block 3 comes from the first call
            kv.put_blocks(second, blocks[6:])
            tiers = store.tiers_of(kv.keys(first), ns=kv.ns)
            with pytest.raises(ValueError):
                c.put_many([(b"k", b"v")], parents=[None, None])  # one parent per value
        with pytest.raises(InvalidValueError):
            store.put_many([(b"k", b"v")], parents=[])
        assert "hot" in tiers and tiers != ["hot"] * 6, tiers  # some of the first chain was demoted
        if policy == "lru":
            assert tiers[0] != "hot", tiers  # oldest first: the head goes
        else:
            head = tiers.index(next(t for t in tiers if t != "hot"))
            assert tiers == ["hot"] * head + ["warm"] * (6 - head), tiers  # the tail went, the head stayed
    finally:
        running.stop(1)
        store.close()


def test_the_published_vectors() -> None:
    """docs/kv-keys.json, which other languages' clients check themselves against, is what this
    implementation computes."""
    import json
    from pathlib import Path

    from memstore.kv import STORAGE_DTYPES

    vectors = json.loads((Path(__file__).resolve().parents[1] / "docs" / "kv-keys.json").read_text())
    assert vectors["spec"] == "memstore.kv.v1" and vectors["storage_dtypes"] == STORAGE_DTYPES
    assert len(vectors["cases"]) >= 3
    for case in vectors["cases"]:
        ident = KVIdentity(**case["fields"])
        assert ident.canonical_json().decode() == case["canonical_json"]
        assert json.loads(case["canonical_json"]) == {**vectors["defaults"], **case["fields"]}
        assert ident.digest().hex() == case["identity_digest"]
        assert ident.namespace == case["namespace"]
        assert ident.storage_dtype == case["storage_dtype"]
        assert list(ident.block_shape) == case["block_shape"] and ident.block_bytes == case["block_bytes"]
        for b in case["blocks"]:
            extra = bytes.fromhex(b["extra"])
            n = ident.block_tokens
            keys = block_keys(ident.digest(), b["tokens"], n, extra=extra, partial=b["partial"])
            assert [k.hex() for k in keys] == b["keys"]
