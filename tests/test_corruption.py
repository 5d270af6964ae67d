"""Flipped bytes in the LMDB file, the warm tier and the hot arena: never served, always counted."""

from __future__ import annotations

import ctypes
import os
import sys

import numpy as np

from tests.conftest import MiB, open_store


def _flip_inside_bytes(b: bytes, pos: int) -> None:
    """Corrupt an immutable bytes object in place, as a memory fault would."""
    base = id(b) + sys.getsizeof(b"") - 1  # offset of ob_sval in CPython's bytes object
    cell = ctypes.c_ubyte.from_address(base + pos)
    cell.value ^= 0x10


def _flip_in_file(data: str, records: list[bytes], rng: np.random.Generator, skip: int = 0) -> None:
    """Flip one bit of each record where it sits in the file, at least ``skip`` bytes into it."""
    with open(data, "rb") as f:
        blob = bytearray(f.read())
    for rec in records:
        at = blob.find(rec[:64])
        assert at >= 0
        blob[at + skip + int(rng.integers(0, len(rec) - skip))] ^= 0x01
    with open(data, "r+b") as f:
        f.write(blob)


def _values(seed: int, n: int, size: int) -> dict[bytes, bytes]:
    rng = np.random.default_rng(seed)
    return {b"key-%04d" % i: rng.bytes(size) for i in range(n)}


def test_flipped_bytes_in_lmdb_file_are_detected(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s")
    values = _values(seed, 40, 20_000)
    with open_store(path, hot_bytes=0, warm_bytes=0) as s:
        s.create_namespace("raw", warm_codec="raw", cold_codec="raw")
        s.put_many(values, ns="raw")
    corrupted = set(sorted(values)[::3])  # every third value, where it sits in the file
    data = os.path.join(path, "cold", "data.mdb")
    _flip_in_file(data, [values[k] for k in sorted(corrupted)], np.random.default_rng(seed))
    with open_store(path, hot_bytes=0, warm_bytes=0) as s:
        for key, value in values.items():
            got = s.get(key, ns="raw", promote=False)
            if key in corrupted:
                assert got is None
                assert not s.contains(key, ns="raw")  # removed, not served later
            else:
                assert got == value
        assert s.stats()["cold"]["checksum_failures"] == len(corrupted)


def test_flipped_bytes_in_compressed_cold_records_are_detected(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    """The default codecs compress arrays (byteplane): a flipped bit inside a compressed payload on disk
    may still decode; the checksum over the stored bytes catches it before any decoding is trusted."""
    import lmdb

    path = str(tmp_path / "s")
    rng = np.random.default_rng(seed)
    values = {b"kv-%02d" % i: (rng.standard_normal((64, 128)) * 0.05).astype(np.float16) for i in range(18)}
    with open_store(path, hot_bytes=0, warm_bytes=0) as s:
        s.create_namespace("kv", value_dtype="<f2", value_shape=(64, 128))
        s.put_many(values, ns="kv")
    env = lmdb.open(os.path.join(path, "cold"), readonly=True, lock=False, max_dbs=4)
    with env.begin(db=env.open_db(b"records", create=False)) as txn:
        stored = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    records = {fk[1 + fk[0] :]: rec for fk, rec in stored.items() if fk[1 + fk[0] :] in values}
    assert len(records) == len(values)
    assert all(rec[3] != 0 for rec in records.values())  # every record compressed (codec id 0 is raw)
    assert all(len(rec) < values[b"kv-00"].nbytes for rec in records.values())
    corrupted = set(sorted(records)[::3])
    data = os.path.join(path, "cold", "data.mdb")
    _flip_in_file(data, [records[k] for k in sorted(corrupted)], rng, skip=100)  # inside the payload
    with open_store(path, hot_bytes=0, warm_bytes=0) as s:
        for key, value in values.items():
            got = s.get(key, ns="kv", promote=False)
            if key in corrupted:
                assert got is None, key
            else:
                assert got is not None and np.array_equal(got, value)
        assert s.stats()["cold"]["checksum_failures"] == len(corrupted) == 6


def test_flipped_bytes_in_warm_buffers_are_detected(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    values = _values(seed, 20, 10_000)
    with open_store(str(tmp_path / "s"), hot_bytes=0, warm_bytes=4 * MiB) as s:
        s.put_many(values)
        s.flush()
        rng = np.random.default_rng(seed)
        corrupted = sorted(values)[::2]
        for key in corrupted:
            record = s.warm.index[b"\x07default" + key].record
            _flip_inside_bytes(record, int(rng.integers(0, len(record))))
        for key, value in values.items():
            got = s.get(key)
            assert got is None if key in corrupted else got == value
        assert s.stats()["warm"]["checksum_failures"] == len(corrupted)
        assert all(not s.contains(k) for k in corrupted)


def test_flipped_bytes_in_hot_arena_are_detected(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    values = _values(seed, 10, 5_000)
    with open_store(str(tmp_path / "s")) as s:
        s.put_many(values)
        rng = np.random.default_rng(seed)
        victim = sorted(values)[3]
        entry = s.hot.index[b"\x07default" + victim]
        s.hot.arena.mm[entry.offset + int(rng.integers(0, entry.length))] ^= 0x04
        assert s.get(victim) is None
        assert s.stats()["hot"]["checksum_failures"] == 1
        for key, value in values.items():
            if key != victim:
                assert s.get(key) == value


def test_a_changed_header_in_hot_arena_is_detected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A reader checks the arena's header against the one written, not only the payload: a flipped
    shape or length byte would otherwise hand back a value of another shape."""
    with open_store(str(tmp_path / "s")) as s:
        s.put(b"a", np.arange(64, dtype=np.float32).reshape(8, 8))
        s.put(b"b", b"x" * 100)
        entry = s.hot.index[b"\x07defaulta"]
        s.hot.arena.mm[entry.offset + 33] ^= 0x01  # inside the header, past the fixed fields
        assert s.get(b"a") is None
        assert s.stats()["hot"]["checksum_failures"] == 1
        assert s.get(b"b") == b"x" * 100


def test_corrupt_hot_copy_falls_back_to_clean_cold_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with open_store(str(tmp_path / "s")) as s:
        s.create_namespace("p", durability="persistent")
        s.put(b"k", b"v" * 1000, ns="p")
        entry = s.hot.index[b"\x01pk"]
        s.hot.arena.mm[entry.offset + entry.length - 1] ^= 0x01
        assert s.get(b"k", ns="p") == b"v" * 1000
        assert s.stats()["hot"]["checksum_failures"] == 1
