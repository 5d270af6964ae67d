"""Codecs and the record format: exact round trips, and nothing unchecked ever decoded."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import zstandard

from memstore.codecs import BYTEPLANE, CODECS, RAW, ZSTD, decode_payload
from memstore.errors import CorruptRecordError, InvalidValueError
from memstore.record import RecordMeta, encode_record, parse_record, raw_to_value, value_to_raw

DTYPES = ["u1", "i1", "<u2", "<i2", "<f2", "<f4", "<i4", "<f8", "<u8", ">f4", "?", "<c8"]


def _arrays(rng: np.random.Generator):  # type: ignore[no-untyped-def]
    for dt in DTYPES:
        for n in (0, 1, 7, 33, 1001, 40_000):
            a = rng.standard_normal(n) * 10
            yield np.asarray(a).astype(np.dtype(dt))


@pytest.mark.parametrize("codec", list(CODECS.values()), ids=lambda c: c.name)
def test_lossless_round_trip_every_dtype_and_length(codec, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    for arr in _arrays(rng):
        raw, dtype, shape = value_to_raw(arr)
        codec_id, payload = codec.encode(raw, RecordMeta(0, len(raw), dtype, shape))
        meta = RecordMeta(codec_id, len(raw), dtype, shape)
        record = encode_record(meta, payload)
        meta2, body = parse_record(record)
        assert meta2 == meta
        out = raw_to_value(decode_payload(body, meta2), meta2)
        assert out.dtype == arr.dtype and out.shape == arr.shape
        assert out.tobytes() == arr.tobytes()


def test_byteplane_compresses_bf16_like_data(seed) -> None:  # type: ignore[no-untyped-def]
    x = np.random.default_rng(seed).standard_normal(1 << 18).astype(np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)
    meta = RecordMeta(0, bf16.nbytes, "<u2", bf16.shape)
    _, plane = BYTEPLANE.encode(memoryview(bf16.tobytes()), meta)
    _, plain = ZSTD.encode(memoryview(bf16.tobytes()), meta)
    assert bf16.nbytes / len(plane) > 1.35  # the exponent plane compresses, the mantissa stays raw
    assert len(plane) < len(plain)


def test_zstd_bomb_is_refused_before_decoding() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (200 << 20))
    assert len(bomb) < 64 << 10
    with pytest.raises(CorruptRecordError, match="declares"):
        ZSTD.decode(memoryview(bomb), RecordMeta(1, 1000))
    # A byte-plane payload whose plane declares far more than the header allows.
    n = 512
    table = bytes([2]) + struct.pack("<BQ", 1, len(bomb)) + struct.pack("<BQ", 0, n)
    with pytest.raises(CorruptRecordError):
        BYTEPLANE.decode(memoryview(table + bomb + b"\0" * n), RecordMeta(2, 2 * n, "<u2", (n,)))


@pytest.mark.parametrize("codec", [ZSTD, BYTEPLANE], ids=lambda c: c.name)
def test_truncated_and_flipped_frames_are_refused(codec, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    raw = memoryview((rng.standard_normal(4096) * 3).astype(np.float16).tobytes())
    meta = RecordMeta(codec.id, len(raw), "<f2", (4096,))
    _, payload = codec.encode(raw, meta)
    payload = bytes(payload)
    for cut in (0, 1, len(payload) // 2, len(payload) - 1):
        with pytest.raises(CorruptRecordError):
            codec.decode(memoryview(payload[:cut]), meta)
    # Inside a record the checksum catches any flipped byte, header or payload.
    record = encode_record(RecordMeta(codec.id, len(raw), "<f2", (4096,)), payload)
    for pos in rng.choice(len(record), size=64, replace=False):
        bad = bytearray(record)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(CorruptRecordError):
            parse_record(bytes(bad))


def test_raw_codec_checks_length() -> None:
    with pytest.raises(CorruptRecordError):
        RAW.decode(memoryview(b"abc"), RecordMeta(0, 4))


def test_values_refused_with_clear_errors() -> None:
    with pytest.raises(TypeError):
        value_to_raw("text")
    with pytest.raises(InvalidValueError):
        value_to_raw(np.array([object()]))
    with pytest.raises(InvalidValueError):
        value_to_raw(np.zeros(2, dtype=[("a", "<i4")]))
    # non-contiguous arrays are accepted (copied to contiguous)
    a = np.arange(20, dtype=np.int32)[::2]
    raw, _dtype, shape = value_to_raw(a)
    assert bytes(raw) == a.tobytes() and shape == (10,)
