"""Background compression of warm records.

A hot victim moves to warm raw (a copy out of the arena, under the store's lock, so eviction stays
memcpy-fast); the compactor encodes it with its namespace's warm codec on its own thread, outside the
lock, and swaps the compressed record in only if the raw one it read is still current: a put, delete
or move meanwhile always wins.

Newest first, ``BATCH`` records per hold of the lock: under a stream of demotions the oldest raw
records are the next to leave warm, and a raw record that leaves is encoded for cold by its demotion
anyway, so the compactor spends its time where the encoding lands and is kept (a compressed record
goes down to cold as it is when the codecs match). The queue holds at most ``QUEUE`` keys, dropping
its oldest; once it runs dry after dropping any, the compactor looks over warm for raw records left.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from memstore.namespace import Namespaces
from memstore.record import RecordMeta, parse_record
from memstore.warm import WarmEntry, WarmTier

BATCH = 32  # records encoded per hold of the store's lock to take them and one to land them
QUEUE = 1 << 16  # keys queued at most


class Compactor:
    """One thread compressing the raw records queued in warm; ``enqueue`` and ``idle`` need the lock."""

    def __init__(
        self,
        lock: threading.RLock,
        warm: WarmTier,
        namespaces: Namespaces,
        encode: Callable[[str, memoryview, RecordMeta], bytes],
        poison: tuple[type[BaseException], ...],
        *,
        enabled: bool = True,
    ) -> None:
        self.warm = warm
        self.namespaces = namespaces
        self.encode = encode
        self._poison = poison
        self._queue: deque[bytes] = deque(maxlen=QUEUE)  # newest at the right
        self._dropped = False  # keys fell off the queue's old end: warm may hold raw records unqueued
        self._busy = 0  # entries taken off the queue whose compression has not landed yet
        self._cond = threading.Condition(lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(target=self._loop, name="memstore-compactor", daemon=True)
            self._thread.start()

    def enqueue(self, fk: bytes) -> None:
        if self._thread is not None:
            self._dropped = self._dropped or len(self._queue) == QUEUE
            self._queue.append(fk)
            self._cond.notify()

    def idle(self) -> bool:
        """Nothing queued or left to look for, and nothing being compressed (what ``flush`` waits for)."""
        return not self._queue and not self._dropped and not self._busy

    def wait_idle(self) -> None:
        """Wait until nothing is queued or being compressed (the caller holds no lock)."""
        while True:
            with self._cond:
                if self.idle():
                    return
            time.sleep(0.001)

    def close(self) -> None:
        """Stop the thread; records still queued stay raw (the caller holds no lock)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._dropped and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                if not self._queue:  # the queue dropped keys and has run dry: what is still raw
                    raw = [fk for fk, w in self.warm.index.items() if not w.compressed]
                    self._dropped = len(raw) > QUEUE
                    self._queue.extend(raw)
                    continue
                batch = self._take()
                self._busy += len(batch)  # flush() waits for these too
            done = []
            try:
                for fk, w, codec in batch:
                    try:
                        _, payload = parse_record(w.record)
                        done.append((fk, w, self.encode(codec, payload, w.meta)))
                    except self._poison:
                        pass  # left uncompressed: the reader or the demotion that finds it quarantines it
            finally:
                with self._cond:
                    self._busy -= len(batch)
                    for fk, w, record in done:
                        if self.warm.get(fk) is w:
                            self.warm.replace(fk, WarmEntry(record, w.meta, w.clean, compressed=True))

    def _take(self) -> list[tuple[bytes, WarmEntry, str]]:
        """Up to BATCH queued records still raw in warm, with their codecs (the caller holds the lock).
        One hold of the lock takes many: a store busy with puts leaves the lock free only now and then."""
        batch: list[tuple[bytes, WarmEntry, str]] = []
        while self._queue and len(batch) < BATCH:
            fk = self._queue.pop()  # the newest
            w = self.warm.get(fk)
            if w is not None and not w.compressed:
                batch.append((fk, w, self.namespaces.by_prefix[fk[: 1 + fk[0]]].warm_codec))
        return batch
