"""A full cold tier: persistent puts fail with one clear error, nothing is lost, puts resume after deletes;
every eviction policy works inside the store."""

from __future__ import annotations

import os
import random

import grpc
import pytest

from memstore import Client, PersistentFullError, RemoteError, TieredStore
from memstore.hot import shm_dir
from memstore.policy import POLICIES
from memstore_server import create_server
from tests.conftest import MiB, open_store


def test_persistent_puts_fail_cleanly_when_cold_is_full_and_resume(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    with open_store(str(tmp_path / "s"), hot_bytes=256 << 10, warm_bytes=256 << 10, cold_bytes=1 * MiB) as s:
        s.create_namespace("p", durability="persistent")
        stored = {}
        with pytest.raises(PersistentFullError):
            for i in range(1000):
                v = rng.randbytes(20_000)
                s.put(b"k%d" % i, v, ns="p")
                stored[b"k%d" % i] = v
        assert len(stored) > 5
        s.put(b"cache-item", b"x" * 1000)  # cache data still has somewhere to go (or is dropped)
        for k, v in stored.items():
            assert s.get(k, ns="p") == v  # nothing acknowledged was lost
        for k in list(stored)[:5]:
            assert s.delete(k, ns="p")
        s.put(b"after", b"y" * 20_000, ns="p")  # room again, no restart
        assert s.get(b"after", ns="p") == b"y" * 20_000


def test_a_full_persistent_tier_is_resource_exhausted_over_grpc(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    first = rng.randbytes(20_000)
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=256 << 10, warm_bytes=256 << 10, cold_bytes=1 * MiB, prefault=False
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock")
    try:
        with Client(f"unix:{tmp_path}/m.sock") as c:
            c.create_namespace("p", durability="persistent")
            with pytest.raises(RemoteError) as info:
                c.put(b"k0", first, ns="p")
                for i in range(1, 1000):
                    c.put(b"k%d" % i, rng.randbytes(20_000), ns="p")  # incompressible
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert c.get(b"k0", ns="p") == first  # the server keeps serving, nothing acknowledged lost
    finally:
        running.stop(1)
        store.close()


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_runs_the_store(tmp_path, policy, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    model: dict[bytes, bytes] = {}
    with open_store(
        str(tmp_path / "s"), hot_bytes=128 << 10, warm_bytes=128 << 10, cold_bytes=2 * MiB, policy=policy
    ) as s:  # type: ignore[arg-type]
        for step in range(600):
            k = b"k%d" % rng.randrange(80)
            if rng.random() < 0.5:
                model[k] = rng.randbytes(rng.choice([100, 8000, 30_000]))
                s.put(k, model[k])
            else:
                got = s.get(k)
                assert got is None or got == model.get(k), (policy, step)
        st = s.stats()
        assert st["policy"] == policy
        assert st["hot"]["demotions"] > 0 and st["hot"]["bytes"] <= st["hot"]["capacity_bytes"]
        assert st["cold"]["bytes"] <= st["cold"]["capacity_bytes"]


def test_unknown_policy_names_fail_before_anything_is_created(tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = set(os.listdir(shm_dir()))
    for bad in ({"policy": "nope"}, {"cold_admission": "nope"}):
        with pytest.raises(ValueError, match="nope"):
            open_store(str(tmp_path / "s"), **bad)
    assert set(os.listdir(shm_dir())) <= before  # no arena left behind
