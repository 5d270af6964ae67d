"""Python clients of the memstore service: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both offer the store's operations with the same meaning as ``TieredStore``: a miss is ``None``, batch
forms make one call per batch. Bulk values travel as raw bytes in messages of about 1 MiB. Calls that
fail with UNAVAILABLE are retried with exponential backoff (every operation here is idempotent); every
other status is raised at once as a ``RemoteError`` carrying the status code.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np

from memstore.errors import CapacityError, MemstoreError
from memstore.record import value_to_raw
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import CHUNK, Assembler, pack, parse_chunk, pieces

__all__ = ["AsyncClient", "Client", "RemoteError"]

T = TypeVar("T")
_SERVICE = "/memstore.v1.Store/"
MAX_MESSAGE_BYTES = CHUNK + (1 << 20)
_DURABILITY = {"cache": pb.CACHE, "persistent": pb.PERSISTENT}
_TIER_FIELDS = (
    "items",
    "bytes",
    "capacity_bytes",
    "hits",
    "misses",
    "demotions",
    "evictions",
    "promotions",
    "checksum_failures",
    "failed_demotions",
    "compression_ratio",
)


class RemoteError(MemstoreError):
    """The server answered with an error status; ``code`` is the grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class RemoteInvalidArgument(RemoteError, ValueError):
    """INVALID_ARGUMENT: the request was malformed (a bad key, value, shape or namespace)."""


class RemoteCapacityError(RemoteError, CapacityError):
    """RESOURCE_EXHAUSTED: a budget, a full persistent tier, or too many concurrent calls."""


def _remote_error(exc: grpc.RpcError) -> RemoteError:
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RemoteInvalidArgument(code, details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RemoteCapacityError(code, details)
    return RemoteError(code, details)


# ---- messages shared by both clients -------------------------------------------------------------


def _put_messages(ns: str, items: list[tuple[bytes, Any]]) -> Iterator[bytes]:
    """Encode a batch as PutChunk messages of about 1 MiB, the data appended without a message copy."""

    def values() -> Iterator[tuple[dict[str, Any], memoryview]]:
        for key, value in items:
            raw, dtype, shape = value_to_raw(value)
            fields: dict[str, Any] = {"key": key, "size": len(raw)}
            if dtype is not None:
                fields["array"] = pb.ArrayInfo(dtype=dtype, shape=shape or ())
            yield fields, raw

    return pack(pb.PutChunk, values(), first={"namespace": ns})


class _GetAssembler:
    """Rebuilds the answer of a Get call from its GetChunk messages."""

    def __init__(self, count: int) -> None:
        self.values: list[Any] = [None] * count
        self._assembler = Assembler(max_size=1 << 62)
        self._array: pb.ArrayInfo | None = None

    def feed(self, raw: bytes) -> None:
        chunk, data = parse_chunk(pb.GetChunk, raw)
        for item, piece in pieces(chunk.items, data):
            if not item.found:
                continue
            if item.offset == 0:
                self._array = item.array if item.HasField("array") else None
            value = self._assembler.feed(item.index, item.size, item.offset, piece)
            if value is None:
                continue
            info = self._array
            if info is not None:
                buf = value if isinstance(value, bytearray) else bytearray(value)
                self.values[item.index] = np.frombuffer(buf, dtype=np.dtype(info.dtype)).reshape(
                    tuple(info.shape)
                )
            else:
                self.values[item.index] = bytes(value)


def _stats_dict(resp: pb.StatsResponse) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in resp.tiers:
        out[t.name] = {f: getattr(t, f) for f in _TIER_FIELDS}
        out[t.name]["compression_ratio"] = t.compression_ratio or None
    out.update(
        namespaces=resp.namespaces, pinned=resp.pinned, policy=resp.policy, hot_segment=resp.hot_segment
    )
    return out


def _channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def _items(items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any]) -> list[tuple[bytes, Any]]:
    return list(items.items()) if isinstance(items, Mapping) else list(items)


def _backoff(attempt: int, base: float) -> float:
    return float(base * (2**attempt) * (0.5 + random.random()))


