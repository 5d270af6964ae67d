"""Python clients of the memstore service: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both offer the store's operations with the same meaning as ``TieredStore``: a miss is ``None``, batch
forms make one call per batch. Bulk values travel as raw bytes in messages of about 1 MiB. Calls that
fail with UNAVAILABLE are retried with exponential backoff (every operation here is idempotent); every
other status is raised at once as a ``RemoteError`` carrying the status code.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np
import xxhash

from memstore.errors import CapacityError, MemstoreError
from memstore.local import LocalArena, LocalUnavailable, writable_bytes
from memstore.record import raw_to_value, value_to_raw
from memstore.store import TIER_COUNTERS
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import CHUNK, Assembler, pack, parse_chunk, pieces

__all__ = ["AsyncClient", "Client", "RemoteError"]

T = TypeVar("T")
_SERVICE = "/memstore.v1.Store/"
MAX_MESSAGE_BYTES = CHUNK + (1 << 20)
_DURABILITY = {"cache": pb.CACHE, "persistent": pb.PERSISTENT}
_TIER_FIELDS = (*TIER_COUNTERS, "compression_ratio", "map_bytes")


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


_Item = tuple[bytes, Any, bytes | None]  # key, value, the key it extends in a prefix chain


def _put_messages(ns: str, items: list[_Item]) -> Iterator[bytes]:
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


def _namespace_request(
    name: str,
    durability: str,
    warm_codec: str,
    cold_codec: str,
    value_dtype: str | None,
    value_shape: Iterable[int] | None,
) -> bytes:
    if durability not in _DURABILITY:
        raise ValueError(f"durability is 'cache' or 'persistent', not {durability!r}")
    req = pb.CreateNamespaceRequest(
        name=name, durability=_DURABILITY[durability], warm_codec=warm_codec, cold_codec=cold_codec
    )
    if value_dtype is not None:
        req.value_layout.dtype = value_dtype
        req.value_layout.shape.extend(value_shape or ())
    return req.SerializeToString()


_TIER_NAMES = {pb.TIER_NONE: None, pb.HOT: "hot", pb.WARM: "warm", pb.COLD: "cold"}


_PREFETCH_MODES = {"wait_complete": pb.WAIT_COMPLETE, "best_effort": pb.BEST_EFFORT, "timeout": pb.TIMEOUT}


def _prefetch_request(keys: Iterable[bytes], ns: str, mode: str, wait: float | None) -> bytes:
    if mode not in _PREFETCH_MODES:
        raise ValueError(f"mode is one of {sorted(_PREFETCH_MODES)}, not {mode!r}")
    return pb.PrefetchRequest(
        namespace=ns, keys=list(keys), mode=_PREFETCH_MODES[mode], timeout_ms=int((wait or 0) * 1000)
    ).SerializeToString()


def _keys_request(keys: Iterable[bytes], ns: str) -> bytes:
    return pb.KeysRequest(namespace=ns, keys=list(keys)).SerializeToString()


def _namespace_answer(raw: bytes) -> dict[str, str]:
    ns = pb.CreateNamespaceResponse.FromString(raw).namespace
    durability = "persistent" if ns.durability == pb.PERSISTENT else "cache"
    return {
        "name": ns.name,
        "durability": durability,
        "warm_codec": ns.warm_codec,
        "cold_codec": ns.cold_codec,
    }


def _stats_dict(resp: pb.StatsResponse) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in resp.tiers:
        out[t.name] = {f: getattr(t, f) for f in _TIER_FIELDS}
        out[t.name]["compression_ratio"] = t.compression_ratio or None
    if "cold" in out:
        out["cold"]["reader_slots"] = resp.cold_reader_slots
    out.update(
        namespaces=resp.namespaces, pinned=resp.pinned, policy=resp.policy, hot_segment=resp.hot_segment
    )
    out["scope"] = resp.scope or None  # None: the whole store's figures (an admin caller)
    out["tenants"] = {
        u.tenant: {f.name: getattr(u, f.name) for f in u.DESCRIPTOR.fields if f.name != "tenant"}
        for u in resp.tenants
    }
    return out


def _channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def _tls_credentials(ca: str | None, cert: str | None, key: str | None) -> Any:
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


def _items(
    items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any], parents: Sequence[bytes | None] | None
) -> list[_Item]:
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    if parents is not None and len(parents) != len(pairs):
        raise ValueError(f"{len(parents)} parents given for {len(pairs)} values")
    return [(k, v, parents[i] if parents is not None else None) for i, (k, v) in enumerate(pairs)]


def _backoff(attempt: int, base: float) -> float:
    return float(base * (2**attempt) * (0.5 + random.random()))


# ---- the local path, shared by both clients ------------------------------------------------------

LOCAL_MODES = ("auto", "always", "never")
LOCAL_RETRIES = 3  # rounds of locate-and-copy before the leftovers are fetched over gRPC


def _check_mode(local: str) -> str:
    if local not in LOCAL_MODES:
        raise ValueError(f"local is one of {LOCAL_MODES}, not {local!r}")
    return local


def _open_arena(raw: bytes) -> LocalArena:
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


class _LocalRead:
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

    def leftovers(self) -> list[int]:
        self.stats["grpc_fallbacks"] += len(self.pending) + len(self.remote)
        return sorted(self.remote + self.pending)


def _copy_into(value: Any, out: memoryview) -> int:
    data, _, _ = value_to_raw(value)
    if len(out) < len(data):
        raise ValueError(f"the buffer holds {len(out)} bytes, the value has {len(data)}")
    out[: len(data)] = data
    return len(data)


class _LocalWrite:
    """One batched local put: reserve, write in place, commit; what got no room goes over gRPC."""

    def __init__(self, items: list[_Item]):
        self.items = items
        self.raws = [value_to_raw(v) for _, v, _ in items]

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
}


class _ClientBase:
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

    def _setup(
        self, channel: Any, target: str, timeout: float | None, retries: int, backoff: float, local: str
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.local_mode = _check_mode(local)
        self.local_stats = {"local_copies": 0, "local_retries": 0, "grpc_fallbacks": 0}
        self.locations = LocationCache()
        self._arena: LocalArena | None = None
        self._arena_checked = False
        self._channel = channel
        for rpc, (attr, kind) in _METHODS.items():
            setattr(self, attr, getattr(channel, kind)(_SERVICE + rpc))

    def _arena_answer(self, answer: bytes | RemoteError) -> LocalArena | None:
        """Open the arena from an OpenLocal answer, or settle on gRPC (raising in "always" mode)."""
        try:
            if isinstance(answer, RemoteError):
                raise answer
            self._arena = _open_arena(answer)
        except (LocalUnavailable, RemoteError) as exc:
            if self.local_mode == "always":
                raise LocalUnavailable(f"local mode was required: {exc}") from exc
        self._arena_checked = True
        return self._arena

    def _close_arena(self) -> None:
        if self._arena is not None:
            self._arena.close()
            self._arena = None


# ---- blocking client -----------------------------------------------------------------------------


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call of a blocking channel."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*list(details.metadata or []), self.header]
        return (
            details._replace(metadata=metadata)
            if hasattr(details, "_replace")
            else _Details(details, metadata)
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    intercept_unary_stream = intercept_unary_unary
    intercept_stream_unary = intercept_unary_unary
    intercept_stream_stream = intercept_unary_unary


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _AsyncBearer:
    """Adds ``authorization: Bearer <token>`` to asyncio calls. grpc.aio files each interceptor under one
    kind only, so there is one small class per kind of call."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = grpc.aio.Metadata(*[*list(details.metadata or ()), self.header])
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _AsyncBearerUU(_AsyncBearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AsyncBearerUS(_AsyncBearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AsyncBearerSU(_AsyncBearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class Client(_ClientBase):
    """A blocking client; safe to share between threads."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        local: str = "auto",
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        """``local``: "auto" copies through the server's shared-memory arena when it is on this host and
        falls back to gRPC otherwise; "always" raises if the arena cannot be mapped; "never" uses gRPC only.
        ``token``: a bearer token for servers started with ``--auth-tokens``. ``tls_ca`` (PEM path) turns
        on TLS; ``tls_cert``/``tls_key`` present a client certificate (mutual TLS).
        """
        creds = _tls_credentials(tls_ca, tls_cert, tls_key)
        options = _channel_options(max_message_bytes)
        channel = (
            grpc.secure_channel(target, creds, options=options)
            if creds
            else grpc.insecure_channel(target, options=options)
        )
        if token:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        self._setup(channel, target, timeout, retries, backoff, local)
        self._arena_lock = threading.Lock()
        from memstore.memory_client import MemoryClient

        self.memory = MemoryClient(self)

    @property
    def local(self) -> bool:
        """Whether data moves through the server's shared-memory arena (negotiated on first use)."""
        return self._local_arena() is not None

    def _local_arena(self) -> LocalArena | None:
        if self.local_mode == "never":
            return None
        with self._arena_lock:
            if self._arena_checked:
                return self._arena
            request = pb.OpenLocalRequest().SerializeToString()
            try:
                answer: bytes | RemoteError = self._call(lambda t: self._open_local(request, timeout=t), None)
            except RemoteError as exc:
                answer = exc
            return self._arena_answer(answer)

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
        value_dtype: str | None = None,
        value_shape: Iterable[int] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Create a namespace (or confirm an identical one). ``value_dtype``/``value_shape`` make every
        value an array of exactly that layout (KV-cache namespaces)."""
        req = _namespace_request(name, durability, warm_codec, cold_codec, value_dtype, value_shape)
        return _namespace_answer(self._call(lambda t: self._create_namespace(req, timeout=t), timeout))

    def put(self, key: bytes, value: Any, *, ns: str = "default", timeout: float | None = None) -> None:
        self.put_many([(key, value)], ns=ns, timeout=timeout)

    def put_many(
        self,
        items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any],
        *,
        ns: str = "default",
        parents: Sequence[bytes | None] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Store values; ``parents`` names, per item, the key of the block it extends in a prefix chain
        (or None), so prefix-aware eviction keeps a chain's head longer than its tail."""
        batch = _items(items, parents)
        stored = 0
        arena = self._local_arena() if batch else None
        if arena is not None:
            plan = _LocalWrite(batch)
            begin = plan.begin_request(ns)
            commit, batch = plan.write(
                arena, self._call(lambda t: self._local_put_begin(begin, timeout=t), timeout)
            )
            self._call(lambda t: self._local_put_commit(commit, timeout=t), timeout)
            stored = len(plan.items) - len(batch)  # what is left in batch had no room in the arena
            if not batch:
                return stored
        resp = self._call(lambda t: self._put(_put_messages(ns, batch), timeout=t), timeout)
        return stored + int(pb.PutResponse.FromString(resp).stored)

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
        arena = self._local_arena() if promote else None
        if arena is None:
            return self._grpc_get_many(keys, ns, promote, timeout)
        return self._local_read(arena, keys, None, ns, timeout)

    def get_into(
        self, keys: Iterable[bytes], outs: Iterable[Any], *, ns: str = "default", timeout: float | None = None
    ) -> list[int | None]:
        """Copy values straight into caller buffers (bytearray, numpy arrays, CPU torch tensors).

        Returns each value's size in bytes, or None for a miss. A buffer smaller than its value raises.
        """
        keys = list(keys)
        views = [writable_bytes(o) for o in outs]
        if len(views) != len(keys):
            raise ValueError("get_into needs one output buffer per key")
        arena = self._local_arena()
        if arena is not None:
            return self._local_read(arena, keys, views, ns, timeout)
        values = self._grpc_get_many(keys, ns, True, timeout)
        return [None if v is None else _copy_into(v, out) for v, out in zip(values, views, strict=True)]

    def _local_read(
        self,
        arena: LocalArena,
        keys: list[bytes],
        outs: list[memoryview] | None,
        ns: str,
        timeout: float | None,
    ) -> list[Any]:
        read = _LocalRead(arena, keys, outs, self.local_stats, self.locations, ns)
        for _ in range(LOCAL_RETRIES):
            if not read.pending:
                break
            req = read.request()
            if read.absorb(self._call(lambda t: self._local_get(req, timeout=t), timeout)):  # noqa: B023
                break
        rest = read.leftovers()
        if rest:
            fetched = self._grpc_get_many([keys[i] for i in rest], ns, True, timeout)
            for i, v in zip(rest, fetched, strict=True):
                read.values[i] = v if outs is None or v is None else _copy_into(v, outs[i])
        return read.values

    def _grpc_get_many(self, keys: list[bytes], ns: str, promote: bool, timeout: float | None) -> list[Any]:
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

    def tiers(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[str | None]:
        """The tier holding each key ("hot", "warm", "cold") or None, in one call; nothing is read."""
        req = _keys_request(keys, ns)
        raw = self._call(lambda t: self._lookup(req, timeout=t), timeout)
        return [_TIER_NAMES[t] for t in pb.LookupResponse.FromString(raw).tiers]

    def prefetch(
        self,
        keys: Iterable[bytes],
        *,
        ns: str = "default",
        mode: str = "wait_complete",
        wait: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """Promote keys toward the hot tier ahead of a get; returns how many are in hot when it returns.

        ``mode``: "wait_complete", "best_effort" (returns at once) or "timeout" (waits at most ``wait`` s).
        """
        req = _prefetch_request(keys, ns, mode, wait)
        return int(
            pb.PrefetchResponse.FromString(
                self._call(lambda t: self._prefetch(req, timeout=t), timeout)
            ).in_hot
        )

    def hint(self, *, ns: str = "default", prefix: bytes = b"", timeout: float | None = None) -> None:
        """Tell the server a namespace (or its keys starting with ``prefix``) is about to be used."""
        req = pb.PrefetchRequest(namespace=ns, hint=True, prefix=prefix).SerializeToString()
        self._call(lambda t: self._prefetch(req, timeout=t), timeout)

    def pin(
        self, keys: Iterable[bytes], *, ns: str = "default", unpin: bool = False, timeout: float | None = None
    ) -> list[bool]:
        req = pb.PinRequest(namespace=ns, keys=list(keys), unpin=unpin).SerializeToString()
        return list(
            pb.PinResponse.FromString(self._call(lambda t: self._pin(req, timeout=t), timeout)).changed
        )

    def unpin(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return self.pin(keys, ns=ns, unpin=True, timeout=timeout)

    def delete_namespace(self, name: str, *, timeout: float | None = None) -> int:
        req = pb.DeleteNamespaceRequest(name=name).SerializeToString()
        raw = self._call(lambda t: self._delete_namespace(req, timeout=t), timeout)
        return int(pb.DeleteNamespaceResponse.FromString(raw).removed)

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        req = pb.StatsRequest().SerializeToString()
        return _stats_dict(
            pb.StatsResponse.FromString(self._call(lambda t: self._stats(req, timeout=t), timeout))
        )

    def close(self) -> None:
        self._close_arena()
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- asyncio client ------------------------------------------------------------------------------


class AsyncClient(_ClientBase):
    """The same operations for asyncio; create and use it inside a running event loop.

    Local-path copies run inline (they take microseconds to a few milliseconds); only calls await.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        local: str = "auto",
        token: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        interceptors = (
            [_AsyncBearerUU(token), _AsyncBearerUS(token), _AsyncBearerSU(token)] if token else None
        )
        creds = _tls_credentials(tls_ca, tls_cert, tls_key)
        options = _channel_options(max_message_bytes)
        if creds:
            channel = grpc.aio.secure_channel(target, creds, options=options, interceptors=interceptors)
        else:
            channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        self._setup(channel, target, timeout, retries, backoff, local)
        self._arena_lock = asyncio.Lock()
        from memstore.memory_client import AsyncMemoryClient

        self.memory = AsyncMemoryClient(self)

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

    async def local(self) -> bool:
        """Whether data moves through the server's shared-memory arena (negotiated on first use)."""
        return await self._local_arena() is not None

    async def _local_arena(self) -> LocalArena | None:
        if self.local_mode == "never":
            return None
        async with self._arena_lock:
            if self._arena_checked:
                return self._arena
            request = pb.OpenLocalRequest().SerializeToString()
            try:
                answer: bytes | RemoteError = await self._call(
                    lambda t: self._open_local(request, timeout=t), None
                )
            except RemoteError as exc:
                answer = exc
            return self._arena_answer(answer)

    async def create_namespace(
        self,
        name: str,
        *,
        durability: str = "cache",
        warm_codec: str = "",
        cold_codec: str = "",
        value_dtype: str | None = None,
        value_shape: Iterable[int] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Create a namespace (or confirm an identical one). ``value_dtype``/``value_shape`` make every
        value an array of exactly that layout (KV-cache namespaces)."""
        req = _namespace_request(name, durability, warm_codec, cold_codec, value_dtype, value_shape)
        return _namespace_answer(await self._call(lambda t: self._create_namespace(req, timeout=t), timeout))

    async def put(self, key: bytes, value: Any, *, ns: str = "default", timeout: float | None = None) -> None:
        await self.put_many([(key, value)], ns=ns, timeout=timeout)

    async def put_many(
        self,
        items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any],
        *,
        ns: str = "default",
        parents: Sequence[bytes | None] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Store values; ``parents`` names, per item, the key of the block it extends in a prefix chain
        (or None), so prefix-aware eviction keeps a chain's head longer than its tail."""
        batch = _items(items, parents)
        stored = 0
        arena = await self._local_arena() if batch else None
        if arena is not None:
            plan = _LocalWrite(batch)
            begin = plan.begin_request(ns)
            answer = await self._call(lambda t: self._local_put_begin(begin, timeout=t), timeout)
            commit, batch = plan.write(arena, answer)
            await self._call(lambda t: self._local_put_commit(commit, timeout=t), timeout)
            stored = len(plan.items) - len(batch)
            if not batch:
                return stored

        async def messages() -> AsyncIterator[bytes]:
            for m in _put_messages(ns, batch):
                yield m

        raw = await self._call(lambda t: self._put(messages(), timeout=t), timeout)
        return stored + int(pb.PutResponse.FromString(raw).stored)

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
        arena = await self._local_arena() if promote else None
        if arena is None:
            return await self._grpc_get_many(keys, ns, promote, timeout)
        return await self._local_read(arena, keys, None, ns, timeout)

    async def get_into(
        self, keys: Iterable[bytes], outs: Iterable[Any], *, ns: str = "default", timeout: float | None = None
    ) -> list[int | None]:
        """Copy values straight into caller buffers; see ``Client.get_into``."""
        keys = list(keys)
        views = [writable_bytes(o) for o in outs]
        if len(views) != len(keys):
            raise ValueError("get_into needs one output buffer per key")
        arena = await self._local_arena()
        if arena is not None:
            return await self._local_read(arena, keys, views, ns, timeout)
        values = await self._grpc_get_many(keys, ns, True, timeout)
        return [None if v is None else _copy_into(v, out) for v, out in zip(values, views, strict=True)]

    async def _local_read(
        self,
        arena: LocalArena,
        keys: list[bytes],
        outs: list[memoryview] | None,
        ns: str,
        timeout: float | None,
    ) -> list[Any]:
        read = _LocalRead(arena, keys, outs, self.local_stats, self.locations, ns)
        for _ in range(LOCAL_RETRIES):
            if not read.pending:
                break
            req = read.request()
            if read.absorb(await self._call(lambda t: self._local_get(req, timeout=t), timeout)):  # noqa: B023
                break
        rest = read.leftovers()
        if rest:
            fetched = await self._grpc_get_many([keys[i] for i in rest], ns, True, timeout)
            for i, v in zip(rest, fetched, strict=True):
                read.values[i] = v if outs is None or v is None else _copy_into(v, outs[i])
        return read.values

    async def _grpc_get_many(
        self, keys: list[bytes], ns: str, promote: bool, timeout: float | None
    ) -> list[Any]:
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

    async def tiers(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[str | None]:
        req = _keys_request(keys, ns)
        raw = await self._call(lambda t: self._lookup(req, timeout=t), timeout)
        return [_TIER_NAMES[t] for t in pb.LookupResponse.FromString(raw).tiers]

    async def prefetch(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> int:
        req = _keys_request(keys, ns)
        raw = await self._call(lambda t: self._prefetch(req, timeout=t), timeout)
        return int(pb.PrefetchResponse.FromString(raw).in_hot)

    async def pin(
        self, keys: Iterable[bytes], *, ns: str = "default", unpin: bool = False, timeout: float | None = None
    ) -> list[bool]:
        req = pb.PinRequest(namespace=ns, keys=list(keys), unpin=unpin).SerializeToString()
        return list(
            pb.PinResponse.FromString(await self._call(lambda t: self._pin(req, timeout=t), timeout)).changed
        )

    async def unpin(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return await self.pin(keys, ns=ns, unpin=True, timeout=timeout)

    async def delete_namespace(self, name: str, *, timeout: float | None = None) -> int:
        req = pb.DeleteNamespaceRequest(name=name).SerializeToString()
        raw = await self._call(lambda t: self._delete_namespace(req, timeout=t), timeout)
        return int(pb.DeleteNamespaceResponse.FromString(raw).removed)

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        req = pb.StatsRequest().SerializeToString()
        raw = await self._call(lambda t: self._stats(req, timeout=t), timeout)
        return _stats_dict(pb.StatsResponse.FromString(raw))

    async def close(self) -> None:
        self._close_arena()
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
