"""What both clients share, sans I/O: errors, the messages of every call and how to read the answers,
the same-host path's plans (which calls to make, what to copy), settings and RPC handles.

A unary operation is a ``Unary``: the RPC handle to call, the request's bytes and the function that reads
the answer. ``Client`` runs one with a blocking call and ``AsyncClient`` awaits it; neither builds a
message or parses an answer itself.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import xxhash

from memstore.client_calls import Unary
from memstore.errors import CapacityError, MemstoreError
from memstore.local import LocalArena, LocalUnavailable
from memstore.record import raw_to_value, value_to_raw
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import CHUNK, Assembler, pack, parse_chunk, pieces

R = TypeVar("R")
SERVICE = "/memstore.v1.Store/"
MAX_MESSAGE_BYTES = CHUNK + (1 << 20)


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


def remote_error(exc: grpc.RpcError) -> RemoteError:
    return error_of(exc.code(), exc.details() or "")


def error_of(code: grpc.StatusCode, details: str) -> RemoteError:
    """The error a client raises for a status, whichever path (gRPC, the data plane) answered it."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RemoteInvalidArgument(code, details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RemoteCapacityError(code, details)
    return RemoteError(code, details)


# ---- messages shared by both clients -------------------------------------------------------------


_Item = tuple[bytes, Any, bytes | None]  # key, value, the key it extends in a prefix chain


def put_messages(ns: str, items: list[_Item]) -> Iterator[bytes]:
    """Encode a batch as PutChunk messages of about 1 MiB, the data appended without a message copy."""

    def values() -> Iterator[tuple[dict[str, Any], memoryview]]:
        for key, value, parent in items:
            raw, dtype, shape = value_to_raw(value)
            fields: dict[str, Any] = {"key": key, "size": len(raw)}
            if parent:
                fields["parent"] = parent
            if dtype is not None:
                fields["array"] = pb.ArrayInfo(dtype=dtype, shape=shape or ())
            yield fields, raw

    return pack(pb.PutChunk, values(), first={"namespace": ns})


class GetAssembler:
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


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def tls_credentials(ca: str | None, cert: str | None, key: str | None) -> Any:
    if not (ca or cert):
        return None

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )


def items_of(
    items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any], parents: Sequence[bytes | None] | None
) -> list[_Item]:
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    if parents is not None and len(parents) != len(pairs):
        raise ValueError(f"{len(parents)} parents given for {len(pairs)} values")
    return [(k, v, parents[i] if parents is not None else None) for i, (k, v) in enumerate(pairs)]


def batch_bytes(batch: list[_Item]) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else len(v) for _, v, _ in batch)


def backoff_delay(attempt: int, base: float) -> float:
    return float(base * (2**attempt) * (0.5 + random.random()))


# ---- the local path, shared by both clients ------------------------------------------------------

LOCAL_MODES = ("auto", "always", "never")
LOCAL_RETRIES = 3  # rounds of locate-and-copy before the leftovers are fetched over gRPC


def check_mode(local: str) -> str:
    if local not in LOCAL_MODES:
        raise ValueError(f"local is one of {LOCAL_MODES}, not {local!r}")
    return local


def open_arena(raw: bytes) -> LocalArena:
    resp = pb.OpenLocalResponse.FromString(raw)
    return LocalArena(
        resp.segment_path, resp.segment_size, server_boot_id=resp.boot_id, server_pid=resp.server_pid
    )


