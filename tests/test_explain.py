"""``explain``: what the store knows of a key, for each way a key can be missing, in process, over gRPC
and from the command line; and never across tenants."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from memstore import Client, TieredStore
from memstore.explain import Removals, explain
from memstore.kv import KVCache, KVIdentity
from memstore_server import create_server
from tests.conftest import MiB


def test_each_state_in_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with TieredStore(str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB) as s:
        s.put(b"here", b"v" * 100)
        assert explain(s, b"here").state == "hot"
        got = explain(s, b"never")
        assert got.state == "never_stored" and not got.found and got.seconds_ago is None
        s.put(b"gone", b"v" * 100)
        s.delete(b"gone")
        got = explain(s, b"gone")
        assert (got.state, got.tier) == ("deleted", "hot") and got.seconds_ago is not None
        s.put(b"gone", b"again")  # stored again: the tier answers, not the old removal
        assert explain(s, b"gone").state == "hot"
        s.put(b"bad", b"b" * 1000)
        entry = s.hot.index[b"\x07defaultbad"]
        s.hot.arena.mm[entry.offset + entry.length - 1] ^= 0x01
        assert s.get(b"bad") is None
        got = explain(s, b"bad")
        assert (got.state, got.tier, got.detail) == ("quarantined", "hot", "checksum mismatch")
        assert explain(s, b"k", ns="nosuch").state == "no_namespace"
        s.create_namespace("brief")
        s.put(b"k", b"v", ns="brief")
        s.delete_namespace("brief")
        assert explain(s, b"k", ns="brief").state == "namespace_deleted"
        assert "was deleted" in explain(s, b"k", ns="brief").message()


def test_eviction_names_tier_and_policy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s")
    with TieredStore(path, hot_bytes=0, warm_bytes=0, cold_bytes=4 * MiB, policy="s3fifo") as s:
        s.create_namespace("c", warm_codec="raw", cold_codec="raw")
        for i in range(12):
            s.put(b"k%d" % i, os.urandom(512 << 10), ns="c")
        s.flush()
        states = {i: explain(s, b"k%d" % i, ns="c") for i in range(12)}
        evicted = [i for i, e in states.items() if e.state == "evicted"]
        assert evicted and all(states[i].state == "cold" for i in range(12) if i not in evicted)
        first = states[evicted[0]]
        assert (first.tier, first.policy) == ("cold", "s3fifo")
        assert first.message().startswith("evicted from cold by the s3fifo policy")
        assert len(evicted) == s.stats()["cold"]["evictions"]


def test_the_ring_is_bounded() -> None:
    ring = Removals(capacity=3)
    for i in range(5):
        ring.note(b"k%d" % i, "deleted", "hot")
    assert len(ring) == 3
    assert ring.of(b"k0") is None and ring.of(b"k1") is None
    removal = ring.of(b"k4")
    assert removal is not None and removal.reason == "deleted"


def _identity(**changes: object) -> KVIdentity:
    base: dict[str, object] = {"model_id": "m", "num_layers": 2, "num_kv_heads": 2, "head_dim": 8}
    return KVIdentity(**{**base, **changes})  # type: ignore[arg-type]


def test_a_kv_miss_names_the_identity_fields_that_differ(two_tenants) -> None:  # type: ignore[no-untyped-def]
    target, tokens, _ = two_tenants
    tokens_ids = list(range(64))
    with Client(target, token=tokens["alice"], local="never") as alice:
        writer = KVCache(alice, _identity(revision="r1"))
        shape = writer.identity.block_shape
        blocks = [np.zeros(shape, dtype=np.uint16) for _ in range(4)]
        writer.put_blocks(tokens_ids, blocks)
        assert writer.explain(tokens_ids) is None  # every full block is stored
        reader = KVCache(alice, _identity(revision="r2", tp_size=2))
        got = reader.explain(tokens_ids)
        assert got.state == "never_stored"
        assert got.nearest_namespace == writer.ns
        assert got.differences == {"revision": ("r2", "r1"), "tp_size": (2, 1)}
        assert "revision 'r2' != 'r1'" in got.message()
        alice.put(b"secret", b"alice's")
        assert alice.explain(b"secret").state == "hot"
    with Client(target, token=tokens["bob"], local="never") as bob:
        # bob asks for alice's key and with alice's identity: his own tenant is all he can learn about
        assert bob.explain(b"secret").state == "never_stored"
        got = bob.explain(b"x" * 32, ns=writer.ns, identity=_identity(revision="r2"))
        assert got.state == "no_namespace" and got.nearest_namespace == "" and not got.differences


def test_client_and_cli_answers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = TieredStore(str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB)
    running = create_server(store, "127.0.0.1:0")
    target = f"127.0.0.1:{running.port}"
    try:
        with Client(target, local="never") as c:
            c.create_namespace("n")
            c.put(b"k", b"v", ns="n")
            c.put(b"d", b"v", ns="n")
            c.delete(b"d", ns="n")
            assert c.explain(b"k", ns="n").state == "hot"
            assert c.explain(b"d", ns="n").state == "deleted"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "memstore.cli", "explain", "--target", target, *args]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

        here = cli("--ns", "n", "k")
        assert here.returncode == 0 and here.stdout.strip() == "n/k: in the hot tier"
        gone = cli("--ns", "n", "d")
        assert gone.returncode == 3 and "deleted" in gone.stdout
        hexed = cli("--ns", "n", "--hex", "--json", b"d".hex())
        assert hexed.returncode == 3 and '"state": "deleted"' in hexed.stdout
        bad = cli("--ns", "n", "--hex", "zz")
        assert bad.returncode == 2 and "not hexadecimal" in bad.stderr
    finally:
        running.stop(1)
        store.close()
