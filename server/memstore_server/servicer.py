"""The Store service: converts messages to ``TieredStore`` calls and back, nothing more.

Every method takes the request as raw bytes and parses it here, so that undecodable input is answered
with INVALID_ARGUMENT instead of the INTERNAL that grpcio gives when its own deserializer fails. The
bulk messages (PutChunk, GetChunk) go through ``memstore.wire`` so their data is never copied into a
message object.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

from memstore import TieredStore
from memstore.errors import InvalidValueError
from memstore.explain import explain
from memstore.hot import ARENA_VERSION
from memstore.local import boot_id
from memstore.prefetch import Mode as PrefetchMode
from memstore.record import RecordMeta, check_array_meta, value_to_raw
from memstore.retention import Hint
from memstore.store import TIER_COUNTERS, Durability, HotLocation
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import Assembler, ValueTooLarge, pack, parse_chunk, pieces
from memstore_server.auth import (
    credential_still_valid,
    current_caller,
    current_principal,
    current_role,
    current_tenant,
    tenant_namespace,
)
from memstore_server.errors import Abort, status_for
from memstore_server.limits import ByteBudget, CallBytes, Progress, StreamSlots, Watchdog

if TYPE_CHECKING:
    from memstore_server.dataplane import DataPlane

log = logging.getLogger("memstore.server")
M = TypeVar("M", bound=Message)
SERVICE = "memstore.v1.Store"
_DURABILITY: dict[int, Durability] = {
    pb.DURABILITY_UNSPECIFIED: "cache",
    pb.CACHE: "cache",
    pb.PERSISTENT: "persistent",
}
_TIERS = {None: pb.TIER_NONE, "hot": pb.HOT, "warm": pb.WARM, "cold": pb.COLD, "pool": pb.POOL}
_PREFETCH_MODES: dict[int, PrefetchMode] = {
    pb.WAIT_COMPLETE: "wait_complete",
    pb.BEST_EFFORT: "best_effort",
    pb.TIMEOUT: "timeout",
}
_PUT_BATCH_BYTES = 64 << 20  # values are handed to the store in batches of about this size


def parse(cls: type[M], raw: bytes) -> M:
    try:
        return cls.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise Abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"request is not a valid {cls.__name__}: {exc}"
        ) from None


def array_value(data: memoryview | bytes | bytearray, info: pb.ArrayInfo) -> np.ndarray:
    """Turn received bytes and their ArrayInfo into an array, refusing descriptions that disagree."""
    shape = tuple(info.shape)
    check_array_meta(RecordMeta(0, len(data), info.dtype, shape))
    return np.frombuffer(data, dtype=np.dtype(info.dtype)).reshape(shape)


def _tenant_usage(tenant: str, usage: dict[str, Any]) -> pb.TenantUsage:
    quota = usage.get("quota") or {}
    return pb.TenantUsage(
        tenant=tenant,
        records=usage.get("records", 0),
        records_limit=quota.get("records") or 0,
        **{f"{t}_bytes": max(0, usage[f"{t}_bytes"]) for t in ("hot", "warm", "cold")},
        **{f"{t}_items": max(0, usage[f"{t}_items"]) for t in ("hot", "warm", "cold")},
        **{f"{t}_limit": quota.get(f"{t}_bytes") or 0 for t in ("hot", "warm", "cold")},
    )


def value_bytes(value: Any) -> tuple[memoryview, pb.ArrayInfo | None]:
    raw, dtype, shape = value_to_raw(value)
    return raw, (pb.ArrayInfo(dtype=dtype, shape=list(shape or ())) if dtype is not None else None)


def handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map every failure of a unary handler to its status code; the server keeps serving."""

    @functools.wraps(fn)
    def run(self: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            with self.serving():
                return fn(self, request, context)
        except Exception as exc:
            self.abort(context, exc)

    return run


def _stream_handler(fn: Callable[..., Iterator[bytes]]) -> Callable[..., Iterator[bytes]]:
    @functools.wraps(fn)
    def run(self: Servicer, request: Any, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            with self.serving():
                yield from fn(self, request, context)
        except Exception as exc:
            self.abort(context, exc)

    return run


@dataclass
class Limits:
    """What bounds each bulk call (see ``memstore_server.limits``); the defaults suit tests and a laptop."""

    call_bytes: int = 256 << 20
    inflight_bytes: int = 1 << 30
    bulk_streams: int = 12
    stream_idle: float = 30.0
    budget: ByteBudget = field(init=False)
    slots: StreamSlots = field(init=False)
    watchdog: Watchdog = field(init=False)

    def __post_init__(self) -> None:
        self.budget = ByteBudget(self.inflight_bytes)
        self.slots = StreamSlots(self.bulk_streams)
        self.watchdog = Watchdog(self.stream_idle)

    @contextlib.contextmanager
    def bulk(self, context: grpc.ServicerContext) -> Iterator[tuple[Progress, CallBytes]]:
        """Run one bulk stream: a slot, a watch on its progress, and its share of the byte budget."""
        held = self.budget.call(self.call_bytes)
        with self.slots.slot(), self.watchdog.watch(context) as progress:
            try:
                yield progress, held
            finally:
                held.release()

    def close(self) -> None:
        self.watchdog.close()


class Servicer:
    """What every servicer shares: the shutdown flag, deadline checks and the error-to-status map."""

    def __init__(self, shutting_down: threading.Event | None = None) -> None:
        self.shutting_down = shutting_down or threading.Event()
        self._active = 0  # calls inside a handler now (shutdown drains them before gRPC stops)
        self._active_lock = threading.Lock()

    def check_serving(self) -> None:
        if self.shutting_down.is_set():
            raise Abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """A call inside its handler: refused once shutdown began, counted while it runs."""
        self.check_serving()
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1

    @property
    def active(self) -> int:
        return self._active

    @staticmethod
    def check_deadline(context: grpc.ServicerContext) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while the call was running")

    def check_call(self, context: grpc.ServicerContext) -> None:
        """Between the messages of a stream: the deadline, shutdown, and a credential revoked meanwhile."""
        self.check_deadline(context)
        self.check_serving()
        if not credential_still_valid():
            raise Abort(grpc.StatusCode.UNAUTHENTICATED, "the call's token was revoked or expired")

    @staticmethod
    def abort(context: grpc.ServicerContext, exc: BaseException) -> None:
        if not context.is_active():  # the client cancelled (or the watchdog did): nothing to answer
            log.debug("call ended before its answer: %s", exc)
            return
        code = status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("unexpected error in a handler")
        context.abort(code, str(exc) or type(exc).__name__)


class StoreService(Servicer):
    def __init__(self, store: TieredStore, *, max_value_bytes: int, limits: Limits | None = None) -> None:
        super().__init__()
        self.store = store
        self.max_value_bytes = max_value_bytes
        self.limits = limits or Limits()
        self._defaults: set[str] = set()
        self.dataplane: DataPlane | None = None  # set when the server runs one

    def _ns(self, name: str) -> str:
        """The store namespace of the caller's tenant for a requested name; every tenant has a default."""
        ns = tenant_namespace(name or "default")
        if (not name or name == "default") and ns not in self._defaults:
            self.store.create_namespace(ns)
            self._defaults.add(ns)
        return ns

    # ---- handlers (raw bytes in, raw bytes out) ---------------------------------------------------

    @handler
    def create_namespace(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.CreateNamespaceRequest, raw)
        if req.durability not in _DURABILITY:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown durability {req.durability}")
        opts: dict[str, Any] = {}
        if req.warm_codec:
            opts["warm_codec"] = req.warm_codec
        if req.cold_codec:
            opts["cold_codec"] = req.cold_codec
        if req.HasField("value_layout"):
            opts["value_dtype"] = req.value_layout.dtype
            opts["value_shape"] = tuple(req.value_layout.shape)
        if req.shared:
            opts["shared"] = True
        if req.identity:
            opts["identity"] = req.identity
        ns = self.store.create_namespace(
            tenant_namespace(req.name), durability=_DURABILITY[req.durability], **opts
        )
        out = pb.CreateNamespaceRequest(
            name=req.name,
            durability=pb.PERSISTENT if ns.persistent else pb.CACHE,
            warm_codec=ns.warm_codec,
            cold_codec=ns.cold_codec,
            shared=ns.shared,
            identity=ns.identity,
        )
        if ns.value_dtype is not None:
            out.value_layout.dtype = ns.value_dtype
            out.value_layout.shape.extend(ns.value_shape or ())
        return pb.CreateNamespaceResponse(namespace=out).SerializeToString()

    @handler
    def put(self, stream: Iterable[bytes], context: grpc.ServicerContext) -> bytes:
        with self.limits.bulk(context) as (progress, held):
            namespace: str | None = None
            hint: Hint | None = None
            assembler = Assembler(min(self.max_value_bytes, held.limit))
            batch: list[tuple[bytes, Any]] = []
            parents: list[bytes | None] = []
            stored = 0

            def hand_over() -> None:  # to the store, in batches: memory per call stays bounded
                nonlocal stored, batch, parents
                if batch:
                    ns = namespace or tenant_namespace("default")
                    self.store.put_many(batch, ns=ns, parents=parents)
                    if hint is not None:
                        self.store.retain([k for k, _ in batch], hint, ns=ns)
                    stored, batch, parents = stored + len(batch), [], []
                held.release()

            for raw in stream:
                progress.touch()
                self.check_call(context)
                chunk, data = parse_chunk(pb.PutChunk, raw)
                if namespace is None:
                    namespace = self._ns(chunk.namespace)
                    hint = self._hint(chunk.hint) if chunk.HasField("hint") else None
                for item, piece in pieces(chunk.items, data):
                    if item.offset == 0:
                        array = item.array if item.HasField("array") else None
                        if held.held + item.size > held.limit or held.held >= _PUT_BATCH_BYTES:
                            hand_over()
                    held.take(len(piece))  # bytes that arrived, never a declared size
                    value = assembler.feed(item.key, item.size, item.offset, piece)
                    if value is not None:
                        batch.append((item.key, array_value(value, array) if array is not None else value))
                        parents.append(item.parent or None)
            assembler.finish()
            hand_over()
            return pb.PutResponse(stored=stored).SerializeToString()

    @_stream_handler
    def get(self, raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        req = parse(pb.GetRequest, raw)
        ns = self._ns(req.namespace)
        with self.limits.bulk(context) as (progress, _held):

            def values() -> Iterator[tuple[dict[str, Any], memoryview]]:
                for index, key in enumerate(req.keys):
                    self.check_call(context)
                    value = self.store.get(key, ns=ns, promote=not req.no_promote)
                    if value is None:
                        yield {"index": index, "found": False}, memoryview(b"")
                        continue
                    data, info = value_bytes(value)
                    yield {"index": index, "found": True, "size": len(data), "array": info}, data

            for message in pack(pb.GetChunk, values()):
                yield message
                progress.touch()  # the transport took it: the reader is reading

    @handler
    def delete(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.KeysRequest, raw)
        ns = self._ns(req.namespace)
        deleted = []
        for key in req.keys:
            self.check_deadline(context)
            deleted.append(self.store.delete(key, ns=ns))
        return pb.DeleteResponse(deleted=deleted).SerializeToString()

    @handler
    def exists(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.KeysRequest, raw)
        ns = self._ns(req.namespace)
        return pb.ExistsResponse(exists=[self.store.contains(k, ns=ns) for k in req.keys]).SerializeToString()

    @handler
    def stats(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        """The whole store for an admin caller; the caller's own tenant alone for anyone else."""
        parse(pb.StatsRequest, raw)
        st = self.store.stats()
        usage = st["tenants"]
        if current_role() == "admin":
            tiers = [
                pb.TierStats(
                    name=name,
                    **{f: int(st[name][f]) for f in TIER_COUNTERS},
                    compression_ratio=float(st[name]["compression_ratio"] or 0.0),
                    map_bytes=st[name]["map_bytes"],
                )
                for name in ("hot", "warm", "cold")
            ]
            if "pool" in st:
                tiers.append(_pool_stats(st["pool"]))
            return pb.StatsResponse(
                tiers=tiers,
                namespaces=st["namespaces"],
                pinned=st["pinned"],
                policy=st["policy"],
                hot_segment=st["hot_segment"],
                cold_reader_slots=st["cold"]["reader_slots"],
                tenants=[_tenant_usage(t, u) for t, u in usage.items()],
            ).SerializeToString()
        tenant = current_tenant()
        own = self.store.tenant_usage(tenant)
        quota = own.get("quota") or {}
        tiers = [
            pb.TierStats(
                name=name,
                items=own[f"{name}_items"],
                bytes=own[f"{name}_bytes"],
                capacity_bytes=quota.get(f"{name}_bytes") or st[name]["capacity_bytes"],
                map_bytes=st[name]["map_bytes"],
            )
            for name in ("hot", "warm", "cold")
        ]
        return pb.StatsResponse(
            tiers=tiers, policy=st["policy"], tenants=[_tenant_usage(tenant, own)], scope=tenant
        ).SerializeToString()

    @handler
    def lookup(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.KeysRequest, raw)
        ns = self._ns(req.namespace)
        if req.HasField("hint"):
            self.store.retain(req.keys, self._hint(req.hint), ns=ns)
        tiers = self.store.tiers_of(req.keys, ns=ns, lookahead=True)
        return pb.LookupResponse(tiers=[_TIERS[t] for t in tiers]).SerializeToString()

    @staticmethod
    def _session(session: str) -> str:
        """A session id as the store keeps it: the caller's tenant's own."""
        if len(session.encode()) > 128:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "a session id is at most 128 bytes")
        return f"{current_tenant()}/{session}" if session else ""

    def _hint(self, msg: Any) -> Hint:
        return Hint(ttl=msg.ttl_seconds, priority=msg.priority, session=self._session(msg.session))

    @handler
    def end_session(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.EndSessionRequest, raw)
        if not req.session:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "EndSession needs a session id")
        released = self.store.end_session(
            self._session(req.session), pause=req.pause, resume_in=req.resume_in_seconds or None
        )
        return pb.EndSessionResponse(released=released).SerializeToString()

    @handler
    def explain(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.ExplainRequest, raw)
        ns = self._ns(req.namespace)
        got = explain(self.store, req.key, ns=ns, identity=req.identity)
        return pb.ExplainResponse(
            state=got.state,
            tier=got.tier,
            policy=got.policy,
            seconds_ago=-1.0 if got.seconds_ago is None else got.seconds_ago,
            detail=got.detail,
            nearest_namespace=got.nearest_namespace,
            differences=[
                pb.IdentityDifference(field=k, asked=json.dumps(a), stored=json.dumps(b))
                for k, (a, b) in got.differences.items()
            ],
            message=got.message(),
        ).SerializeToString()

    @handler
    def prefetch(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.PrefetchRequest, raw)
        ns = self._ns(req.namespace)
        if req.hint:
            task = self.store.hint(ns=ns, prefix=req.prefix)
        else:
            mode = _PREFETCH_MODES.get(req.mode)
            if mode is None:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown prefetch mode {req.mode}")
            task = self.store.prefetch(req.keys, ns=ns, mode=mode, timeout=req.timeout_ms / 1000)
        in_hot = sum(t == "hot" for t in self.store.tiers_of(req.keys, ns=ns)) if req.keys else 0
        return pb.PrefetchResponse(in_hot=in_hot, done=task.done()).SerializeToString()

    @handler
    def pin(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.PinRequest, raw)
        op = self.store.unpin if req.unpin else self.store.pin
        return pb.PinResponse(
            changed=[op(k, ns=self._ns(req.namespace)) for k in req.keys]
        ).SerializeToString()

    @handler
    def delete_namespace(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.DeleteNamespaceRequest, raw)
        return pb.DeleteNamespaceResponse(
            removed=self.store.delete_namespace(tenant_namespace(req.name))
        ).SerializeToString()

    # ---- the local path ---------------------------------------------------------------------------

    @handler
    def open_local(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        parse(pb.OpenLocalRequest, raw)
        path, size = self.store.local.segment()
        return pb.OpenLocalResponse(
            segment_path=path,
            segment_size=size,
            boot_id=boot_id(),
            layout_version=ARENA_VERSION,
            server_pid=os.getpid(),
        ).SerializeToString()

    @handler
    def local_get(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.GetRequest, raw)
        out = pb.LocalGetResponse()
        for loc in self.store.local.locate_many(req.keys, ns=self._ns(req.namespace)):
            if loc is None:
                out.locations.add(status=pb.LOCAL_MISS)
            elif isinstance(loc, HotLocation):
                out.locations.add(
                    status=pb.LOCAL_FOUND,
                    slot=loc.slot,
                    offset=loc.offset,
                    length=loc.length,
                    header_len=loc.header_len,
                    generation=loc.generation,
                )
            else:
                out.locations.add(status=pb.LOCAL_REMOTE)
        return out.SerializeToString()

    @handler
    def local_put_begin(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.LocalPutBeginRequest, raw)
        lease = req.lease_ms / 1000 if req.lease_ms else 30.0
        out = pb.LocalPutBeginResponse()
        for item in req.items:
            if item.size > self.max_value_bytes:
                raise ValueTooLarge(f"a value of {item.size} bytes exceeds the largest tier")
            dtype = shape = None
            if item.HasField("array"):
                dtype, shape = item.array.dtype, tuple(item.array.shape)
            r = self.store.local.reserve_put(  # validates key, dtype and shape as Put does
                item.key,
                item.size,
                ns=self._ns(req.namespace),
                dtype=dtype,
                shape=shape,
                lease=lease,
                parent=item.parent or None,
                owner=current_caller(),
            )
            if r is None:
                out.reserved.add(ok=False)
            else:
                out.reserved.add(ok=True, token=r.token, offset=r.payload_offset, slot=r.slot)
        return out.SerializeToString()

    @handler
    def local_put_commit(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.LocalPutCommitRequest, raw)
        if len(req.checksums) != len(req.commit):
            raise InvalidValueError(
                f"one checksum per committed reservation: {len(req.checksums)} for {len(req.commit)}"
            )
        for token in req.abort:
            self.store.local.abort_put(token, owner=current_caller())
        if req.commit:
            self.store.local.commit_puts(list(req.commit), list(req.checksums), owner=current_caller())
        return pb.LocalPutCommitResponse(committed=len(req.commit)).SerializeToString()

    @handler
    def open_data(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        parse(pb.OpenDataRequest, raw)
        if self.dataplane is None:
            raise Abort(
                grpc.StatusCode.UNIMPLEMENTED, "this server runs without a data plane (--data-listen off)"
            )
        return self.dataplane.answer(*current_principal()).SerializeToString()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        h = grpc
        return h.method_handlers_generic_handler(
            SERVICE,
            {
                "CreateNamespace": h.unary_unary_rpc_method_handler(self.create_namespace),
                "Put": h.stream_unary_rpc_method_handler(self.put),
                "Get": h.unary_stream_rpc_method_handler(self.get),
                "Delete": h.unary_unary_rpc_method_handler(self.delete),
                "Exists": h.unary_unary_rpc_method_handler(self.exists),
                "Stats": h.unary_unary_rpc_method_handler(self.stats),
                "Lookup": h.unary_unary_rpc_method_handler(self.lookup),
                "Prefetch": h.unary_unary_rpc_method_handler(self.prefetch),
                "Pin": h.unary_unary_rpc_method_handler(self.pin),
                "DeleteNamespace": h.unary_unary_rpc_method_handler(self.delete_namespace),
                "OpenLocal": h.unary_unary_rpc_method_handler(self.open_local),
                "LocalGet": h.unary_unary_rpc_method_handler(self.local_get),
                "LocalPutBegin": h.unary_unary_rpc_method_handler(self.local_put_begin),
                "LocalPutCommit": h.unary_unary_rpc_method_handler(self.local_put_commit),
                "OpenData": h.unary_unary_rpc_method_handler(self.open_data),
                "Explain": h.unary_unary_rpc_method_handler(self.explain),
                "EndSession": h.unary_unary_rpc_method_handler(self.end_session),
            },
        )


def _pool_stats(pool: dict[str, Any]) -> Any:
    """The pool's figures as a TierStats named "pool" (after hot, warm and cold)."""
    return pb.TierStats(
        name="pool",
        bytes=pool["bytes_published"],
        hits=pool["hits"],
        misses=pool["misses"],
        checksum_failures=pool["corrupt"],
        published=pool["published"],
        errors=pool["errors"] + pool["publish_dropped"],
    )
