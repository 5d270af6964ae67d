"""Codecs: the one seam through which values are compressed.

Every record names the codec that wrote it (``RecordMeta.codec``), so records stay readable when a
namespace's configuration changes. Decoders never trust a frame: the sizes a frame declares are
checked against the header's raw length before any buffer is allocated (a 6 KB zstd frame can
declare 200 MiB).
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Protocol

import numpy as np
import zstandard

from memstore import quant
from memstore.errors import CorruptRecordError
from memstore.record import RecordMeta


class Codec(Protocol):
    id: int
    name: str
    lossless: bool

    def encode(self, raw: memoryview, meta: RecordMeta) -> tuple[int, bytes | memoryview]:
        """Return (codec id actually used, payload). A codec may fall back to a simpler one."""
        ...

    def decode(self, payload: memoryview, meta: RecordMeta) -> bytes | bytearray | memoryview:
        """The value's raw bytes (``meta.raw_len`` of them) from a payload this codec wrote."""
        ...


_local = threading.local()  # zstd contexts are not thread-safe: one pair per thread and level


def _cctx(level: int) -> zstandard.ZstdCompressor:
    key = f"c{level}"
    ctx = getattr(_local, key, None)
    if ctx is None:
        ctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
        setattr(_local, key, ctx)
    return ctx


def _dctx() -> zstandard.ZstdDecompressor:
    ctx = getattr(_local, "d", None)
    if ctx is None:
        ctx = _local.d = zstandard.ZstdDecompressor()
    return ctx


def zstd_decompress_exact(frame: memoryview | bytes, expected: int) -> bytes:
    """Decompress one zstd frame that must hold exactly ``expected`` bytes."""
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as exc:
        raise CorruptRecordError(f"bad zstd frame: {exc}") from exc
    if params.content_size != expected:
        raise CorruptRecordError(f"zstd frame declares {params.content_size} bytes, header says {expected}")
    try:
        out = _dctx().decompress(frame, max_output_size=expected)
    except zstandard.ZstdError as exc:
        raise CorruptRecordError(f"zstd frame does not decode: {exc}") from exc
    if len(out) != expected:
        raise CorruptRecordError("zstd frame decoded to the wrong length")
    return out


class RawCodec:
    id = 0
    name = "raw"
    lossless = True

    def encode(self, raw: memoryview, meta: RecordMeta) -> tuple[int, bytes | memoryview]:
        return self.id, raw

    def decode(self, payload: memoryview, meta: RecordMeta) -> memoryview:
        if len(payload) != meta.raw_len:
            raise CorruptRecordError("raw payload length differs from the header")
        return payload


class ZstdCodec:
    id = 1
    name = "zstd"
    lossless = True

    def __init__(self, level: int = 1) -> None:
        self.level = level

    def encode(self, raw: memoryview, meta: RecordMeta) -> tuple[int, bytes | memoryview]:
        return self.id, _cctx(self.level).compress(raw)

    def decode(self, payload: memoryview, meta: RecordMeta) -> bytes:
        return zstd_decompress_exact(payload, meta.raw_len)


