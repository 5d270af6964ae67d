"""One hammering process for tests/test_hammer.py: four threads put and read a few shared keys with
self-describing values while filler puts push them down the tiers and reads pull them back up.

Prints one JSON line: reads, writes, inconsistent reads (bytes that no single put wrote), errors.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np

from memstore import Client

HOT_KEYS = [b"shared-%d" % i for i in range(4)]
SIZE = 256 << 10


def make(writer: int, seq: int) -> bytes:
    head = np.array([writer, seq], dtype="<u8").tobytes()
    body = ((np.arange(SIZE, dtype=np.uint64) * (2 * writer + 1) + seq) % 251).astype(np.uint8)
    return head + body.tobytes()


def consistent(value: bytes) -> bool:
    writer, seq = np.frombuffer(value[:16], dtype="<u8")
    return len(value) == 16 + SIZE and value == make(int(writer), int(seq))


def main() -> None:
    target, proc, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    counts = {"reads": 0, "writes": 0, "inconsistent": 0, "errors": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def work(thread: int) -> None:
        writer = proc * 4 + thread
        rng = np.random.default_rng(writer)
        seq = 0
        with Client(target) as c:
            while time.monotonic() < end:
                seq += 1
                key = HOT_KEYS[int(rng.integers(len(HOT_KEYS)))]
                try:
                    if seq % 10 == 0:  # a burst larger than the hot tier pushes every key down
                        c.put_many([(b"filler-%d-%d" % (writer, i), make(writer, seq)) for i in range(40)])
                        n_writes, bad = 40, 0
                    elif seq % 3 == 0:
                        c.put(key, make(writer, seq))
                        n_writes, bad = 1, 0
                    else:
                        got = c.get_many(HOT_KEYS)  # promotes what was pushed down
                        bad = sum(1 for v in got if v is not None and not consistent(bytes(v)))
                        n_writes = 0
                    with lock:
                        counts["writes"] += n_writes
                        counts["reads"] += 0 if n_writes else len(HOT_KEYS)
                        counts["inconsistent"] += bad
                except Exception as exc:  # counted and reported: the test asserts there are none
                    with lock:
                        counts["errors"] += 1
                    print(f"error: {exc!r}", file=sys.stderr)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
