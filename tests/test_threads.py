"""Many threads at once, with budgets small enough that every operation moves data between tiers."""

from __future__ import annotations

import hashlib
import random
import threading

from tests.conftest import open_store


def _value(key: bytes, version: int, size: int) -> bytes:
    head = key + b"|%d|" % version
    body = random.Random(hashlib.sha256(head).digest()).randbytes(size)  # incompressible, reproducible
    return head + body[: max(0, size - len(head))]


def _check(key: bytes, value: bytes) -> None:
    head, _, _ = value.partition(b"|")
    assert head == key, "a value came back under another key"
    version = int(value.split(b"|")[1])
    assert value == _value(key, version, len(value)), "torn or mixed value"


def test_threads_hammering_shared_keys(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    errors: list[BaseException] = []
    with open_store(str(tmp_path / "s"), hot_bytes=256 << 10, warm_bytes=512 << 10, cold_bytes=8 << 20) as s:
        s.create_namespace("p", durability="persistent")
        persistent_last: dict[bytes, bytes] = {}
        plock = threading.Lock()

        def worker(n: int) -> None:
            rng = random.Random(seed + n)
            try:
                for step in range(400):
                    key = b"k%d" % rng.randrange(60)
                    op = rng.random()
                    if op < 0.4:
                        s.put(key, _value(key, step, rng.choice([100, 5000, 40_000])))
                    elif op < 0.8:
                        got = s.get(key, promote=rng.random() < 0.8)
                        if got is not None:
                            _check(key, got)
                    elif op < 0.85:
                        s.delete(key)
                    elif op < 0.95:
                        pkey = b"p%d-%d" % (n, rng.randrange(4))  # each thread owns its persistent keys
                        v = _value(pkey, step, 3000)
                        s.put(pkey, v, ns="p")
                        with plock:
                            persistent_last[pkey] = v
                    else:
                        s.stats()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "deadlock: a worker never finished"
        assert not errors, errors[0]
        for pkey, v in persistent_last.items():
            assert s.get(pkey, ns="p") == v
        st = s.stats()
        assert st["hot"]["demotions"] > 0 and st["warm"]["demotions"] > 0
        assert sum(st[t]["checksum_failures"] for t in ("hot", "warm", "cold")) == 0
