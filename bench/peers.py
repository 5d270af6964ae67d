"""Peers the benchmarks run next to memstore: a Redis server, and memstore's own server process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Debian's redis-server on 127.0.0.1 and a unix socket, persistence off, stopped by its PID."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.port = free_port()
        self.unix = os.path.join(self.dir, "redis.sock")
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                self.unix,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--maxmemory",
                "0",
                "--proto-max-bulk-len",
                "1gb",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(unix_socket_path=self.unix).ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def client(self, unix: bool = False):  # type: ignore[no-untyped-def]
        import redis

        if unix:
            return redis.Redis(unix_socket_path=self.unix)
        return redis.Redis(host="127.0.0.1", port=self.port)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemstoreServer:
    """``memstore serve`` in its own process, on a TCP port or a unix socket."""

    def __init__(
        self,
        *,
        unix: bool = False,
        hot: str = "1GiB",
        warm: str = "512MiB",
        cold: str = "4GiB",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-memstore-")
        self.target = f"unix:{self.dir}/memstore.sock" if unix else f"127.0.0.1:{free_port()}"
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memstore.cli",
                "serve",
                "--listen",
                self.target,
                "--data-dir",
                f"{self.dir}/data",
                "--hot-bytes",
                hot,
                "--warm-bytes",
                warm,
                "--cold-bytes",
                cold,
                "--log-level",
                "WARNING",
                *extra,
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with grpc.insecure_channel(self.target) as ch:
                    grpc.channel_ready_future(ch).result(timeout=1)
                break
            except grpc.FutureTimeoutError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("memstore serve did not start") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MemstoreServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
