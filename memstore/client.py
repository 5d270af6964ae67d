"""Python clients of the memstore service: ``Client`` (blocking) here and ``AsyncClient`` (asyncio,
``memstore.aio_client``).

Both offer the store's operations with the same meaning as ``TieredStore``: a miss is ``None``, batch
forms make one call per batch. Bulk values travel as raw bytes in messages of about 1 MiB. Calls that
fail with UNAVAILABLE are retried with exponential backoff (every operation here is idempotent); every
other status is raised at once as a ``RemoteError`` carrying the status code. Messages, answers and the
same-host path's plans live in ``memstore.client_core``; the clients only do I/O.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from memstore import client_calls as calls
from memstore import client_core as core
from memstore import dataplane_client as dpc
from memstore.aio_client import AsyncClient
from memstore.client_calls import Unary
from memstore.client_core import (
    MAX_MESSAGE_BYTES,
    LocationCache,
    RemoteCapacityError,
    RemoteError,
    RemoteInvalidArgument,
)
from memstore.dataplane_client import DataPlane, DataPlaneUnavailable
from memstore.explain import Explanation
from memstore.local import LocalArena, writable_bytes
from memstore.retention import Hint

__all__ = [
    "AsyncClient",
    "Client",
    "LocationCache",
    "RemoteCapacityError",
    "RemoteError",
    "RemoteInvalidArgument",
]

T = TypeVar("T")
# On the same host, a put batch smaller than this goes over the data plane's unix socket (one round
# trip) rather than through arena reservations (two calls: reserve, then commit), when both are up.
ARENA_PUT_MIN = 8 << 20
R = TypeVar("R")


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


class Client(core.ClientBase):
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
        data: str = "auto",
    ) -> None:
        """``local``: "auto" copies through the server's shared-memory arena when it is on this host and
        falls back to gRPC otherwise; "always" raises if the arena cannot be mapped; "never" uses gRPC only.
        ``data``: values that do not go through the arena travel over the server's data plane ("auto",
        falling back to gRPC where it cannot be reached; "always" raises instead; "tcp" as "auto" but
        never over the unix socket, as from another host; "never": gRPC only).
        ``token``: a bearer token for servers started with ``--auth-tokens``. ``tls_ca`` (PEM path) turns
        on TLS; ``tls_cert``/``tls_key`` present a client certificate (mutual TLS).
        """
        creds = core.tls_credentials(tls_ca, tls_cert, tls_key)
        options = core.channel_options(max_message_bytes)
        channel = (
            grpc.secure_channel(target, creds, options=options)
            if creds
            else grpc.insecure_channel(target, options=options)
        )
        if token:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        self._setup(channel, target, timeout, retries, backoff, local)
        self._arena_lock = threading.Lock()
        if data not in dpc.MODES:
            raise ValueError(f"data is one of {dpc.MODES}, not {data!r}")
        self.data_mode = data
        self._data: DataPlane | None = None
        self._data_retry_at = 0.0
        self._data_tls = (tls_ca, tls_cert, tls_key)
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
            try:
                answer: bytes | RemoteError = self._run(calls.open_local_call(), None)
            except RemoteError as exc:
                answer = exc
            return self._arena_answer(answer)

    @property
    def data_plane(self) -> bool:
        """Whether values travel over the server's data plane (negotiated on first use)."""
        return self._data_plane() is not None

    def _data_plane(self) -> DataPlane | None:
        if self.data_mode == "never":
            return None
        with self._arena_lock:
            if self._data is not None or time.monotonic() < self._data_retry_at:
                return self._data
            try:
                self._run(calls.open_data_call(), None)  # the server offers one (and the call may)
            except RemoteError as exc:
                if self.data_mode == "always":
                    raise DataPlaneUnavailable(f"the data plane was required: {exc}") from exc
                never = exc.code == grpc.StatusCode.UNIMPLEMENTED
                self._data_retry_at = float("inf") if never else time.monotonic() + 5.0
                return None
            self._data = DataPlane(
                lambda: self._run(calls.open_data_call(), None),
                dpc.target_host(self.target),
                dpc.tls_context(*self._data_tls),
                self.timeout,
                unix=self.data_mode != "tcp",
            )
            return self._data

    def _over_data(self, fn: Callable[[dpc.Connection], T], timeout: float | None) -> T | None:
        """Run ``fn`` on a data-plane connection; None when the data plane cannot serve the call."""
        plane = self._data_plane()
        if plane is None:
            return None
        try:
            return plane.call(fn, self.timeout if timeout is None else timeout)  # type: ignore[no-any-return]
        except DataPlaneUnavailable:
            if self.data_mode == "always":
                raise
            self.local_stats["data_fallbacks"] = self.local_stats.get("data_fallbacks", 0) + 1
            return None

    def _call(self, fn: Callable[[float | None], T], timeout: float | None) -> T:
        timeout = self.timeout if timeout is None else timeout
        for attempt in range(self.retries + 1):
            try:
                return fn(timeout)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise core.remote_error(exc) from None
                time.sleep(core.backoff_delay(attempt, self.backoff))
        raise AssertionError("unreachable")

    def _run(self, op: Unary[R], timeout: float | None) -> R:
        handle = getattr(self, op.rpc)
        return op.parse(self._call(lambda t: handle(op.request, timeout=t), timeout))

    def create_namespace(
        self,
        name: str,
        *,
        durability: str = "cache",
        warm_codec: str = "",
        cold_codec: str = "",
        value_dtype: str | None = None,
        value_shape: Iterable[int] | None = None,
        shared: bool = False,
        identity: str = "",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Create a namespace (or confirm an identical one). ``value_dtype``/``value_shape`` make every
        value an array of exactly that layout (KV-cache namespaces)."""
        op = calls.create_namespace_call(
            name, durability, warm_codec, cold_codec, value_dtype, value_shape, shared, identity
        )
        return self._run(op, timeout)

    def put(self, key: bytes, value: Any, *, ns: str = "default", timeout: float | None = None) -> None:
        self.put_many([(key, value)], ns=ns, timeout=timeout)

    def put_many(
        self,
        items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any],
        *,
        ns: str = "default",
        parents: Sequence[bytes | None] | None = None,
        hint: Hint | None = None,
        timeout: float | None = None,
    ) -> int:
        """Store values; ``parents`` names, per item, the key of the block it extends in a prefix chain
        (or None), so prefix-aware eviction keeps a chain's head longer than its tail."""
        if hint is not None:  # stored by whichever path, then hinted in one Lookup
            pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
            stored = self.put_many(pairs, ns=ns, parents=parents, timeout=timeout)
            self.tiers([k for k, _ in pairs], ns=ns, hint=hint, timeout=timeout)
            return stored
        batch = core.items_of(items, parents)
        stored = 0
        arena = self._local_arena() if batch else None
        if arena is not None and self.local_mode == "auto" and core.batch_bytes(batch) < ARENA_PUT_MIN:
            over_data = self._over_data(lambda conn: conn.put_many(ns, batch), timeout)
            if over_data is not None:  # one round trip instead of the arena's two
                return over_data
        if arena is not None:
            plan = core.LocalWrite(batch)
            commit, batch = self._run(plan.begin(arena, ns), timeout)
            self._run(plan.commit(commit), timeout)
            stored = len(plan.items) - len(batch)  # what is left in batch had no room in the arena
            if not batch:
                return stored
        over_data = self._over_data(lambda conn: conn.put_many(ns, batch), timeout)
        if over_data is not None:
            return stored + over_data
        resp = self._call(lambda t: self._put(core.put_messages(ns, batch), timeout=t), timeout)
        return stored + calls.put_stored(resp)

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
            return self._remote_get_many(keys, ns, promote, timeout)
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
        sizes = self._over_data(lambda conn: conn.get_many(ns, keys, True, views), timeout)
        if sizes is not None:
            return sizes
        values = self._grpc_get_many(keys, ns, True, timeout)
        return [None if v is None else core.copy_into(v, out) for v, out in zip(values, views, strict=True)]

    def _local_read(
        self,
        arena: LocalArena,
        keys: list[bytes],
        outs: list[memoryview] | None,
        ns: str,
        timeout: float | None,
    ) -> list[Any]:
        read = core.LocalRead(arena, keys, outs, self.local_stats, self.locations, ns)
        for op in read.calls():
            self._run(op, timeout)
        rest = read.leftovers()
        if rest:
            read.fill(rest, self._remote_get_many([keys[i] for i in rest], ns, True, timeout))
        return read.values

    def _remote_get_many(self, keys: list[bytes], ns: str, promote: bool, timeout: float | None) -> list[Any]:
        values = self._over_data(lambda conn: conn.get_many(ns, keys, promote, None), timeout)
        return values if values is not None else self._grpc_get_many(keys, ns, promote, timeout)

    def _grpc_get_many(self, keys: list[bytes], ns: str, promote: bool, timeout: float | None) -> list[Any]:
        req = calls.get_request(keys, ns, promote)

        def call(t: float | None) -> list[Any]:
            out = core.GetAssembler(len(keys))
            for raw in self._get(req, timeout=t):
                out.feed(raw)
            return out.values

        return self._call(call, timeout)

    def delete(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return self.delete_many([key], ns=ns, timeout=timeout)[0]

    def delete_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return self._run(calls.delete_call(keys, ns), timeout)

    def contains(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return self.contains_many([key], ns=ns, timeout=timeout)[0]

    def contains_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return self._run(calls.contains_call(keys, ns), timeout)

    def explain(
        self, key: bytes, *, ns: str = "default", identity: Any = None, timeout: float | None = None
    ) -> Explanation:
        """What the server knows of a key: its tier, or why no tier holds it (``memstore.explain``);
        ``identity`` (a KVIdentity, dict or JSON) also names how the nearest namespace's differs."""
        return self._run(calls.explain_call(key, ns, identity), timeout)

    def tiers(
        self,
        keys: Iterable[bytes],
        *,
        ns: str = "default",
        hint: Hint | None = None,
        timeout: float | None = None,
    ) -> list[str | None]:
        """The tier holding each key ("hot", "warm", "cold") or None, in one call; nothing is read.
        With ``hint`` (``memstore.retention.Hint``) the stored keys also take that retention hint."""
        return self._run(calls.tiers_call(keys, ns, hint), timeout)

    def end_session(
        self,
        session: str,
        *,
        pause: bool = False,
        resume_in: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """End a session named in retention hints: its blocks no open session shares go first. With
        ``pause`` it only waits (a tool call in flight) until a hint names it again; ``resume_in``: an
        estimate of the seconds until then."""
        return self._run(calls.end_session_call(session, pause, resume_in), timeout)

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
        return self._run(calls.prefetch_call(keys, ns, mode, wait), timeout)

    def hint(self, *, ns: str = "default", prefix: bytes = b"", timeout: float | None = None) -> None:
        """Tell the server a namespace (or its keys starting with ``prefix``) is about to be used."""
        self._run(calls.hint_call(ns, prefix), timeout)

    def pin(
        self, keys: Iterable[bytes], *, ns: str = "default", unpin: bool = False, timeout: float | None = None
    ) -> list[bool]:
        return self._run(calls.pin_call(keys, ns, unpin), timeout)

    def unpin(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return self.pin(keys, ns=ns, unpin=True, timeout=timeout)

    def delete_namespace(self, name: str, *, timeout: float | None = None) -> int:
        return self._run(calls.delete_namespace_call(name), timeout)

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(calls.stats_call(), timeout)

    def close(self) -> None:
        self._close_arena()
        if self._data is not None:
            self._data.close()
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
