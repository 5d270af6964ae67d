"""``AsyncClient``: the operations of ``memstore.client.Client`` for asyncio, over the same sans-I/O
core (``memstore.client_core``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from memstore import client_calls as calls
from memstore import client_core as core
from memstore.client_calls import Unary
from memstore.client_core import MAX_MESSAGE_BYTES, RemoteError
from memstore.explain import Explanation
from memstore.local import LocalArena, writable_bytes
from memstore.retention import Hint

R = TypeVar("R")


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


class AsyncClient(core.ClientBase):
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
        creds = core.tls_credentials(tls_ca, tls_cert, tls_key)
        options = core.channel_options(max_message_bytes)
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
                    raise core.remote_error(exc) from None
                await asyncio.sleep(core.backoff_delay(attempt, self.backoff))
        raise AssertionError("unreachable")

    async def _run(self, op: Unary[R], timeout: float | None) -> R:
        handle = getattr(self, op.rpc)
        return op.parse(await self._call(lambda t: handle(op.request, timeout=t), timeout))

    async def local(self) -> bool:
        """Whether data moves through the server's shared-memory arena (negotiated on first use)."""
        return await self._local_arena() is not None

    async def _local_arena(self) -> LocalArena | None:
        if self.local_mode == "never":
            return None
        async with self._arena_lock:
            if self._arena_checked:
                return self._arena
            try:
                answer: bytes | RemoteError = await self._run(calls.open_local_call(), None)
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
        shared: bool = False,
        identity: str = "",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Create a namespace (or confirm an identical one); see ``Client.create_namespace``."""
        op = calls.create_namespace_call(
            name, durability, warm_codec, cold_codec, value_dtype, value_shape, shared, identity
        )
        return await self._run(op, timeout)

    async def put(self, key: bytes, value: Any, *, ns: str = "default", timeout: float | None = None) -> None:
        await self.put_many([(key, value)], ns=ns, timeout=timeout)

    async def put_many(
        self,
        items: Iterable[tuple[bytes, Any]] | Mapping[bytes, Any],
        *,
        ns: str = "default",
        parents: Sequence[bytes | None] | None = None,
        hint: Hint | None = None,
        timeout: float | None = None,
    ) -> int:
        """Store values; see ``Client.put_many``."""
        if hint is not None:  # stored by whichever path, then hinted in one Lookup
            pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
            stored = await self.put_many(pairs, ns=ns, parents=parents, timeout=timeout)
            await self.tiers([k for k, _ in pairs], ns=ns, hint=hint, timeout=timeout)
            return stored
        batch = core.items_of(items, parents)
        stored = 0
        arena = await self._local_arena() if batch else None
        if arena is not None:
            plan = core.LocalWrite(batch)
            commit, batch = await self._run(plan.begin(arena, ns), timeout)
            await self._run(plan.commit(commit), timeout)
            stored = len(plan.items) - len(batch)
            if not batch:
                return stored

        async def messages() -> AsyncIterator[bytes]:
            for m in core.put_messages(ns, batch):
                yield m

        raw = await self._call(lambda t: self._put(messages(), timeout=t), timeout)
        return stored + calls.put_stored(raw)

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
        return [None if v is None else core.copy_into(v, out) for v, out in zip(values, views, strict=True)]

    async def _local_read(
        self,
        arena: LocalArena,
        keys: list[bytes],
        outs: list[memoryview] | None,
        ns: str,
        timeout: float | None,
    ) -> list[Any]:
        read = core.LocalRead(arena, keys, outs, self.local_stats, self.locations, ns)
        for op in read.calls():
            await self._run(op, timeout)
        rest = read.leftovers()
        if rest:
            read.fill(rest, await self._grpc_get_many([keys[i] for i in rest], ns, True, timeout))
        return read.values

    async def _grpc_get_many(
        self, keys: list[bytes], ns: str, promote: bool, timeout: float | None
    ) -> list[Any]:
        req = calls.get_request(keys, ns, promote)

        async def call(t: float | None) -> list[Any]:
            out = core.GetAssembler(len(keys))
            async for raw in self._get(req, timeout=t):
                out.feed(raw)
            return out.values

        return await self._call(call, timeout)  # type: ignore[no-any-return]

    async def delete(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return (await self.delete_many([key], ns=ns, timeout=timeout))[0]

    async def delete_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return await self._run(calls.delete_call(keys, ns), timeout)

    async def contains(self, key: bytes, *, ns: str = "default", timeout: float | None = None) -> bool:
        return (await self.contains_many([key], ns=ns, timeout=timeout))[0]

    async def contains_many(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return await self._run(calls.contains_call(keys, ns), timeout)

    async def explain(
        self, key: bytes, *, ns: str = "default", identity: Any = None, timeout: float | None = None
    ) -> Explanation:
        """What the server knows of a key; see ``Client.explain``."""
        return await self._run(calls.explain_call(key, ns, identity), timeout)

    async def tiers(
        self,
        keys: Iterable[bytes],
        *,
        ns: str = "default",
        hint: Hint | None = None,
        timeout: float | None = None,
    ) -> list[str | None]:
        """The tier holding each key ("hot", "warm", "cold") or None, in one call; nothing is read.
        With ``hint`` (``memstore.retention.Hint``) the stored keys also take that retention hint."""
        return await self._run(calls.tiers_call(keys, ns, hint), timeout)

    async def end_session(
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
        return await self._run(calls.end_session_call(session, pause, resume_in), timeout)

    async def prefetch(
        self,
        keys: Iterable[bytes],
        *,
        ns: str = "default",
        mode: str = "wait_complete",
        wait: float | None = None,
        timeout: float | None = None,
    ) -> int:
        """See ``Client.prefetch``."""
        return await self._run(calls.prefetch_call(keys, ns, mode, wait), timeout)

    async def hint(self, *, ns: str = "default", prefix: bytes = b"", timeout: float | None = None) -> None:
        await self._run(calls.hint_call(ns, prefix), timeout)

    async def pin(
        self, keys: Iterable[bytes], *, ns: str = "default", unpin: bool = False, timeout: float | None = None
    ) -> list[bool]:
        return await self._run(calls.pin_call(keys, ns, unpin), timeout)

    async def unpin(
        self, keys: Iterable[bytes], *, ns: str = "default", timeout: float | None = None
    ) -> list[bool]:
        return await self.pin(keys, ns=ns, unpin=True, timeout=timeout)

    async def delete_namespace(self, name: str, *, timeout: float | None = None) -> int:
        return await self._run(calls.delete_namespace_call(name), timeout)

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        return await self._run(calls.stats_call(), timeout)

    async def close(self) -> None:
        self._close_arena()
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
