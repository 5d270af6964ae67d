"""The compactor: warm's raw records are compressed newest first, and none is left raw when more were
queued than its queue holds."""

from __future__ import annotations

import numpy as np

from memstore import compactor
from tests.conftest import MiB, open_store


def _value(i: int) -> bytes:
    """128 KiB that byteplane compresses (smooth bf16-like words)."""
    return ((np.arange(64 * 1024) // 7 + i) % 997).astype(np.uint16).tobytes()


def test_records_that_fell_off_a_full_queue_are_compressed_all_the_same(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(compactor, "QUEUE", 4)
    with open_store(str(tmp_path / "s"), hot_bytes=0, warm_bytes=16 * MiB) as s:
        with s._lock:  # the compactor takes nothing while 20 raw records queue: 16 fall off the queue
            for i in range(20):
                s.put(b"k%d" % i, _value(i))
        s.flush()
        entries = list(s.warm.index.values())
        assert len(entries) == 20 and all(e.compressed for e in entries)
        assert s.stats()["warm"]["compression_ratio"] > 1.2
        assert all(s.get(b"k%d" % i, promote=False) == _value(i) for i in range(20))


def test_the_newest_raw_records_are_compressed_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Under a stream of demotions the oldest raw records are the next to leave warm (and are encoded
    for cold as they leave): the compactor takes the newest first."""
    values = {_value(i): i for i in range(70)}
    order: list[int] = []
    with open_store(str(tmp_path / "s"), hot_bytes=0, warm_bytes=16 * MiB) as s:
        encode = s._compactor.encode

        def noted(codec, payload, meta):  # type: ignore[no-untyped-def]
            order.append(values[bytes(payload)])
            return encode(codec, payload, meta)

        s._compactor.encode = noted
        with s._lock:  # 70 raw records queue while the compactor waits for the lock
            for i in range(70):
                s.put(b"k%d" % i, _value(i))
        s.flush()
        assert all(e.compressed for e in s.warm.index.values())
    batch = compactor.BATCH
    assert sorted(order) == list(range(70))
    assert order[:batch] == list(range(69, 69 - batch, -1))  # one hold of the lock: the newest BATCH
    assert order == sorted(order, reverse=True)
