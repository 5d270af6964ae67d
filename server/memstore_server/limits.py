"""Per-call resource limits: bytes held for requests, concurrent bulk streams, and idle streams.

- ``ByteBudget``: the bytes of values received and not yet handed to the store, per call and over the
  whole server. Memory for a value grows with the bytes that arrived, never with what a message
  declares; a piece that would pass either limit ends its call with RESOURCE_EXHAUSTED.
- ``StreamSlots``: at most N bulk streams (Put, Get) run at once, N below the worker count, so health,
  Stats and the other control calls always find a worker; more are refused with RESOURCE_EXHAUSTED.
- ``Watchdog``: a stream that moves no message for ``idle`` seconds (a writer that stops sending, a
  reader that stops reading, so its worker is stuck behind flow control) is cancelled and its worker
  freed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from memstore_server.errors import Abort

log = logging.getLogger("memstore.server")


def bulk_streams_for(workers: int) -> int:
    """Bulk streams a server of ``workers`` threads takes at once: a quarter (at least 2) stay free."""
    return max(1, workers - max(2, workers // 4))


class ByteBudget:
    """Bytes held for requests in flight over the whole server."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._lock = threading.Lock()

    def call(self, per_call: int) -> CallBytes:
        return CallBytes(self, per_call)

    def _take(self, n: int) -> bool:
        with self._lock:
            if self.held + n > self.total:
                return False
            self.held += n
            return True

    def _give(self, n: int) -> None:
        with self._lock:
            self.held -= n


class CallBytes:
    """One call's share of a ``ByteBudget``: ``take`` as bytes arrive, ``release`` once they are stored."""

    def __init__(self, budget: ByteBudget, limit: int) -> None:
        self.budget, self.limit, self.held = budget, limit, 0

    def take(self, n: int) -> None:
        if self.held + n > self.limit:
            raise Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this call would hold {self.held + n} bytes of values, over the per-call limit of "
                f"{self.limit}: send fewer or smaller values per call",
            )
        if not self.budget._take(n):
            raise Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server holds {self.budget.total} bytes of values in flight, its limit: retry later",
            )
        self.held += n

    def release(self) -> None:
        self.budget._give(self.held)
        self.held = 0


class StreamSlots:
    """A cap on concurrent bulk streams, refused at once (no queue) beyond it."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.active = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self.active >= self.limit:
                raise Abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self.limit} bulk streams are running, the most this server takes at once: retry later",
                )
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1


class Watchdog:
    """Cancels calls whose stream made no progress for ``idle`` seconds."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self._calls: dict[int, list[Any]] = {}  # id -> [context, last progress]
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memstore-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def watch(self, context: grpc.ServicerContext) -> Iterator[Progress]:
        ident = next(self._ids)
        entry = [context, time.monotonic()]
        with self._lock:
            self._calls[ident] = entry
        try:
            yield Progress(entry)
        finally:
            with self._lock:
                self._calls.pop(ident, None)

    def _run(self) -> None:
        tick = max(0.05, min(1.0, self.idle / 4))
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                stalled = [e for e in self._calls.values() if now - e[1] > self.idle]
                for e in stalled:
                    e[1] = float("inf")  # cancelled once
            for context, _ in stalled:
                log.info("cancelling a stream idle for more than %.1fs", self.idle)
                context.cancel()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Progress:
    """Handed to a stream handler: ``touch()`` whenever a message moves."""

    __slots__ = ("_entry",)

    def __init__(self, entry: list[Any]) -> None:
        self._entry = entry

    def touch(self) -> None:
        if self._entry[1] != float("inf"):
            self._entry[1] = time.monotonic()
