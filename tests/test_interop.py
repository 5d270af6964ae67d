"""What a client built from the proto alone, in another language, may send and ask: PutChunk's fields in
any order, fields this server does not know, and server reflection as ``v1`` as well as ``v1alpha``."""

from __future__ import annotations

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from memstore import Client, TieredStore
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import WireError, parse_chunk, split_data, varint
from memstore_server import create_server
from tests.conftest import MiB


def _field(number: int, kind: int, body: bytes) -> bytes:
    return varint(number << 3 | kind) + body


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, varint(len(data)) + data)


def _items(*items: pb.PutItem) -> bytes:
    return b"".join(_bytes_field(2, it.SerializeToString()) for it in items)


@pytest.fixture(scope="module")
def target(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = str(tmp_path_factory.mktemp("interop") / "s")
    store = TieredStore(path, hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB)
    running = create_server(store, "127.0.0.1:0")
    yield f"127.0.0.1:{running.port}"
    running.stop(1)
    store.close()


def test_put_chunk_fields_in_any_order_and_unknown_ones(target) -> None:  # type: ignore[no-untyped-def]
    a = pb.PutItem(key=b"a", size=3, length=3)
    b = pb.PutItem(key=b"b", size=2, length=2)
    unknown = (
        _field(99, 0, varint(12345))  # a varint field from a later proto
        + _bytes_field(100, b"later")
        + _field(101, 5, b"\1\2\3\4")  # fixed32
        + _field(102, 1, b"\0" * 8)  # fixed64
        + _field(103, 3, _field(1, 0, varint(7)) + _field(103, 4, b""))  # a group, skipped whole
    )
    messages = {
        "data first": _bytes_field(15, b"xyzpq") + _bytes_field(1, b"default") + _items(a, b),
        "data between the items": _items(a) + _bytes_field(15, b"xyzpq") + _items(b),
        "unknown fields after the data": _items(a, b) + _bytes_field(15, b"xyzpq") + unknown,
        "data twice, the last counts": _bytes_field(15, b"zz") + _items(a, b) + _bytes_field(15, b"xyzpq"),
    }
    channel = grpc.insecure_channel(target)
    put = channel.stream_unary("/memstore.v1.Store/Put")
    with Client(target, local="never", data="never") as client:
        for i, (name, raw) in enumerate(messages.items()):
            ns = f"order{i}"
            client.create_namespace(ns)
            body = raw.replace(_bytes_field(1, b"default"), b"")
            reply = pb.PutResponse.FromString(put(iter([_bytes_field(1, ns.encode()) + body])))
            assert reply.stored == 2, name
            assert client.get_many([b"a", b"b"], ns=ns) == [b"xyz", b"pq"], name
    channel.close()


def test_split_data_refuses_what_protobuf_refuses() -> None:
    good = _items(pb.PutItem(key=b"a", size=1, length=1)) + _bytes_field(15, b"x")
    msg, data = parse_chunk(pb.PutChunk, good)
    assert bytes(data) == b"x" and msg.items[0].key == b"a"
    for bad in (
        good[:-1],  # the data field cut short
        _field(0, 0, b"\1"),  # field number 0
        _field(7, 6, b""),  # wire type 6 does not exist
        _field(9, 0, b"\xff" * 11),  # a varint longer than 64 bits
        _field(103, 3, _field(1, 0, b"\1") + _field(104, 4, b"")),  # a group ended by another number
    ):
        with pytest.raises(WireError):
            split_data(bad)


def test_reflection_answers_v1_and_v1alpha(target) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(target) as channel:
        for package in ("v1", "v1alpha"):
            info = channel.stream_stream(
                f"/grpc.reflection.{package}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            asks = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="memstore.v1.Store"),
            ]
            listed, described = list(info(iter(asks), timeout=10))
            names = {s.name for s in listed.list_services_response.service}
            wanted = {
                "memstore.v1.Store",
                "memstore.v1.Memory",
                f"grpc.reflection.{package}.ServerReflection",
            }
            assert wanted <= names
            assert described.file_descriptor_response.file_descriptor_proto, package
