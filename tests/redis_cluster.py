"""The tests' Redis Cluster (``bench/cluster.py``). Tests skip where Debian's redis-server is missing,
except under ``MEMSTORE_REQUIRE_REDIS=1`` (``scripts/test.sh`` installs it and sets that), where they fail."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cluster import Cluster
from bench.cluster import redis_cluster as _start

__all__ = ["Cluster", "redis_cluster", "require_redis"]


def require_redis() -> None:
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    if os.environ.get("MEMSTORE_REQUIRE_REDIS") == "1":
        pytest.fail("redis-server is required here (apt-get install redis-server)")
    pytest.skip("needs Debian's redis-server (apt-get install redis-server)")


@contextlib.contextmanager
def redis_cluster(tmp: Path, primaries: int = 3, replicas: int = 0) -> Iterator[Cluster]:
    """A cluster of ``primaries`` primaries, each with ``replicas`` replicas (a dead primary's replica
    takes over within about two seconds)."""
    require_redis()
    with _start(tmp, primaries, replicas) as cluster:
        yield cluster
