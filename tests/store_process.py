"""A TieredStore in a child process, driven over a pipe, that a test can kill -9 between or during calls.

Children fork from a forkserver that has memstore imported already, so a crash-and-restart step costs
milliseconds and a property test can take many of them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from memstore import TieredStore

_ctx = multiprocessing.get_context("forkserver")
_ctx.set_forkserver_preload(["memstore", "tests.store_process"])


def _serve(conn: Connection, path: str, opts: dict[str, Any]) -> None:
    store = TieredStore(path, **opts)
    conn.send((True, None))
    while True:
        method, args, kw = conn.recv()
        try:
            conn.send((True, getattr(store, method)(*args, **kw)))
        except Exception as exc:  # the caller re-raises it
            conn.send((False, exc))
        if method == "close":
            return


class StoreProcess:
    def __init__(self, path: str, **opts: Any) -> None:
        self._conn, child = _ctx.Pipe()
        self._proc = _ctx.Process(target=_serve, args=(child, path, opts), daemon=True)
        self._proc.start()
        child.close()
        self._answer()

    def _answer(self) -> Any:
        ok, value = self._conn.recv()
        if not ok:
            raise value
        return value

    def call(self, method: str, *args: Any, **kw: Any) -> Any:
        self._conn.send((method, args, kw))
        return self._answer()

    def send_and_kill(self, delay: float, method: str, *args: Any, **kw: Any) -> None:
        """Start a call and kill the process ``delay`` seconds later: the call may or may not have run."""
        self._conn.send((method, args, kw))
        time.sleep(delay)
        self.kill()

    def kill(self) -> None:
        assert self._proc.pid is not None
        os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.join()
        self._conn.close()

    def close(self) -> None:
        self.call("close")
        self._proc.join()
        self._conn.close()
