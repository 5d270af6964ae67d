"""Protobuf wire format for the bulk messages (PutChunk, GetChunk), without copying their data.

The small header fields go through the generated classes; the ``data`` field (number 15) is appended
last when encoding, and found wherever it is when parsing, as raw bytes. The result is ordinary
protobuf: any other client can parse it with its own library. Only the bulk path uses this; every
other message uses ``memstore.v1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

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


def _skip(buf: memoryview, pos: int, kind: int, field: int, depth: int = 0) -> int:
    """The position after a field's value of wire type ``kind`` (groups skipped whole, as unknown)."""
    if kind == 0:
        return _read_varint(buf, pos)[1]
    if kind == 1:
        return pos + 8
    if kind == 5:
        return pos + 4
    if kind == 2:
        length, pos = _read_varint(buf, pos)
        return pos + length
    if kind == 3 and depth < 32:  # a (deprecated) group: fields up to its end tag
        while True:
            tag, pos = _read_varint(buf, pos)
            if tag & 7 == 4:
                if tag >> 3 != field:
                    raise WireError("mismatched end of group")
                return pos
            pos = _skip(buf, pos, tag & 7, tag >> 3, depth + 1)
            if pos > len(buf):
                raise WireError("truncated message")
    raise WireError(f"unsupported wire type {kind}")


def split_data(raw: bytes | memoryview) -> tuple[bytes | memoryview, memoryview]:
    """Split an encoded message into (its other fields, the data field's bytes).

    Walks the top-level fields in whatever order they come, as any protobuf parser accepts them:
    every field but the data field (unknown ones included) goes to the first part, which the caller
    parses with the generated class; if the data field appears more than once, the last one counts,
    as protobuf's rule for a singular field says. Only the data field's bytes are never copied.
    """
    buf = memoryview(raw)
    pos = 0
    data = memoryview(b"")
    dropped: list[tuple[int, int]] = []  # spans of data fields, left out of the header
    while pos < len(buf):
        start = pos
        tag, pos = _read_varint(buf, pos)
        field, kind = tag >> 3, tag & 7
        if field == 0:
            raise WireError("field number 0")
        if field == DATA_FIELD and kind == 2:
            length, pos = _read_varint(buf, pos)
            data = buf[pos : pos + length]
            dropped.append((start, pos + length))
            pos += length
        else:
            pos = _skip(buf, pos, kind, field)
        if pos > len(buf):
            raise WireError("truncated message")
    if not dropped:
        return buf, data
    if len(dropped) == 1 and dropped[0][1] == len(buf):  # the usual layout: data last, header a view
        return buf[: dropped[0][0]], data
    kept, at = [], 0
    for a, b in dropped:
        kept.append(buf[at:a])
        at = b
    kept.append(buf[at:])
    return b"".join(kept), data


def parse_chunk(cls: type[M], raw: bytes | memoryview) -> tuple[M, memoryview]:
    """Parse a PutChunk or GetChunk: its header fields with protobuf, its data as a view."""
    header, data = split_data(raw)
    try:
        msg = cls.FromString(bytes(header))
    except Exception as exc:  # protobuf raises DecodeError, or others for some garbage
        raise WireError(f"not a {cls.__name__}: {exc}") from None
    if sum(item.length for item in msg.items) != len(data):  # type: ignore[attr-defined]
        raise WireError("the items' lengths do not add up to the data")
    return msg, data


def pack(
    chunk_cls: type[M],
    values: Iterable[tuple[dict[str, Any], memoryview]],
    *,
    first: dict[str, Any] | None = None,
    chunk: int = CHUNK,
    max_items: int = 4096,
) -> Iterator[bytes]:
    """Encode values as messages of about ``chunk`` data bytes: small ones packed, large ones split.

    ``values`` yields (item fields, bytes); each message lists its pieces with offset and length.
    """
    msg = chunk_cls(**(first or {}))
    parts: list[memoryview] = []
    used = 0

    def encoded() -> bytes:
        head = msg.SerializeToString()
        return b"".join([head, _DATA_TAG, varint(used), *parts]) if used else head

    for fields, data in values:
        total, offset = len(data), 0
        while True:
            n = min(chunk - used, total - offset)
            if (n <= 0 and total > 0) or len(msg.items) >= max_items:  # type: ignore[attr-defined]
                yield encoded()
                msg, parts, used = chunk_cls(), [], 0
                continue
            item = msg.items.add(**fields, offset=offset, length=n)  # type: ignore[attr-defined]
            if offset and item.HasField("array"):
                item.ClearField("array")  # the array description travels with the first piece only
            parts.append(data[offset : offset + n])
            used += n
            offset += n
            if offset >= total:
                break
    if used or len(msg.items) or first:  # type: ignore[attr-defined]
        yield encoded()


class Assembler:
    """Rebuilds whole values from pieces (offset order), without a copy when a value is in one piece.

    The buffer of a value in several pieces grows with the pieces that arrived: a declared size is a
    limit the pieces must keep to, never an allocation.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._ident: object = None
        self._buf: bytearray | None = None
        self._size = 0

    def feed(self, ident: object, size: int, offset: int, data: memoryview) -> memoryview | bytearray | None:
        """Add one piece; returns the value's bytes once complete."""
        if offset == 0:
            if self._buf is not None:
                raise WireError(f"value {self._ident!r} ended after {len(self._buf)} of {self._size} bytes")
            if size > self.max_size:
                raise ValueTooLarge(f"a value of {size} bytes exceeds the limit of {self.max_size}")
            if len(data) == size:
                return data
            self._ident, self._buf, self._size = ident, bytearray(), size
        elif self._buf is None or ident != self._ident or offset != len(self._buf) or size != self._size:
            raise WireError(f"piece of {ident!r} at offset {offset} arrived out of order")
        if len(self._buf) + len(data) > self._size:
            raise WireError(f"value {ident!r} is longer than its declared {self._size} bytes")
        self._buf += data
        if len(self._buf) < self._size:
            return None
        buf, self._buf = self._buf, None
        return buf

    def finish(self) -> None:
        if self._buf is not None:
            raise WireError(f"the stream ended inside value {self._ident!r}")


class ValueTooLarge(WireError):
    """A declared value size is over the receiver's limit."""


def pieces(items: Iterable[Any], data: memoryview) -> Iterator[tuple[Any, memoryview]]:
    """Pair each item of a parsed chunk with its slice of the chunk's data."""
    pos = 0
    for item in items:
        yield item, data[pos : pos + item.length]
        pos += item.length
