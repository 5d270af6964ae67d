from __future__ import annotations

import os
import random

import pytest

from memstore import TieredStore

MiB = 1 << 20


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A per-test seed, printed so a failure can be replayed with MEMSTORE_SEED."""
    value = int(os.environ.get("MEMSTORE_SEED", random.randrange(1 << 30)))
    print(f"seed={value} ({request.node.nodeid})")
    return value


def open_store(path: str, **kw: int) -> TieredStore:
    opts = {"hot_bytes": 4 * MiB, "warm_bytes": 8 * MiB, "cold_bytes": 64 * MiB, "prefault": False}
    opts.update(kw)
    return TieredStore(path, **opts)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = open_store(str(tmp_path / "store"))
    yield s
    s.close()
