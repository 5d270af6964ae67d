"""Protobuf wire format for the bulk messages (PutChunk, GetChunk), without copying their data.

The small header fields go through the generated classes; the ``data`` field (number 15, always last)
is appended or sliced as raw bytes. The result is ordinary protobuf: any other client can parse it
with its own library. Only the bulk path uses this; every other message uses ``memstore.v1``.
"""

from __future__ import annotations

from memstore.v1 import memstore_pb2 as pb

DATA_FIELD = 15
_DATA_TAG = bytes([(DATA_FIELD << 3) | 2])  # field 15, length-delimited: fits in one byte
CHUNK = 1 << 20  # about 1 MiB per message


class WireError(ValueError):
    """The bytes are not a well-formed message of the expected type."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def with_data(header: bytes, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
    """Pieces that concatenate to ``header`` plus a ``data`` field holding ``data``."""
    if not len(data):
        return [header]
    return [header, _DATA_TAG + varint(len(data)), memoryview(data)]


def split_data(raw: bytes | memoryview) -> tuple[memoryview, memoryview]:
    """Split an encoded message into (other fields, data field's bytes).

    Walks the top-level fields; every field but the data field stays in the first part, which the
    caller parses with the generated class. Repeated data fields are refused.
    """
    buf = memoryview(raw)
    pos = 0
    header_end = len(buf)
    data = memoryview(b"")
    seen = False
    while pos < len(buf):
        start = pos
        tag, pos = _read_varint(buf, pos)
        field, kind = tag >> 3, tag & 7
        if field == 0:
            raise WireError("field number 0")
        if kind == 0:
            _, pos = _read_varint(buf, pos)
        elif kind == 1:
            pos += 8
        elif kind == 5:
            pos += 4
        elif kind == 2:
            length, pos = _read_varint(buf, pos)
            if field == DATA_FIELD:
                if seen or pos + length != len(buf):
                    raise WireError("the data field must appear once, last")
                data = buf[pos : pos + length]
                header_end = start
                seen = True
            pos += length
        else:
            raise WireError(f"unsupported wire type {kind}")
        if pos > len(buf):
            raise WireError("truncated message")
    return buf[:header_end], data


def parse_put_chunk(raw: bytes | memoryview) -> tuple[pb.PutChunk, memoryview]:
    header, data = split_data(raw)
    try:
        return pb.PutChunk.FromString(bytes(header)), data
    except Exception as exc:  # protobuf raises DecodeError, or others for some garbage
        raise WireError(f"not a PutChunk: {exc}") from None


def parse_get_chunk(raw: bytes | memoryview) -> tuple[pb.GetChunk, memoryview]:
    header, data = split_data(raw)
    try:
        return pb.GetChunk.FromString(bytes(header)), data
    except Exception as exc:
        raise WireError(f"not a GetChunk: {exc}") from None


def chunks(value: bytes | bytearray | memoryview, size: int = CHUNK) -> list[memoryview]:
    view = memoryview(value).cast("B") if not isinstance(value, memoryview) else value
    if not len(view):
        return [view]
    return [view[i : i + size] for i in range(0, len(view), size)]