class BytePlaneCodec:
    """Byte-grouped zstd for numeric arrays.

    The elements' bytes are split into planes (byte 0 of every element, byte 1, ...). In bf16/fp16 the
    byte holding sign and exponent compresses about 2.7x, the mantissa byte is nearly noise: each plane
    is zstd-compressed on its own and kept raw when that does not pay. Payload: u8 itemsize, then one
    (u8 mode, u64 length) pair per plane, then the planes. Values that are not 2- or 4-byte arrays fall
    back to plain zstd (and record that codec id).
    """

    id = 2
    name = "byteplane"
    lossless = True
    _PLANE = struct.Struct("<BQ")
    _KEEP_RAW_ABOVE = 0.95  # a plane that shrinks by less than 5% is stored raw (decodes for free)
    _UINT: dict[int, np.dtype[Any]] = {2: np.dtype("<u2"), 4: np.dtype("<u4")}  # little-endian on any host

    def __init__(self, level: int = 1) -> None:
        self.level = level
        self._fallback = ZstdCodec(level)

    def encode(self, raw: memoryview, meta: RecordMeta) -> tuple[int, bytes | memoryview]:
        itemsize = meta.itemsize
        if itemsize not in (2, 4) or len(raw) % itemsize or len(raw) < 64:
            return self._fallback.encode(raw, meta)
        words = np.frombuffer(raw, dtype=self._UINT[itemsize])
        parts: list[bytes] = [bytes([itemsize])]
        bodies: list[bytes] = []
        cctx = _cctx(self.level)
        for j in range(itemsize):  # plane j = byte j of every little-endian element, by shift and cast
            plane = (words >> np.array(8 * j, dtype=words.dtype)).astype(np.uint8).tobytes()
            packed = cctx.compress(plane)
            if len(packed) < self._KEEP_RAW_ABOVE * len(plane):
                parts.append(self._PLANE.pack(1, len(packed)))
                bodies.append(packed)
            else:
                parts.append(self._PLANE.pack(0, len(plane)))
                bodies.append(plane)
        return self.id, b"".join(parts + bodies)

    def decode(self, payload: memoryview, meta: RecordMeta) -> bytearray:
        raw_len = meta.raw_len
        if len(payload) < 1:
            raise CorruptRecordError("empty byte-plane payload")
        k = payload[0]
        if k not in (2, 4) or raw_len % k:
            raise CorruptRecordError(f"byte-plane payload declares {k} planes for {raw_len} bytes")
        n = raw_len // k
        table_end = 1 + k * self._PLANE.size
        if len(payload) < table_end:
            raise CorruptRecordError("truncated byte-plane table")
        out = bytearray(raw_len)
        words = np.frombuffer(out, dtype=self._UINT[k])
        pos = table_end
        for j in range(k):
            mode, length = self._PLANE.unpack_from(payload, 1 + j * self._PLANE.size)
            body = payload[pos : pos + length]
            if len(body) != length:
                raise CorruptRecordError("truncated byte plane")
            pos += length
            if mode == 1:
                plane = np.frombuffer(zstd_decompress_exact(body, n), dtype=np.uint8)
            elif mode == 0 and length == n:
                plane = np.frombuffer(body, dtype=np.uint8)
            else:
                raise CorruptRecordError("bad byte-plane entry")
            if j == 0:
                np.copyto(words, plane)
            else:  # shift into place without a wide temporary where possible
                words |= np.left_shift(plane, 8 * j, dtype=words.dtype)
        if pos != len(payload):
            raise CorruptRecordError("trailing bytes after the byte planes")
        return out


