"""Restoring into torch tensors: the CPU path here; the CUDA path runs where a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest

from memstore import Client, TieredStore
from memstore_server import create_server
from tests.conftest import MiB

torch = pytest.importorskip("torch", reason="torch is optional; memstore works without it")


@pytest.fixture
def target(tmp_path):  # type: ignore[no-untyped-def]
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=16 * MiB, warm_bytes=16 * MiB, cold_bytes=128 * MiB, prefault=False
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock")
    yield f"unix:{tmp_path}/m.sock"
    running.stop(1)
    store.close()


@pytest.mark.parametrize("local", ["always", "never"])
def test_load_into_cpu_tensors(target, local, seed) -> None:  # type: ignore[no-untyped-def]
    from memstore.gpu import load_into_tensors

    rng = np.random.default_rng(seed)
    blocks = [(rng.standard_normal((2, 4, 64, 32)) * 3).astype(np.float16) for _ in range(6)]
    with Client(target, local=local) as c:
        c.put_many([(b"b%d" % i, b) for i, b in enumerate(blocks)])
        outs = [torch.empty(2, 4, 64, 32, dtype=torch.float16) for _ in blocks] + [torch.empty(4)]
        sizes = load_into_tensors(c, [b"b%d" % i for i in range(6)] + [b"missing"], outs)
        assert sizes == [b.nbytes for b in blocks] + [None]
        for b, t in zip(blocks, outs, strict=False):
            assert np.array_equal(t.numpy(), b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pinned,verify", [(True, True), (False, True), (True, False)])
def test_load_into_cuda_tensors(target, seed, pinned, verify) -> None:  # type: ignore[no-untyped-def]
    from memstore.gpu import load_into_tensors

    rng = np.random.default_rng(seed)
    blocks = [rng.integers(0, 1 << 16, size=(8, 1024), dtype=np.uint16) for _ in range(8)]
    with Client(target, local="always") as c:
        c.put_many([(b"g%d" % i, b) for i, b in enumerate(blocks)])
        outs = [torch.empty(8, 1024, dtype=torch.int16, device="cuda") for _ in blocks]
        sizes = load_into_tensors(c, [b"g%d" % i for i in range(8)], outs, pinned=pinned, verify=verify)
        assert sizes == [blocks[0].nbytes] * 8
        for b, t in zip(blocks, outs, strict=True):
            assert np.array_equal(t.cpu().numpy().view(np.uint16), b)
