"""One contract suite, run with values living in each tier and encoded with each codec."""

from __future__ import annotations

import numpy as np
import pytest

from memstore import InvalidKeyError, InvalidNamespaceError, TieredStore
from memstore.codecs import CODECS_BY_NAME
from tests.conftest import MiB, open_store

# Tier placement by budgets: a value goes to the first tier that can hold it.
TIERS = {
    "hot": {"hot_bytes": 8 * MiB, "warm_bytes": 8 * MiB},
    "warm": {"hot_bytes": 0, "warm_bytes": 8 * MiB},
    "cold": {"hot_bytes": 0, "warm_bytes": 0},
}


LOSSLESS = [
    name for name, codec in CODECS_BY_NAME.items() if codec.lossless
]  # lossy ones: tests/test_quant.py


@pytest.fixture(params=[(t, c) for t in TIERS for c in LOSSLESS], ids=lambda p: f"{p[0]}-{p[1]}")
def placed(request, tmp_path):  # type: ignore[no-untyped-def]
    tier, codec = request.param
    s = open_store(str(tmp_path / "s"), **TIERS[tier])
    s.create_namespace("t", warm_codec=codec, cold_codec=codec)
    yield s, tier
    s.close()


def _values(rng: np.random.Generator) -> list[object]:
    return [
        b"",
        b"x",
        rng.bytes(1000),
        rng.bytes(70_000),
        bytearray(b"mutable"),
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        (rng.standard_normal(5000) * 4).astype(np.float16),
        rng.integers(0, 1 << 16, size=(16, 64), dtype=np.uint16),
        np.array(3.5),
        np.zeros((0, 4), dtype=np.int64),
    ]


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    return isinstance(b, bytes) and bytes(a) == b  # type: ignore[call-overload]


def _where(s: TieredStore) -> str:
    st = s.stats()
    return max(("hot", "warm", "cold"), key=lambda t: st[t]["items"])


def test_put_get_round_trip_in_tier(placed, seed) -> None:  # type: ignore[no-untyped-def]
    s, tier = placed
    values = _values(np.random.default_rng(seed))
    for i, v in enumerate(values):
        s.put(b"k%d" % i, v, ns="t")
    s.flush()
    assert _where(s) == tier
    for i, v in enumerate(values):
        assert _same(v, s.get(b"k%d" % i, ns="t", promote=False)), i
    for i, v in enumerate(values):  # again, after promotion
        assert _same(v, s.get(b"k%d" % i, ns="t")), i


def test_overwrite_delete_contains_and_miss(placed) -> None:  # type: ignore[no-untyped-def]
    s, _ = placed
    assert s.get(b"nope", ns="t") is None
    assert not s.contains(b"nope", ns="t")
    s.put(b"k", b"one", ns="t")
    s.put(b"k", b"two", ns="t")
    s.flush()
    assert s.get(b"k", ns="t") == b"two"
    assert s.contains(b"k", ns="t")
    assert s.delete(b"k", ns="t") is True
    assert s.delete(b"k", ns="t") is False
    assert s.get(b"k", ns="t") is None
    assert not s.contains(b"k", ns="t")


def test_batches_and_namespaces_are_separate(placed) -> None:  # type: ignore[no-untyped-def]
    s, _ = placed
    s.put_many({b"a": b"1", b"b": b"2", b"c": b"3"}, ns="t")
    s.put(b"a", b"default-a")
    assert s.get_many([b"a", b"zz", b"c"], ns="t") == [b"1", None, b"3"]
    assert s.get(b"a") == b"default-a"
    assert s.get(b"b") is None


def test_bad_keys_and_namespaces(placed) -> None:  # type: ignore[no-untyped-def]
    s, _ = placed
    for key in (b"", b"x" * 401, "text", None):
        with pytest.raises((InvalidKeyError, TypeError)):
            s.put(key, b"v", ns="t")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        s.put(b"k", "not bytes", ns="t")  # type: ignore[arg-type]
    with pytest.raises(InvalidNamespaceError):
        s.get(b"k", ns="missing")
    with pytest.raises(InvalidNamespaceError):
        s.create_namespace("t", durability="persistent")  # exists with other options
    with pytest.raises(InvalidNamespaceError):
        s.create_namespace("bad name!")
    with pytest.raises(InvalidNamespaceError):
        s.create_namespace("x", warm_codec="nope")