class _Lossy:
    """Shared frame of the lossy KV codecs (``memstore.quant``): anything that is not a float KV array,
    or holds a NaN or an infinity, falls back to the lossless byte-plane codec."""

    id = -1
    name = ""
    lossless = False

    def encode(self, raw: memoryview, meta: RecordMeta) -> tuple[int, bytes | memoryview]:
        if quant.lossy_shape_ok(meta):
            assert meta.dtype is not None and meta.shape is not None
            x = quant.to_float32(raw, meta.dtype).reshape(meta.shape)
            payload = self._encode(x) if np.isfinite(x).all() else None  # NaN would spoil a group's scale
            if payload is not None:
                return self.id, payload
        return BYTEPLANE.encode(raw, meta)

    def decode(self, payload: memoryview, meta: RecordMeta) -> memoryview:
        if meta.dtype not in quant.FLOAT_DTYPES or meta.shape is None:
            raise CorruptRecordError(f"{self.name} record without a float array description")
        out = np.ascontiguousarray(quant.from_float32(self._decode(payload, meta.shape), meta.dtype))
        return out.data.cast("B")  # the array's own bytes, not a copy of them

    def _encode(self, x: np.ndarray) -> bytes | None:
        """The payload, or None to store this value losslessly instead."""
        raise NotImplementedError

    def _decode(self, payload: memoryview, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError


class Int8Codec(_Lossy):
    id = 3
    name = "int8"

    def _encode(self, x: np.ndarray) -> bytes:
        return quant.int8_encode(x)

    def _decode(self, payload: memoryview, shape: tuple[int, ...]) -> np.ndarray:
        return quant.int8_decode(payload, shape)


class Fp8Codec(_Lossy):
    id = 6
    name = "fp8"

    def _encode(self, x: np.ndarray) -> bytes:
        return quant.fp8_encode(x)

    def _decode(self, payload: memoryview, shape: tuple[int, ...]) -> np.ndarray:
        return quant.fp8_decode(payload, shape)


class Int4Codec(_Lossy):
    """Group sizes are written into each record, so one decoder reads every choice of them."""

    id = 4
    name = "int4"

    def __init__(self, key_group: int = 64, value_group: int = 128) -> None:
        self.key_group, self.value_group = key_group, value_group

    def _encode(self, x: np.ndarray) -> bytes:
        return quant.int4_encode(x, self.key_group, self.value_group)

    def _decode(self, payload: memoryview, shape: tuple[int, ...]) -> np.ndarray:
        return quant.int4_decode(payload, shape)


class EcqCodec(_Lossy):
    """Uniform quantization with one step per tensor, entropy-coded (``memstore.quant``, ecq). Each
    element is off by at most half a step, so the relative RMS error is about ``rel_step / sqrt(12)``
    (4.3% at the default 0.15); the size follows the data, about 4.4 bits an element on MiniLM's K/V."""

    id = 5
    name = "ecq"
    _HEAD = struct.Struct("<BBxxfI")  # version, symbol width in bytes, rel_step (for information), tensors
    _SIZES = struct.Struct("<II")  # bytes of the side frame (row classes and offsets), of the symbols
    _WIDTHS = {1: np.int8, 2: np.int16, 4: np.int32}

    def __init__(self, rel_step: float = 0.15, level: int = 1) -> None:
        if not 1e-3 <= rel_step <= 2.0:
            raise ValueError("rel_step must be between 0.001 and 2")
        self.rel_step, self.level = rel_step, level

    def _encode(self, x: np.ndarray) -> bytes | None:
        quantized = quant.ecq_quantize(x, self.rel_step)
        if quantized is None:
            return None
        steps, classes, offsets, symbols = quantized
        cctx = _cctx(self.level)
        side = cctx.compress(classes.tobytes() + offsets.tobytes())
        body = cctx.compress(symbols.tobytes())
        head = self._HEAD.pack(1, symbols.itemsize, self.rel_step, steps.size)
        return b"".join([head, steps.tobytes(), self._SIZES.pack(len(side), len(body)), side, body])

    def _decode(self, payload: memoryview, shape: tuple[int, ...]) -> np.ndarray:
        tensors, rows, tokens = quant.ecq_layout(shape)
        n_rows = tensors * rows
        fixed = self._HEAD.size + 4 * tensors + self._SIZES.size
        if len(payload) < fixed:
            raise CorruptRecordError("truncated ecq payload")
        version, width, _, n_tensors = self._HEAD.unpack_from(payload)
        if version != 1 or width not in self._WIDTHS or n_tensors != tensors:
            raise CorruptRecordError("ecq payload does not match the value's shape")
        steps = np.frombuffer(payload, np.float32, tensors, self._HEAD.size)
        side_len, body_len = self._SIZES.unpack_from(payload, fixed - self._SIZES.size)
        if len(payload) != fixed + side_len + body_len:
            raise CorruptRecordError("ecq payload has the wrong length")
        side = zstd_decompress_exact(payload[fixed : fixed + side_len], 5 * n_rows)
        body = zstd_decompress_exact(payload[fixed + side_len :], n_rows * tokens * width)
        classes = np.frombuffer(side, np.uint8, n_rows)
        offsets = np.frombuffer(side, np.int32, n_rows, n_rows)
        symbols = np.frombuffer(body, self._WIDTHS[width]).reshape(n_rows, tokens)
        return quant.ecq_dequantize(shape, steps, classes, offsets, symbols)


RAW = RawCodec()
ZSTD = ZstdCodec(1)
BYTEPLANE = BytePlaneCodec(1)

INT8 = Int8Codec()
FP8 = Fp8Codec()
INT4 = Int4Codec()
ECQ = EcqCodec()

CODECS: dict[int, Codec] = {c.id: c for c in (RAW, ZSTD, BYTEPLANE, INT8, FP8, INT4, ECQ)}
CODECS_BY_NAME: dict[str, Codec] = {c.name: c for c in CODECS.values()}


def codec_named(name: str) -> Codec:
    try:
        return CODECS_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {sorted(CODECS_BY_NAME)}") from None


def decode_payload(payload: memoryview, meta: RecordMeta) -> bytes | bytearray | memoryview:
    """Decode a record's payload with the codec its header names."""
    codec = CODECS.get(meta.codec)
    if codec is None:
        raise CorruptRecordError(f"unknown codec id {meta.codec}")
    out = codec.decode(payload, meta)
    if len(out) != meta.raw_len:
        raise CorruptRecordError("the codec returned the wrong length")
    return out
