"""The record format: a small header in front of every stored value.

Layout (little-endian)::

    0  magic  b"MS"          8  raw_len     u64   (bytes of the decoded value)
    2  version u8            16 stored_len  u64   (bytes of the payload that follows the header)
    3  codec   u8            24 checksum    u64   (xxh3-64 of the payload, seeded by the header)
    4  flags   u8 (1=array)  32 dtype       dtype_len bytes (numpy ``dtype.str``, ASCII)
    5  dtype_len u8          .. shape       ndim x u64
    6  ndim    u8
    7  reserved

The checksum covers the header fields as well as the payload (the header digest is the seed), so a
flipped dtype byte is caught just like a flipped payload byte. The same header is used in every tier,
including the shared-memory arena, so a reader in another process can interpret a slot on its own.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np
import xxhash

from memstore.errors import CorruptRecordError, InvalidValueError

MAGIC = b"MS"
FORMAT_VERSION = 1
FLAG_ARRAY = 1
_FIXED = struct.Struct("<2sBBBBBxQQQ")
FIXED_SIZE = _FIXED.size  # 32
MAX_NDIM = 32


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """What a reader needs to turn payload bytes back into the value that was put."""

    codec: int
    raw_len: int
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    def with_codec(self, codec: int) -> RecordMeta:
        return RecordMeta(codec, self.raw_len, self.dtype, self.shape)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize if self.dtype else 1


def _header_prefix(meta: RecordMeta, stored_len: int) -> tuple[bytes, bytes]:
    """Return (fixed part without checksum, variable part) of the header."""
    dtype_b = meta.dtype.encode("ascii") if meta.dtype is not None else b""
    shape = meta.shape if meta.shape is not None else ()
    flags = FLAG_ARRAY if meta.dtype is not None else 0
    var = dtype_b + struct.pack(f"<{len(shape)}Q", *shape)
    fixed = struct.pack(
        "<2sBBBBBxQQ",
        MAGIC,
        FORMAT_VERSION,
        meta.codec,
        flags,
        len(dtype_b),
        len(shape),
        meta.raw_len,
        stored_len,
    )
    return fixed, var


def checksum(fixed: bytes, var: bytes, payload: bytes | bytearray | memoryview) -> int:
    """xxh3-64 of the payload, seeded with the digest of the header fields, so both are covered."""
    seed = xxhash.xxh3_64_intdigest(fixed + var)
    return xxhash.xxh3_64_intdigest(payload, seed=seed)


def pack_header(meta: RecordMeta, payload: bytes | bytearray | memoryview) -> bytes:
    fixed, var = _header_prefix(meta, len(payload))
    return fixed + struct.pack("<Q", checksum(fixed, var, payload)) + var


def encode_record(meta: RecordMeta, payload: bytes | memoryview) -> bytes:
    """Header and payload as one buffer (what the warm and cold tiers store)."""
    return pack_header(meta, payload) + payload


def split_record(buf: bytes | bytearray | memoryview) -> tuple[RecordMeta, memoryview, int, int]:
    """Check a record's header and split it: (meta, payload view, checksum seed, expected checksum).

    The payload is not verified here: call ``verify_payload`` on it, or on a copy of it (hashing the
    copy while it is still in cache is cheaper than hashing the source and copying after).
    """
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    if len(view) < FIXED_SIZE:
        raise CorruptRecordError("record shorter than its header")
    magic, version, codec, flags, dtype_len, ndim, raw_len, stored_len, digest = _FIXED.unpack_from(view)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise CorruptRecordError(f"bad magic or version ({magic!r}, {version})")
    if ndim > MAX_NDIM or ((flags & FLAG_ARRAY) == 0 and (dtype_len or ndim)):
        raise CorruptRecordError("bad array description")
    header_len = FIXED_SIZE + dtype_len + 8 * ndim
    if len(view) != header_len + stored_len:
        raise CorruptRecordError(f"record length {len(view)} != header {header_len} + payload {stored_len}")
    var = bytes(view[FIXED_SIZE:header_len])
    seed = xxhash.xxh3_64_intdigest(bytes(view[:24]) + var)
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    if flags & FLAG_ARRAY:
        dtype = var[:dtype_len].decode("ascii", "replace")
        shape = struct.unpack_from(f"<{ndim}Q", var, dtype_len)
    return RecordMeta(codec, raw_len, dtype, shape), view[header_len:], seed, digest


def header_check(header: bytes) -> tuple[int, int]:
    """(checksum seed, expected checksum) of a header this process packed (``pack_header``)."""
    seed = xxhash.xxh3_64_intdigest(header[:24] + header[FIXED_SIZE:])
    return seed, int.from_bytes(header[24:32], "little")


def verify_payload(payload: bytes | bytearray | memoryview, seed: int, digest: int) -> None:
    if xxhash.xxh3_64_intdigest(payload, seed=seed) != digest:
        raise CorruptRecordError("checksum mismatch")


def parse_record(buf: bytes | bytearray | memoryview) -> tuple[RecordMeta, memoryview]:
    """Check a record (header and checksum) and split it into its metadata and a view of its payload.

    Raises CorruptRecordError on any inconsistency: nothing unchecked is ever returned.
    """
    meta, payload, seed, digest = split_record(buf)
    verify_payload(payload, seed, digest)
    return meta, payload


# ---- values <-> raw bytes ---------------------------------------------------------------------------


def value_to_raw(value: object) -> tuple[memoryview, str | None, tuple[int, ...] | None]:
    """Accept bytes-like values and plain numpy arrays; return their bytes and array description."""
    if isinstance(value, np.ndarray):
        if (
            value.dtype.hasobject
            or value.dtype.fields is not None
            or np.dtype(value.dtype.str) != value.dtype
        ):
            raise InvalidValueError(f"unsupported array dtype {value.dtype!r}: use a plain numeric dtype")
        if value.ndim > MAX_NDIM:
            raise InvalidValueError(f"arrays may have at most {MAX_NDIM} dimensions")
        shape = tuple(int(d) for d in value.shape)  # ascontiguousarray turns 0-d into 1-d: keep ours
        arr = np.ascontiguousarray(value).reshape(-1)
        return memoryview(arr.view(np.uint8)), value.dtype.str, shape  # type: ignore[arg-type]
    if isinstance(value, bytes | bytearray):
        return memoryview(value), None, None
    if isinstance(value, memoryview):
        if not value.c_contiguous:
            raise InvalidValueError("memoryview values must be C-contiguous")
        return value.cast("B") if value.format != "B" or value.ndim != 1 else value, None, None
    raise TypeError(f"values are bytes-like or numpy arrays, not {type(value).__name__}")


def raw_to_value(raw: bytes | bytearray | memoryview, meta: RecordMeta) -> bytes | np.ndarray:
    """Rebuild the value that was put: bytes for bytes, an equal array for an array."""
    if meta.dtype is None:
        return raw if isinstance(raw, bytes) else bytes(raw)
    dtype = np.dtype(meta.dtype)
    buf = raw if isinstance(raw, bytearray) else bytearray(raw)
    return np.frombuffer(buf, dtype=dtype).reshape(meta.shape or ())


# A dtype as it travels: numpy's ``dtype.str`` of a plain type, such as '<f2', '|u1' or '<V8'.
DTYPE_STRING = re.compile(r"^[<>|=]?[a-zA-Z][0-9]{0,3}$")


def check_array_meta(meta: RecordMeta) -> None:
    """The one check of an array description, on every path that accepts one (put, reservation,
    namespace schema, records read back): a plain dtype of non-zero size, at most MAX_NDIM dimensions,
    and dtype and shape that describe exactly the value's bytes."""
    if meta.dtype is None:
        if meta.shape is not None:
            raise InvalidValueError("a shape needs a dtype")
        return
    if not isinstance(meta.dtype, str) or not DTYPE_STRING.match(meta.dtype):
        raise InvalidValueError(f"dtype {meta.dtype!r} is not a plain numpy dtype string such as '<f2'")
    try:
        dtype = np.dtype(meta.dtype)
    except TypeError as exc:
        raise InvalidValueError(f"unknown dtype {meta.dtype!r}") from exc
    if dtype.hasobject or dtype.fields is not None or dtype.itemsize == 0 or dtype.subdtype is not None:
        raise InvalidValueError(f"dtype {meta.dtype!r} is not a plain dtype of non-zero size")
    shape = meta.shape if meta.shape is not None else ()
    if len(shape) > MAX_NDIM:
        raise InvalidValueError(f"arrays have at most {MAX_NDIM} dimensions, not {len(shape)}")
    count = 1
    for d in shape:
        if not isinstance(d, int) or d < 0:
            raise InvalidValueError(f"dimensions are non-negative ints, not {d!r}")
        count *= d
    if count * dtype.itemsize >= 1 << 63:
        raise InvalidValueError(
            f"shape {list(shape)} of {meta.dtype} describes more bytes than a record holds"
        )
    if count * dtype.itemsize != meta.raw_len:
        raise InvalidValueError(
            f"dtype {meta.dtype} and shape {meta.shape} describe {count * dtype.itemsize} bytes, "
            f"value has {meta.raw_len}"
        )
