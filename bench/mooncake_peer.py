"""Mooncake Store as an optional peer: its master (with the built-in HTTP metadata server), one storage
process that holds the memory segment, and a client in this process that holds none, so every get and
put crosses TCP through Mooncake's transfer engine, as from another host.

``pip install mooncake-transfer-engine-non-cuda`` (which needs Debian's ``libibverbs1``). Where it is
not installed or does not start, ``MooncakePeer`` raises ``Unavailable`` with the reason, which the
benchmarks print and record instead of a figure.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

from bench.peers import free_port

STORAGE = """
import sys, time
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
rc = s.setup("127.0.0.1", sys.argv[1], int(sys.argv[3]), 16 << 20, "tcp", "", sys.argv[2])
print("ready" if rc == 0 else f"setup failed: {rc}", flush=True)
time.sleep(86400)
"""


class Unavailable(RuntimeError):
    """Mooncake Store cannot run here; the message says why."""


class MooncakePeer:
    def __init__(self, segment_bytes: int = 2 << 30, buffer_bytes: int = 512 << 20) -> None:
        try:
            from mooncake.store import MooncakeDistributedStore
        except Exception as exc:  # not installed, or its libraries (libibverbs) missing
            raise Unavailable(
                f"mooncake is not importable ({exc}): pip install mooncake-transfer-engine-non-cuda"
            ) from None
        master = shutil.which("mooncake_master")
        if master is None:
            raise Unavailable("the mooncake_master command is not on PATH")
        self.procs: list[subprocess.Popen[Any]] = []
        http, rpc, metrics = free_port(), free_port(), free_port()
        self.metadata = f"http://127.0.0.1:{http}/metadata"
        self.master = f"127.0.0.1:{rpc}"
        try:
            self.procs.append(
                subprocess.Popen(
                    [
                        master,
                        "--enable_http_metadata_server=true",
                        f"--http_metadata_server_port={http}",
                        f"--rpc_port={rpc}",
                        f"--metrics_port={metrics}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            time.sleep(1.5)  # the master has no readiness probe; the storage setup below retries
            storage = subprocess.Popen(
                [sys.executable, "-c", STORAGE, self.metadata, self.master, str(segment_bytes)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self.procs.append(storage)
            line = storage.stdout.readline().strip() if storage.stdout else ""
            if line != "ready":
                raise Unavailable(f"Mooncake's storage process did not start: {line or 'no answer'}")
            self.store = MooncakeDistributedStore()
            rc = self.store.setup("127.0.0.1", self.metadata, 0, buffer_bytes, "tcp", "", self.master)
            if rc != 0:
                raise Unavailable(f"the Mooncake client's setup returned {rc}")
        except BaseException:
            self.close()
            raise

    def get(self, key: bytes) -> bytes:
        return self.store.get(key.decode())  # type: ignore[no-any-return]

    def put(self, key: bytes, value: Any) -> None:
        # Mooncake's put of a key that exists writes nothing: upsert replaces, as SET does.
        if self.store.upsert(key.decode(), value) != 0:
            raise RuntimeError("mooncake upsert failed")

    def get_many(self, keys: list[bytes]) -> list[bytes]:
        return self.store.get_batch([k.decode() for k in keys])  # type: ignore[no-any-return]

    def put_many(self, items: list[tuple[bytes, Any]]) -> None:
        for k, v in items:
            self.put(k, v)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if hasattr(self, "store"):
                self.store.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def __enter__(self) -> MooncakePeer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
