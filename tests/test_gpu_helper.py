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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("verify", [True, False])
def test_layerwise_load_arrives_layer_by_layer(target, seed, verify) -> None:  # type: ignore[no-untyped-def]
    from memstore.gpu import start_layerwise_load

    rng = np.random.default_rng(seed)
    layers, blocks = 6, [rng.integers(0, 1 << 16, size=(6, 1024), dtype=np.uint16) for _ in range(5)]
    keys = [b"l%d" % i for i in range(5)]
    with Client(target, local="always") as c:
        c.put_many(list(zip(keys, blocks, strict=True)))
        # one layer (2 KiB) per chunk: six events, each layer checked on its own
        load = start_layerwise_load(c, [*keys, b"absent"], layers=layers, verify=verify, chunk_bytes=2048)
        assert load is not None and load.blocks == 5
        for i in range(layers):
            got = load.layer(i).cpu().numpy().view(np.uint16)
            assert np.array_equal(got, np.stack([b[i] for b in blocks]))
        assert load.finish()
        # a block deleted after its copy started: the load no longer vouches for its bytes
        load = start_layerwise_load(c, keys, layers=layers, verify=verify)
        assert load is not None
        c.delete(keys[2])
        assert not load.finish()
        assert start_layerwise_load(c, keys, layers=5) is None  # 12 KiB blocks do not split into 5 layers
