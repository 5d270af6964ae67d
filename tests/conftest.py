from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from memstore import TieredStore
from memstore.hot import shm_dir

MiB = 1 << 20


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A per-test seed, printed so a failure can be replayed with MEMSTORE_SEED."""
    value = int(os.environ.get("MEMSTORE_SEED", random.randrange(1 << 30)))
    print(f"seed={value} ({request.node.nodeid})")
    return value


def serve_command(tmp_path: object, *extra: str, cold: str = "256MiB") -> tuple[list[str], str]:
    """The ``memstore serve`` command line of a test server on a unix socket, and its target."""
    import sys

    sock = f"unix:{tmp_path}/serve.sock"
    cmd = [
        sys.executable,
        "-m",
        "memstore.cli",
        "serve",
        "--listen",
        sock,
        "--data-dir",
        f"{tmp_path}/data",
        "--hot-bytes",
        "8MiB",
        "--warm-bytes",
        "8MiB",
        "--cold-bytes",
        cold,
        *extra,
    ]
    return cmd, sock


def wait_serving(target: str, timeout: float = 60, proc: Any = None) -> float:
    """Wait until the server at ``target`` answers a health check with SERVING; returns the seconds taken.
    With ``proc`` (its process), fail at once if it exits first."""
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for {target} exited with {proc.returncode} before it served")
        with grpc.insecure_channel(target) as ch:
            try:
                answer = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - start
            except grpc.RpcError:
                pass
        time.sleep(0.02)
    raise TimeoutError(f"{target} did not answer health checks within {timeout}s")


def wait_published(client: Any, count: int, timeout: float = 30) -> None:
    """Wait until the server behind ``client`` has published ``count`` records to its pool (the
    client's token must see the server's figures)."""
    import time

    deadline = time.monotonic() + timeout
    while client.stats()["pool"]["published"] < count:
        assert time.monotonic() < deadline, client.stats()["pool"]
        time.sleep(0.05)


@contextlib.contextmanager
def served(cmd: list[str], target: str, **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """``memstore serve`` started from ``cmd`` and answering health checks at ``target``; killed on the
    way out if the test has not stopped it (stderr goes nowhere unless ``popen`` says otherwise)."""
    proc = subprocess.Popen(cmd, **{"stderr": subprocess.DEVNULL, **popen})
    try:
        wait_serving(target, proc=proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def hiding(tmp_path: Any, *packages: str) -> dict[str, str]:
    """Environment for a subprocess whose interpreter cannot import ``packages``, as on a machine that
    never installed them (a ``sitecustomize`` on PYTHONPATH refuses them)."""
    hide = os.path.join(str(tmp_path), "hide")
    os.makedirs(hide, exist_ok=True)
    with open(os.path.join(hide, "sitecustomize.py"), "w") as f:
        f.write(
            "import sys\n"
            "class _Hidden:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {packages!r}:\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, _Hidden())\n"
        )
    return {"PYTHONPATH": hide}


def status_of(fn: Any) -> Any:
    """The gRPC status code ``fn()`` ended with, or None when it succeeded."""
    import grpc

    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return None


def rss_parts(pid: int | str = "self", fields: tuple[str, ...] = ("RssAnon",)) -> dict[str, int]:
    """The named resident-set fields of /proc/PID/status, in bytes, from one read of the file."""
    with open(f"/proc/{pid}/status") as f:
        kb = {
            name: rest.split()[0] for name, _, rest in (line.partition(":") for line in f) if name in fields
        }
    return {name: int(kb[name]) * 1024 for name in fields}


def rss_bytes(pid: int | str = "self", fields: tuple[str, ...] = ("RssAnon",)) -> int:
    """The sum of the named resident-set fields of /proc/PID/status, in bytes."""
    return sum(rss_parts(pid, fields).values())


def arena_of(data_dir: object) -> str:
    """The path of the shared-memory arena the store at data_dir last created (named in its owner file,
    after the creating process's pid); a kill leaves it behind until the next open reclaims it."""
    with open(os.path.join(str(data_dir), "hot.segment")) as f:
        return os.path.join(shm_dir(), f.read().strip())


def open_store(path: str, **kw: Any) -> TieredStore:
    opts = {"hot_bytes": 4 * MiB, "warm_bytes": 8 * MiB, "cold_bytes": 64 * MiB, "prefault": False}
    opts.update(kw)
    return TieredStore(path, **opts)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = open_store(str(tmp_path / "store"))
    yield s
    s.close()


@pytest.fixture
def two_tenants(tmp_path: Any) -> Iterator[tuple[str, dict[str, str], TieredStore]]:
    """A server with bearer tokens for tenants "alice" and "bob" (write role): its TCP target, the
    tokens by tenant, and its store."""
    from memstore_server import create_server
    from memstore_server.auth import create_token

    tokens = str(tmp_path / "tokens.jsonl")
    t = {name: create_token(tokens, name, "write") for name in ("alice", "bob")}
    store = TieredStore(str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB)
    running = create_server(store, "127.0.0.1:0", auth_tokens=tokens)
    yield f"127.0.0.1:{running.port}", t, store
    running.stop(1)
    store.close()
