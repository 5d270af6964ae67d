"""A real Redis Cluster: ``redis-server`` processes on loopback ports (each with an LRU ``maxmemory``),
joined with ``redis-cli --cluster create``, stopped by PID. The pool benchmark and the tests use it."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def _free_ports(n: int) -> list[int]:
    # Cluster nodes also listen on port + 10000 (the bus): pick ports whose bus port is free too.
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@dataclass
class Cluster:
    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30
        )
        return out.stdout

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now."""
        return [p for p in self.procs if "role:master" in self.cli(p, "info", "replication")]

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def redis_cluster(
    tmp: Path, primaries: int = 3, replicas: int = 0, maxmemory: str = "256mb"
) -> Iterator[Cluster]:
    """A cluster of ``primaries`` primaries, each with ``replicas`` replicas (a dead primary's replica
    takes over within about two seconds)."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        raise RuntimeError("redis-server and redis-cli not found: apt-get install redis-server")
    cluster = Cluster(_free_ports(primaries * (1 + replicas)))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for port in cluster.ports:
            cluster.procs[port] = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--dir", str(tmp),
                    "--save", "",
                    "--appendonly", "no",
                    "--maxmemory", maxmemory,
                    "--maxmemory-policy", "allkeys-lru",
                    "--cluster-node-timeout", "2000",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in cluster.ports:
            _wait(lambda port=port: cluster.cli(port, "ping").strip() == "PONG")
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.ports)]  # noqa: RUF005
            + ["--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: " + created.stdout + created.stderr)
        for port in cluster.ports:
            _wait(lambda port=port: "cluster_state:ok" in cluster.cli(port, "cluster", "info"))
        if replicas:  # replicas attach after the create; one that never synced cannot take over

            def synced() -> bool:
                roles = [cluster.cli(p, "info", "replication") for p in cluster.ports]
                linked = sum("master_link_status:up" in r for r in roles)
                return linked == primaries * replicas

            _wait(synced)
        yield cluster
    finally:
        for proc in cluster.procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def _wait(ready: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("the Redis cluster did not come up")
