"""Child process for the crash tests: writes records and acknowledges each on stdout."""

from __future__ import annotations

import hashlib
import sys

from memstore import TieredStore


def value_for(ns: str, i: int, size: int = 3000) -> bytes:
    seed = hashlib.sha256(f"{ns}:{i}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    with TieredStore(
        path, hot_bytes=256 << 10, warm_bytes=256 << 10, cold_bytes=64 << 20, prefault=False
    ) as s:
        s.create_namespace("p", durability="persistent")
        print("ready", flush=True)
        i = start
        while True:
            s.put(b"c%d" % i, value_for("c", i))  # cache class: may be lost, never wrong
            if i % 5 == 0:
                s.put_many([(b"p%d" % j, value_for("p", j)) for j in range(i, i + 5)], ns="p")
                print(f"ack {i} {i + 5}", flush=True)
            i += 1


if __name__ == "__main__":
    main()
