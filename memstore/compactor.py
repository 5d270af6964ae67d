"""Background compression of warm records.

A hot victim moves to warm raw (a copy out of the arena, under the store's lock, so eviction stays
memcpy-fast); the compactor encodes it with its namespace's warm codec on its own thread, outside the
lock, and swaps the compressed record in only if the raw one it read is still current: a put, delete
or move meanwhile always wins.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from memstore.namespace import Namespaces
from memstore.record import RecordMeta, parse_record
from memstore.warm import WarmEntry, WarmTier


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
        self._queue: deque[bytes] = deque()
        self._busy = 0  # entries taken off the queue whose compression has not landed yet
        self._cond = threading.Condition(lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(target=self._loop, name="memstore-compactor", daemon=True)
            self._thread.start()

    def enqueue(self, fk: bytes) -> None:
        if self._thread is not None:
            self._queue.append(fk)
            self._cond.notify()

    def idle(self) -> bool:
        """Nothing queued and nothing being compressed (what ``flush`` waits for)."""
        return not self._queue and not self._busy

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
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                fk = self._queue.popleft()
                w = self.warm.get(fk)
                if w is None or w.compressed:
                    continue
                ns = self.namespaces.by_prefix[fk[: 1 + fk[0]]]
                self._busy += 1  # flush() waits for this one too
            record = None
            try:
                _, payload = parse_record(w.record)
                record = self.encode(ns.warm_codec, payload, w.meta)
            except self._poison:
                pass  # left uncompressed: the reader or the demotion that finds it quarantines it
            finally:
                with self._cond:
                    self._busy -= 1
                    if record is not None and self.warm.get(fk) is w:
                        self.warm.replace(fk, WarmEntry(record, w.meta, w.clean, compressed=True))
