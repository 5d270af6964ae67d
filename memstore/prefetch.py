"""Prefetch: promoting keys toward the hot tier ahead of their get, on bounded background workers.

Modes (as SGLang HiCache names them): ``wait_complete`` returns once every key was handled;
``best_effort`` returns at once (the work is queued, or dropped when the queue is full);
``timeout`` waits at most the given seconds and returns with whatever was done. Every prefetch is a
``PrefetchTask`` that can be cancelled; a cancelled task stops before its next key.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Literal

Mode = Literal["wait_complete", "best_effort", "timeout"]
MODES = ("wait_complete", "best_effort", "timeout")


class PrefetchTask:
    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys
        self.promoted = 0
        self.handled = 0
        self.dropped = False
        self._cancelled = threading.Event()
        self._done = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _finish(self) -> None:
        self._done.set()


class Prefetcher:
    """A bounded queue of prefetch tasks served by a few daemon threads."""

    def __init__(self, promote: Callable[[bytes], bool], *, workers: int = 2, max_queued: int = 64) -> None:
        self._promote = promote
        self._queue: deque[PrefetchTask] = deque()
        self._cond = threading.Condition()
        self._max_queued = max_queued
        self._stopping = False
        self.dropped = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"memstore-prefetch-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(
        self, keys: list[bytes], mode: Mode = "wait_complete", timeout: float | None = None
    ) -> PrefetchTask:
        if mode not in MODES:
            raise ValueError(f"prefetch mode is one of {MODES}, not {mode!r}")
        task = PrefetchTask(keys)
        with self._cond:
            if self._stopping or (mode == "best_effort" and len(self._queue) >= self._max_queued):
                task.dropped = True
                self.dropped += 1
                task._finish()
                return task
            self._queue.append(task)
            self._cond.notify()
        if mode == "wait_complete":
            task.wait()
        elif mode == "timeout":
            task.wait(timeout if timeout is not None else 0.0)
        return task

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._queue:
                    return
                task = self._queue.popleft()
            try:
                for key in task.keys:
                    if task.cancelled:
                        break
                    with contextlib.suppress(Exception):  # a failing key must not stop the worker
                        task.promoted += self._promote(key)
                    task.handled += 1
            finally:
                task._finish()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            for task in self._queue:
                task.cancel()
            self._cond.notify_all()
        for t in self._threads:
            t.join()