class LocationCache:
    """Where keys were last found in the arena, so a repeated get needs no call at all.

    A cached location is only a hint: the copy is accepted only if the slot still has the generation it
    had when located (any free, reuse or overwrite of the slot changes it) and the bytes match their
    checksum. Hits served from the cache are not seen by the server's eviction order.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.capacity = capacity
        self._map: OrderedDict[tuple[str, bytes], pb.Location] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ns: str, key: bytes) -> pb.Location | None:
        with self._lock:
            return self._map.get((ns, key))

    def put(self, ns: str, key: bytes, loc: pb.Location) -> None:
        with self._lock:
            self._map[(ns, key)] = loc
            self._map.move_to_end((ns, key))
            if len(self._map) > self.capacity:
                self._map.popitem(last=False)

    def drop(self, ns: str, key: bytes) -> None:
        with self._lock:
            self._map.pop((ns, key), None)


class LocalRead:
    """One batched local read: cached locations first, then locate, copy, retry what moved, and list
    what must come over gRPC."""

    def __init__(
        self,
        arena: LocalArena,
        keys: list[bytes],
        outs: list[memoryview] | None,
        stats: dict[str, int],
        cache: LocationCache,
        ns: str,
    ):
        self.arena, self.keys, self.outs, self.stats, self.cache, self.ns = (
            arena,
            keys,
            outs,
            stats,
            cache,
            ns,
        )
        self.values: list[Any] = [None] * len(keys)
        self.pending: list[int] = []
        self.remote: list[int] = []
        for i, key in enumerate(keys):
            loc = cache.get(ns, key)
            if loc is None or not self._copy(i, loc):
                self.pending.append(i)

    def _copy(self, i: int, loc: pb.Location) -> bool:
        out = self.outs[i] if self.outs is not None else None
        got = self.arena.copy(loc.slot, loc.offset, loc.length, loc.generation, out)
        if got is None:
            self.cache.drop(self.ns, self.keys[i])
            return False
        meta, buf = got
        self.stats["local_copies"] += 1
        self.values[i] = meta.raw_len if out is not None else raw_to_value(buf, meta)
        return True

    def calls(self) -> Iterator[Unary[bool]]:
        """The LocalGet calls still to make: at most LOCAL_RETRIES rounds, while keys are left to copy."""
        for _ in range(LOCAL_RETRIES):
            if not self.pending:
                return
            yield Unary("_local_get", self.request(), self.absorb)

    def request(self) -> bytes:
        return pb.GetRequest(namespace=self.ns, keys=[self.keys[i] for i in self.pending]).SerializeToString()

    def absorb(self, raw: bytes) -> bool:
        """Copy what the locations point at; True when nothing is left to retry."""
        locs = pb.LocalGetResponse.FromString(raw).locations
        if len(locs) != len(self.pending):
            raise MemstoreError("the server answered a different number of locations")
        retry = []
        for i, loc in zip(self.pending, locs, strict=True):
            if loc.status == pb.LOCAL_MISS:
                continue
            if loc.status == pb.LOCAL_REMOTE:
                self.remote.append(i)
                continue
            if self._copy(i, loc):
                self.cache.put(self.ns, self.keys[i], loc)
            else:
                retry.append(i)
                self.stats["local_retries"] += 1
        self.pending = retry
        return not retry

    def fill(self, rest: list[int], fetched: list[Any]) -> None:
        """Take the values of ``rest`` (indexes of ``leftovers``) as fetched over gRPC."""
        for i, v in zip(rest, fetched, strict=True):
            self.values[i] = v if self.outs is None or v is None else copy_into(v, self.outs[i])

    def leftovers(self) -> list[int]:
        self.stats["grpc_fallbacks"] += len(self.pending) + len(self.remote)
        return sorted(self.remote + self.pending)


def copy_into(value: Any, out: memoryview) -> int:
    data, _, _ = value_to_raw(value)
    if len(out) < len(data):
        raise ValueError(f"the buffer holds {len(out)} bytes, the value has {len(data)}")
    out[: len(data)] = data
    return len(data)


class LocalWrite:
    """One batched local put: reserve, write in place, commit; what got no room goes over gRPC."""

    def __init__(self, items: list[_Item]):
        self.items = items
        self.raws = [value_to_raw(v) for _, v, _ in items]

    def begin(self, arena: LocalArena, ns: str) -> Unary[tuple[bytes, list[_Item]]]:
        """The reserving call; its answer is the commit request and the items left for gRPC."""
        return Unary("_local_put_begin", self.begin_request(ns), lambda raw: self.write(arena, raw))

    @staticmethod
    def commit(request: bytes) -> Unary[None]:
        return Unary("_local_put_commit", request, lambda raw: None)

    def begin_request(self, ns: str) -> bytes:
        req = pb.LocalPutBeginRequest(namespace=ns)
        for (key, _, parent), (raw, dtype, shape) in zip(self.items, self.raws, strict=True):
            item = req.items.add(key=key, size=len(raw), parent=parent or b"")
            if dtype is not None:
                item.array.dtype = dtype
                item.array.shape.extend(shape or ())
        return req.SerializeToString()

    def write(self, arena: LocalArena, raw_resp: bytes) -> tuple[bytes, list[_Item]]:
        """Write the reserved values; returns the commit request and the items left for gRPC."""
        reserved = pb.LocalPutBeginResponse.FromString(raw_resp).reserved
        commit = pb.LocalPutCommitRequest()
        rest = []
        for item, (raw, _, _), r in zip(self.items, self.raws, reserved, strict=True):
            if r.ok:
                arena.write(r.offset, raw)
                commit.commit.append(r.token)
                commit.checksums.append(xxhash.xxh3_64_intdigest(raw))  # the server checks the arena holds it
            else:
                rest.append(item)
        return commit.SerializeToString(), rest


_METHODS = {  # RPC name -> (attribute, cardinality)
    "CreateNamespace": ("_create_namespace", "unary_unary"),
    "Put": ("_put", "stream_unary"),
    "Get": ("_get", "unary_stream"),
    "Delete": ("_delete", "unary_unary"),
    "Exists": ("_exists", "unary_unary"),
    "Stats": ("_stats", "unary_unary"),
    "Lookup": ("_lookup", "unary_unary"),
    "Prefetch": ("_prefetch", "unary_unary"),
    "Pin": ("_pin", "unary_unary"),
    "DeleteNamespace": ("_delete_namespace", "unary_unary"),
    "OpenLocal": ("_open_local", "unary_unary"),
    "LocalGet": ("_local_get", "unary_unary"),
    "LocalPutBegin": ("_local_put_begin", "unary_unary"),
    "LocalPutCommit": ("_local_put_commit", "unary_unary"),
    "OpenData": ("_open_data", "unary_unary"),
    "Explain": ("_explain", "unary_unary"),
    "EndSession": ("_end_session", "unary_unary"),
}


class ClientBase:
    """Settings and RPC handles shared by the blocking and the asyncio client."""

    _channel: Any
    # RPC handles, made from _METHODS in _setup
    _create_namespace: Any
    _put: Any
    _get: Any
    _delete: Any
    _exists: Any
    _stats: Any
    _lookup: Any
    _prefetch: Any
    _pin: Any
    _delete_namespace: Any
    _open_local: Any
    _local_get: Any
    _local_put_begin: Any
    _local_put_commit: Any
    _open_data: Any
    _explain: Any
    _end_session: Any

    def _setup(
        self, channel: Any, target: str, timeout: float | None, retries: int, backoff: float, local: str
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.local_mode = check_mode(local)
        self.local_stats = {"local_copies": 0, "local_retries": 0, "grpc_fallbacks": 0}
        self.locations = LocationCache()
        self._arena: LocalArena | None = None
        self._arena_checked = False
        self._channel = channel
        for rpc, (attr, kind) in _METHODS.items():
            setattr(self, attr, getattr(channel, kind)(SERVICE + rpc))

    def _arena_answer(self, answer: bytes | RemoteError) -> LocalArena | None:
        """Open the arena from an OpenLocal answer, or settle on gRPC (raising in "always" mode)."""
        try:
            if isinstance(answer, RemoteError):
                raise answer
            self._arena = open_arena(answer)
        except (LocalUnavailable, RemoteError) as exc:
            if self.local_mode == "always":
                raise LocalUnavailable(f"local mode was required: {exc}") from exc
        self._arena_checked = True
        return self._arena

    def _close_arena(self) -> None:
        if self._arena is not None:
            self._arena.close()
            self._arena = None
