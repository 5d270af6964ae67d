"""The data plane's wire protocol, sans I/O: frames, their checks, and how a batch maps onto them.

A frame is a 20-byte header, a meta section (one protobuf message of ``memstore.v1``, which one the
header's kind says) and a data section of raw value bytes. docs/dataplane.md is the specification;
this module is its one implementation in Python, used by the client (``memstore.dataplane_client``)
and the server (``memstore_server.dataplane``), which only move the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from memstore.record import value_to_raw
from memstore.v1 import memstore_pb2 as pb

MAGIC = b"MD"
VERSION = 1
HEADER = struct.Struct("<2sBBIIQ")  # magic, version, kind, request id, meta length, data length
HELLO, GET, PUT, RESULT = 1, 2, 3, 4
KINDS = {HELLO: "HELLO", GET: "GET", PUT: "PUT", RESULT: "RESULT"}
# Frames a client may send after its HELLO.
REQUESTS = (GET, PUT)
MAX_HELLO_META = 1024
MAX_META = 4 << 20  # a GET of many long keys fits; nothing larger is read
MAX_GET_KEYS = 65536

OK = 0
CODES = {s.value[0]: s for s in grpc.StatusCode}


class FrameError(ValueError):
    """A frame that breaks the protocol; ``code`` is the gRPC status the peer is answered with, and
    ``fatal`` says the stream cannot be read on (the connection is closed after the answer)."""

    def __init__(
        self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT, *, fatal: bool = True
    ):
        super().__init__(message)
        self.code = code
        self.fatal = fatal


@dataclass(frozen=True)
class Header:
    kind: int
    request: int
    meta_len: int
    data_len: int


def header(kind: int, request: int, meta_len: int, data_len: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, request, meta_len, data_len)


def frame(kind: int, request: int, meta: Message, data_len: int = 0) -> bytes:
    """A frame's header and meta section; its data (``data_len`` bytes) follows as the sender has it."""
    raw = meta.SerializeToString()
    return header(kind, request, len(raw), data_len) + raw


def read_header(raw: bytes | bytearray | memoryview, *, max_meta: int, max_data: int) -> Header:
    """Parse and bound a header: a frame whose sections are over the limits is refused before any of
    its bytes are read."""
    magic, version, kind, request, meta_len, data_len = HEADER.unpack(raw)
    if magic != MAGIC:
        raise FrameError(f"not a memstore data-plane frame (magic {bytes(magic)!r})")
    if version != VERSION:
        raise FrameError(f"unsupported data-plane version {version} (this side speaks {VERSION})")
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind}")
    if meta_len > max_meta:
        raise FrameError(
            f"a meta section of {meta_len} bytes is over the limit of {max_meta}",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
    if data_len > max_data:
        raise FrameError(
            f"a {KINDS[kind]} frame of {data_len} data bytes is over the limit of {max_data}: send fewer "
            "or smaller values per frame",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
    return Header(kind, request, meta_len, data_len)


def parse_meta(cls: type[Any], raw: bytes | bytearray | memoryview) -> Any:
    try:
        return cls.FromString(bytes(raw))
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise FrameError(f"the meta section is not a valid {cls.__name__}: {exc}", fatal=False) from None


def check_put(put: pb.DataPut, data_len: int, max_value: int) -> list[int]:
    """The item sizes of a PUT, which must add up to its data section and each fit a tier."""
    sizes = [item.size for item in put.items]
    for item in put.items:
        if item.size > max_value:
            raise FrameError(
                f"a value of {item.size} bytes exceeds the largest tier ({max_value})",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                fatal=False,
            )
    if sum(sizes) != data_len:
        raise FrameError(f"the items' sizes add up to {sum(sizes)}, the data section holds {data_len}")
    return sizes


def check_result(result: pb.DataResult, count: int, data_len: int) -> list[int]:
    """The data section's value sizes of a GET's RESULT, checked against the request."""
    if result.code != OK:
        return []
    if len(result.items) != count:
        raise FrameError(f"a RESULT of {len(result.items)} items answered a GET of {count} keys")
    sizes = [it.size for it in result.items if it.found and not it.deferred]
    if sum(sizes) != data_len:
        raise FrameError(f"the items' sizes add up to {sum(sizes)}, the data section holds {data_len}")
    return sizes


def error_result(code: grpc.StatusCode, message: str) -> pb.DataResult:
    return pb.DataResult(code=code.value[0], message=message)


def status_of(result: pb.DataResult) -> grpc.StatusCode:
    return CODES.get(result.code, grpc.StatusCode.UNKNOWN)


# ---- how a client's batch maps onto frames --------------------------------------------------------


@dataclass
class PutFrame:
    head: bytes  # header and meta
    data: list[memoryview]  # the values, sent after head as they are
    count: int


def put_frames(
    ns: str, items: Sequence[tuple[bytes, Any, bytes | None]], request: int, max_data: int
) -> list[PutFrame]:
    """A batch as PUT frames of at most ``max_data`` data bytes each (a larger value gets one alone,
    for the server to refuse)."""
    frames: list[PutFrame] = []
    msg, parts, used = pb.DataPut(namespace=ns), list[memoryview](), 0

    def flush() -> None:
        nonlocal msg, parts, used
        if msg.items:
            frames.append(PutFrame(frame(PUT, request + len(frames), msg, used), parts, len(msg.items)))
        msg, parts, used = pb.DataPut(namespace=ns), [], 0

    for key, value, parent in items:
        raw, dtype, shape = value_to_raw(value)
        if used and used + len(raw) > max_data:
            flush()
        item = msg.items.add(key=key, size=len(raw))
        if dtype is not None:
            item.array.dtype = dtype
            item.array.shape.extend(shape or ())
        if parent:
            item.parent = parent
        parts.append(raw)
        used += len(raw)
    flush()
    return frames


def get_frames(
    ns: str, keys: Sequence[bytes], promote: bool, request: int, per_frame: int
) -> list[tuple[bytes, range]]:
    """A batch of keys as GET frames of ``per_frame`` keys (pipelined: sent before any answer is read)."""
    out = []
    for n, start in enumerate(range(0, len(keys), per_frame)):
        part = range(start, min(len(keys), start + per_frame))
        msg = pb.DataGet(namespace=ns, keys=[keys[i] for i in part], no_promote=not promote)
        out.append((frame(GET, request + n, msg), part))
    return out