# ---- blocking client -----------------------------------------------------------------------------


class Client:
    """A blocking client; safe to share between threads."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._channel = grpc.insecure_channel(target, options=_channel_options(max_message_bytes))
        ch = self._channel
        self._create_namespace = ch.unary_unary(_SERVICE + "CreateNamespace")
        self._put = ch.stream_unary(_SERVICE + "Put")
        self._get = ch.unary_stream(_SERVICE + "Get")
        self._delete = ch.unary_unary(_SERVICE + "Delete")
        self._exists = ch.unary_unary(_SERVICE + "Exists")
        self._stats = ch.unary_unary(_SERVICE + "Stats")

    def _call(self, fn: Callable[[float | None], T], timeout: float | None) -> T:
        timeout = self.timeout if timeout is None else timeout
        for attempt in range(self.retries + 1):
            try:
                return fn(timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise _remote_error(exc) from None
                time.sleep(_backoff(attempt, self.backoff))
        raise AssertionError("unreachable")

    def create_namespace(
        self,
        name: str,
        *,
        durability: str = "cache",
        warm_codec: str = "",
        cold_codec: str = "",
        timeout: float | None = None,
    ) -> dict[str, str]:
        if durability not in _DURABILITY:
            raise ValueError(f"durability is 'cache' or 'persistent', not {durability!r}")
        req = pb.CreateNamespaceRequest(
            name=name, durability=_DURABILITY[durability], warm_codec=warm_codec, cold_codec=cold_codec
        ).SerializeToString()
        resp = pb.CreateNamespaceResponse.FromString(
            self._call(lambda t: self._create_namespace(req, timeout=t), timeout)
        )
        ns = resp.namespace
        return {
            "name": ns.name,
            "durability": "persistent" if ns.durability == pb.PERSISTENT else "cache",
            "warm_codec": ns.warm_codec,
            "cold_codec": ns.cold_codec,
        }

    def put(self, key: bytes, value: Any, *, ns: str = "default", timeout: float | None = None) -> None:
        self.put_many([(key, value)], ns=ns, timeout=timeout)

    def put_many(
        self,
        items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any],
        *,
        ns: str = "default",
        timeout: float | None = None,
    ) -> int:
        batch = _items(items)
        resp = self._call(lambda t: self._put(_put_messages(ns, batch), timeout=t), timeout)
        return int(pb.PutResponse.FromString(resp).stored)

    def get(
        self, key: bytes, *, ns: str = "default", promote: bool = True, timeout: float | None = None
    ) -> Any:
        return self.get_many([key], ns=ns, promote=promote, timeout=timeout)[0]

    def get_many(
        self,
        keys: Iterable[bytes],
        *,
        ns: str = "default",
        promote: bool = True,
        timeout: float | None = None,
    ) -> list[Any]:
        keys = list(keys)
        req = pb.GetRequest(namespace=ns, keys=keys, no_promote=not promote).SerializeToString()

        def call(t: float | None) -> list[Any]:
            out = _GetAssembler(len(keys))
            for raw in self._get(req, timeout=t):
                out.feed(raw)
            return out.values

        return self._call(call, timeout)

    def delete(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return self.delete_many([key], ns=ns, timeout=timeout)[0]

    def delete_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        req = pb.KeysRequest(namespace=ns, keys=list(keys)).SerializeToString()
        return list(
            pb.DeleteResponse.FromString(self._call(lambda t: self._delete(req, timeout=t), timeout)).deleted
        )

    def contains(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return self.contains_many([key], ns=ns, timeout=timeout)[0]

    def contains_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        req = pb.KeysRequest(namespace=ns, keys=list(keys)).SerializeToString()
        return list(
            pb.ExistsResponse.FromString(self._call(lambda t: self._exists(req, timeout=t), timeout)).exists
        )

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        req = pb.StatsRequest().SerializeToString()
        return _stats_dict(
            pb.StatsResponse.FromString(self._call(lambda t: self._stats(req, timeout=t), timeout))
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- asyncio client ------------------------------------------------------------------------------


class AsyncClient:
    """The same operations for asyncio; create and use it inside a running event loop."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._channel = grpc.aio.insecure_channel(target, options=_channel_options(max_message_bytes))
        ch = self._channel
        self._create_namespace = ch.unary_unary(_SERVICE + "CreateNamespace")
        self._put = ch.stream_unary(_SERVICE + "Put")
        self._get = ch.unary_stream(_SERVICE + "Get")
        self._delete = ch.unary_unary(_SERVICE + "Delete")
        self._exists = ch.unary_unary(_SERVICE + "Exists")
        self._stats = ch.unary_unary(_SERVICE + "Stats")

    async def _call(self, fn: Callable[[float | None], Any], timeout: float | None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        for attempt in range(self.retries + 1):
            try:
                return await fn(timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise _remote_error(exc) from None
                await asyncio.sleep(_backoff(attempt, self.backoff))
        raise AssertionError("unreachable")

    async def create_namespace(
        self,
        name: str,
        *,
        durability: str = "cache",
        warm_codec: str = "",
        cold_codec: str = "",
        timeout: float | None = None,
    ) -> dict[str, str]:
        if durability not in _DURABILITY:
            raise ValueError(f"durability is 'cache' or 'persistent', not {durability!r}")
        req = pb.CreateNamespaceRequest(
            name=name, durability=_DURABILITY[durability], warm_codec=warm_codec, cold_codec=cold_codec
        ).SerializeToString()
        raw = await self._call(lambda t: self._create_namespace(req, timeout=t), timeout)
        ns = pb.CreateNamespaceResponse.FromString(raw).namespace
        return {
            "name": ns.name,
            "durability": "persistent" if ns.durability == pb.PERSISTENT else "cache",
            "warm_codec": ns.warm_codec,
            "cold_codec": ns.cold_codec,
        }

    async def put(self, key: bytes, value: Any, *, ns: str = "default", timeout: float | None = None) -> None:
        await self.put_many([(key, value)], ns=ns, timeout=timeout)

    async def put_many(
        self,
        items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any],
        *,
        ns: str = "default",
        timeout: float | None = None,
    ) -> int:
        batch = _items(items)

        async def messages() -> AsyncIterator[bytes]:
            for m in _put_messages(ns, batch):
                yield m

        raw = await self._call(lambda t: self._put(messages(), timeout=t), timeout)
        return int(pb.PutResponse.FromString(raw).stored)

    async def get(
        self, key: bytes, *, ns: str = "default", promote: bool = True, timeout: float | None = None
    ) -> Any:
        return (await self.get_many([key], ns=ns, promote=promote, timeout=timeout))[0]

    async def get_many(
        self,
        keys: Iterable[bytes],
        *,
        ns: str = "default",
        promote: bool = True,
        timeout: float | None = None,
    ) -> list[Any]:
        keys = list(keys)
        req = pb.GetRequest(namespace=ns, keys=keys, no_promote=not promote).SerializeToString()

        async def call(t: float | None) -> list[Any]:
            out = _GetAssembler(len(keys))
            async for raw in self._get(req, timeout=t):
                out.feed(raw)
            return out.values

        return await self._call(call, timeout)  # type: ignore[no-any-return]

    async def delete(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return (await self.delete_many([key], ns=ns, timeout=timeout))[0]

    async def delete_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        req = pb.KeysRequest(namespace=ns, keys=list(keys)).SerializeToString()
        raw = await self._call(lambda t: self._delete(req, timeout=t), timeout)
        return list(pb.DeleteResponse.FromString(raw).deleted)

    async def contains(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return (await self.contains_many([key], ns=ns, timeout=timeout))[0]

    async def contains_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        req = pb.KeysRequest(namespace=ns, keys=list(keys)).SerializeToString()
        raw = await self._call(lambda t: self._exists(req, timeout=t), timeout)
        return list(pb.ExistsResponse.FromString(raw).exists)

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        req = pb.StatsRequest().SerializeToString()
        raw = await self._call(lambda t: self._stats(req, timeout=t), timeout)
        return _stats_dict(pb.StatsResponse.FromString(raw))

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
