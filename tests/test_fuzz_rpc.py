"""Every RPC of both services fuzzed with Hypothesis-built messages: random field values of the right
types (and zstd bombs, huge declared sizes, wrong shapes, bad UTF-8 in bytes), and raw random bytes.
Only the statuses the README gives for bad input come back (INVALID_ARGUMENT, NOT_FOUND,
RESOURCE_EXHAUSTED, FAILED_PRECONDITION: never UNKNOWN, INTERNAL or UNIMPLEMENTED); the server stays up;
another tenant's sentinel, kept under the very names the fuzzer sends, is untouched; and the server's
memory stays bounded."""

from __future__ import annotations

import os
from typing import Any

import grpc
import psutil
import pytest
import zstandard
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memstore import Client, TieredStore
from memstore.v1 import memstore_pb2 as pb
from memstore_server import create_server
from memstore_server.auth import create_token
from tests.conftest import MiB

DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
BOMB = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(b"\0" * (64 * MiB))
METHODS = [
    (service.full_name, method)
    for service in pb.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]

_SCALARS: dict[int, Any] = {
    FieldDescriptor.TYPE_STRING: st.one_of(
        st.text(max_size=40), st.sampled_from(["default", "", "t.x.y", "victim#default", "victim!memory"])
    ),
    FieldDescriptor.TYPE_BYTES: st.one_of(
        st.binary(max_size=300),
        st.just(BOMB),
        st.just(b"\xff\xfe\xfd"),
        st.just(b"k" * 5000),
        st.just(b"sentinel"),  # the victim's key, in the namespace the fuzzer names most: "default"
    ),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(allow_nan=True, width=32),
}


_WIDE = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT64,
}


def _field(fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        inner = _message(fd.message_type, depth + 1) if depth < 2 else st.none()
    elif fd.type == FieldDescriptor.TYPE_ENUM:
        inner = st.sampled_from([v.number for v in fd.enum_type.values] + [99])
    elif fd.type in _SCALARS:
        inner = _SCALARS[fd.type]
    else:  # integers: signed and unsigned, small and huge (declared sizes, shapes, limits)
        unsigned = fd.type in (
            FieldDescriptor.TYPE_UINT32,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_FIXED32,
            FieldDescriptor.TYPE_FIXED64,
        )
        bits = 64 if fd.type in _WIDE else 32
        lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        inner = st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0, 1]))
    if fd.is_repeated:
        return st.lists(inner, max_size=4)
    return inner


def _message(desc: Any, depth: int = 0) -> st.SearchStrategy[bytes]:
    fields = {fd.name: _field(fd, depth) for fd in desc.fields}

    def build(values: dict[str, Any]) -> Any:
        msg = pb.__dict__.get(desc.name) or _lookup(desc)
        out = msg()
        for name, value in values.items():
            if value is None:
                continue
            fd = desc.fields_by_name[name]
            try:
                if fd.is_repeated:
                    if fd.type == FieldDescriptor.TYPE_MESSAGE:
                        for v in value:
                            if v is not None:
                                getattr(out, name).add().MergeFromString(v)
                    else:
                        getattr(out, name).extend(value)
                elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                    getattr(out, name).MergeFromString(value)
                else:
                    setattr(out, name, value)
            except (ValueError, TypeError):
                pass  # a value the field cannot hold locally (map fields, oneofs): leave it unset
        return out.SerializeToString()

    return st.fixed_dictionaries({k: st.one_of(st.none(), v) for k, v in fields.items()}).map(build)


def _lookup(desc: Any) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


@pytest.fixture(scope="module")
def target(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A server with tokens on: the fuzzer is tenant ``fuzz``'s admin; tenant ``victim`` keeps a sentinel
    under the names the fuzzer uses most (namespace ``default``, key ``sentinel``) and in agent memory."""
    path = tmp_path_factory.mktemp("fuzz")
    tokens = str(path / "tokens.jsonl")
    fuzz, victim = create_token(tokens, "fuzz", "admin"), create_token(tokens, "victim", "admin")
    store = TieredStore(
        str(path / "store"), hot_bytes=16 * MiB, warm_bytes=16 * MiB, cold_bytes=128 * MiB, prefault=False
    )
    sock = f"unix:{tmp_path_factory.mktemp('sock')}/m.sock"
    running = create_server(store, sock, auth_tokens=tokens)
    with Client(sock, local="never", token=victim) as c:
        c.put(b"sentinel", b"untouched")
        c.memory.put(("default",), "sentinel", "untouched")
    yield sock, fuzz, victim
    running.stop(1)
    store.close()


def _call(channel: grpc.Channel, service: str, method: Any, payload: bytes, token: str) -> None:
    path = f"/{service}/{method.name}"
    ident = lambda b: b  # noqa: E731 (raw bytes in and out)
    kw = {"timeout": 10, "metadata": (("authorization", f"Bearer {token}"),)}
    if method.client_streaming and method.server_streaming:
        list(channel.stream_stream(path, ident, ident)(iter([payload, payload]), **kw))
    elif method.client_streaming:
        channel.stream_unary(path, ident, ident)(iter([payload]), **kw)
    elif method.server_streaming:
        list(channel.unary_stream(path, ident, ident)(payload, **kw))
    else:
        channel.unary_unary(path, ident, ident)(payload, **kw)


@pytest.mark.parametrize("service,method", METHODS, ids=[f"{s.split('.')[-1]}.{m.name}" for s, m in METHODS])
def test_fuzzed_messages_get_documented_statuses(target, service, method) -> None:  # type: ignore[no-untyped-def]
    sock, fuzz, victim = target
    rss0 = psutil.Process(os.getpid()).memory_info().rss
    channel = grpc.insecure_channel(sock)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
    @given(payload=st.one_of(_message(method.input_type), st.binary(max_size=200)))
    def check(payload: bytes) -> None:
        try:
            _call(channel, service, method, payload, fuzz)
        except grpc.RpcError as exc:
            assert exc.code() in DOCUMENTED, (method.name, exc.code(), exc.details())

    try:
        check()
    finally:
        channel.close()
    with Client(sock, local="never", token=victim) as c:
        assert c.get(b"sentinel") == b"untouched"
        rec = c.memory.get(("default",), "sentinel")
        assert rec is not None and rec.value == "untouched" and rec.version == 1
    grown = psutil.Process(os.getpid()).memory_info().rss - rss0
    assert grown < 256 * MiB, f"{method.name}: RSS grew {grown / MiB:.0f} MiB"
