"""``client.memory``: the Memory service from ``Client`` and ``AsyncClient``, as ``MemoryStore`` means it."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from memstore.memory import MemoryRecord, record_from_pb, record_to_pb
from memstore.v1 import memstore_pb2 as pb

_PATH = "/memstore.v1.Memory/"
_RPCS = (
    "Put",
    "Get",
    "Delete",
    "List",
    "ListNamespaces",
    "History",
    "Revert",
    "Search",
    "OpenSession",
    "CloseSession",
    "RegisterKVDependency",
)


def _write(item: dict[str, Any]) -> Any:
    rec = MemoryRecord(
        namespace=tuple(item["namespace"]),
        key=item["key"],
        value=item.get("value"),
        text=item.get("text"),
        metadata=dict(item.get("metadata") or {}),
        tags=list(item.get("tags") or ()),
        embedding=None if item.get("embedding") is None else np.asarray(item["embedding"], dtype=np.float32),
        ttl=item.get("ttl"),
        valid_from=item.get("valid_from"),
        valid_to=item.get("valid_to"),
    )
    w = pb.MemoryWrite(record=record_to_pb(rec), dedup=bool(item.get("dedup")))
    if item.get("if_version") is not None:
        w.if_version = item["if_version"]
    return w


def _key(namespace: Sequence[str], key: str) -> Any:
    return pb.MemoryKey(namespace=list(namespace), key=key)


class _Requests:
    """Request bytes and answer parsing shared by the blocking and the asyncio forms."""

    @staticmethod
    def put(items: Iterable[dict[str, Any]]) -> bytes:
        return pb.MemoryPutRequest(writes=[_write(i) for i in items]).SerializeToString()

    @staticmethod
    def versions(raw: bytes) -> builtins.list[int]:
        return list(pb.MemoryPutResponse.FromString(raw).versions)

    @staticmethod
    def get(keys: Iterable[tuple[Sequence[str], str]], refresh: bool = True) -> bytes:
        return pb.MemoryGetRequest(
            keys=[_key(ns, k) for ns, k in keys], no_refresh=not refresh
        ).SerializeToString()

    @staticmethod
    def records_or_none(raw: bytes) -> builtins.list[MemoryRecord | None]:
        entries = pb.MemoryGetResponse.FromString(raw).entries
        return [record_from_pb(e.record) if e.found else None for e in entries]

    @staticmethod
    def delete(keys: Iterable[tuple[Sequence[str], str]], hard: bool) -> bytes:
        return pb.MemoryDeleteRequest(keys=[_key(ns, k) for ns, k in keys], hard=hard).SerializeToString()

    @staticmethod
    def list(prefix: Sequence[str], cursor: str | None, limit: int) -> bytes:
        return pb.MemoryListRequest(
            namespace_prefix=list(prefix), cursor=cursor or "", limit=limit
        ).SerializeToString()

    @staticmethod
    def page(raw: bytes) -> tuple[builtins.list[MemoryRecord], str | None]:
        resp = pb.MemoryListResponse.FromString(raw)
        return [record_from_pb(r) for r in resp.records], resp.next_cursor or None

    @staticmethod
    def history(namespace: Sequence[str], key: str, after: int) -> bytes:
        return pb.MemoryHistoryRequest(
            namespace=list(namespace), key=key, after_version=after
        ).SerializeToString()

    @staticmethod
    def history_page(raw: bytes) -> tuple[builtins.list[MemoryRecord], int | None]:
        resp = pb.MemoryHistoryResponse.FromString(raw)
        return [record_from_pb(r) for r in resp.versions], resp.next_version or None

    @staticmethod
    def namespaces(prefix: Sequence[str], suffix: Sequence[str], max_depth: int | None) -> bytes:
        return pb.MemoryListNamespacesRequest(
            prefix=list(prefix), suffix=list(suffix), max_depth=max_depth or 0
        ).SerializeToString()

    @staticmethod
    def search(
        prefix: Sequence[str],
        vector: Any,
        query: str | None,
        flt: dict[str, Any] | None,
        top_k: int,
        as_of: float | None,
        cursor: int,
        alpha: float | None,
        semantic: bool = False,
    ) -> bytes:
        req = pb.MemorySearchRequest(
            semantic=semantic,
            namespace_prefix=list(prefix),
            top_k=top_k,
            cursor=cursor,
            filter_json=json.dumps(flt) if flt else "",
        )
        if vector is not None:
            req.vector.extend(np.asarray(vector, dtype=np.float32).reshape(-1).tolist())
        if query is not None:
            req.query = query
        if as_of is not None:
            req.as_of = as_of
        if alpha is not None:
            req.alpha = alpha
        return req.SerializeToString()

    @staticmethod
    def found(raw: bytes) -> builtins.list[MemoryRecord]:
        return [record_from_pb(r) for r in pb.MemorySearchResponse.FromString(raw).records]


def _item(namespace: Sequence[str], key: str, value: Any, **kw: Any) -> dict[str, Any]:
    return {"namespace": tuple(namespace), "key": key, "value": value, **kw}


class MemoryClient:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._rpc = {name: client._channel.unary_unary(_PATH + name) for name in _RPCS}

    def _call(self, name: str, req: bytes, timeout: float | None = None) -> bytes:
        return self._client._call(lambda t: self._rpc[name](req, timeout=t), timeout)  # type: ignore[no-any-return]

    def put(
        self,
        namespace: Sequence[str],
        key: str,
        value: Any = None,
        *,
        text: str | None = None,
        embedding: Any = None,
        metadata: dict[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        ttl: float | None = None,
        if_version: int | None = None,
        valid_from: float | None = None,
        valid_to: float | None = None,
        dedup: bool = False,
    ) -> int:
        item = _item(
            namespace,
            key,
            value,
            text=text,
            embedding=embedding,
            metadata=metadata,
            tags=tags,
            ttl=ttl,
            if_version=if_version,
            valid_from=valid_from,
            valid_to=valid_to,
            dedup=dedup,
        )
        return self.put_many([item])[0]

    def put_many(self, items: Iterable[dict[str, Any]]) -> builtins.list[int]:
        return _Requests.versions(self._call("Put", _Requests.put(items)))

    def get(self, namespace: Sequence[str], key: str, *, refresh: bool = True) -> MemoryRecord | None:
        return self.get_many([(namespace, key)], refresh=refresh)[0]

    def get_many(
        self, keys: Iterable[tuple[Sequence[str], str]], *, refresh: bool = True
    ) -> builtins.list[MemoryRecord | None]:
        """Current records or None; a read refreshes their TTLs unless ``refresh=False``."""
        return _Requests.records_or_none(self._call("Get", _Requests.get(keys, refresh)))

    def delete(self, namespace: Sequence[str], key: str, *, hard: bool = False) -> bool:
        raw = self._call("Delete", _Requests.delete([(namespace, key)], hard))
        return bool(pb.MemoryDeleteResponse.FromString(raw).deleted[0])

    def list(
        self, namespace_prefix: Sequence[str] = (), *, cursor: str | None = None, limit: int = 100
    ) -> tuple[builtins.list[MemoryRecord], str | None]:
        return _Requests.page(self._call("List", _Requests.list(namespace_prefix, cursor, limit)))

    def list_namespaces(
        self, *, prefix: Sequence[str] = (), suffix: Sequence[str] = (), max_depth: int | None = None
    ) -> builtins.list[tuple[str, ...]]:
        raw = self._call("ListNamespaces", _Requests.namespaces(prefix, suffix, max_depth))
        return [tuple(n.parts) for n in pb.MemoryListNamespacesResponse.FromString(raw).namespaces]

    def history(self, namespace: Sequence[str], key: str) -> builtins.list[MemoryRecord]:
        out: builtins.list[MemoryRecord] = []
        after: int | None = 0
        while after is not None:
            page, after = _Requests.history_page(
                self._call("History", _Requests.history(namespace, key, after))
            )
            out.extend(page)
        return out

    def revert(self, namespace: Sequence[str], key: str, version: int) -> int:
        req = pb.MemoryRevertRequest(key=_key(namespace, key), version=version).SerializeToString()
        return _Requests.versions(self._call("Revert", req))[0]

    def search(
        self,
        namespace_prefix: Sequence[str] = (),
        *,
        vector: Any = None,
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        top_k: int = 10,
        as_of: float | None = None,
        cursor: int = 0,
        alpha: float | None = None,
        semantic: bool = False,
    ) -> builtins.list[MemoryRecord]:
        req = _Requests.search(namespace_prefix, vector, query, filter, top_k, as_of, cursor, alpha, semantic)
        return _Requests.found(self._call("Search", req))

    def open_session(
        self,
        session_id: str,
        namespace: Sequence[str],
        *,
        hint_queries: Iterable[str] = (),
        recent: int = 64,
        kv: tuple[str, Iterable[bytes]] | None = None,
    ) -> None:
        """Returns at once; the server brings the session's memory (and KV prefix) toward the hot tier."""
        self._call("OpenSession", _open_session(session_id, namespace, hint_queries, recent, kv))

    def close_session(self, session_id: str) -> None:
        self._call("CloseSession", pb.CloseSessionRequest(session_id=session_id).SerializeToString())

    def register_kv_dependency(
        self, kv_namespace: str, kv_keys: Iterable[bytes], records: Iterable[tuple[Sequence[str], str, int]]
    ) -> None:
        """A change to any of ``records`` (namespace, key, version) deletes exactly these KV blocks."""
        self._call("RegisterKVDependency", _dependency(kv_namespace, kv_keys, records))


def _open_session(
    session_id: str,
    namespace: Sequence[str],
    hint_queries: Iterable[str],
    recent: int,
    kv: tuple[str, Iterable[bytes]] | None,
) -> bytes:
    req = pb.OpenSessionRequest(
        session_id=session_id, namespace=list(namespace), hint_queries=list(hint_queries), recent=recent
    )
    if kv is not None:
        req.kv_namespace = kv[0]
        req.kv_keys.extend(kv[1])
    return req.SerializeToString()


def _dependency(
    kv_namespace: str, kv_keys: Iterable[bytes], records: Iterable[tuple[Sequence[str], str, int]]
) -> bytes:
    req = pb.KVDependencyRequest(kv_namespace=kv_namespace, kv_keys=list(kv_keys))
    for ns, key, version in records:
        req.records.append(_key(ns, key))
        req.versions.append(version)
    return req.SerializeToString()


class AsyncMemoryClient:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._rpc = {name: client._channel.unary_unary(_PATH + name) for name in _RPCS}

    async def _call(self, name: str, req: bytes, timeout: float | None = None) -> bytes:
        return await self._client._call(lambda t: self._rpc[name](req, timeout=t), timeout)  # type: ignore[no-any-return]

    async def put(self, namespace: Sequence[str], key: str, value: Any = None, **kw: Any) -> int:
        return (await self.put_many([_item(namespace, key, value, **kw)]))[0]

    async def put_many(self, items: Iterable[dict[str, Any]]) -> builtins.list[int]:
        return _Requests.versions(await self._call("Put", _Requests.put(items)))

    async def get(self, namespace: Sequence[str], key: str, *, refresh: bool = True) -> MemoryRecord | None:
        return (await self.get_many([(namespace, key)], refresh=refresh))[0]

    async def get_many(
        self, keys: Iterable[tuple[Sequence[str], str]], *, refresh: bool = True
    ) -> builtins.list[MemoryRecord | None]:
        return _Requests.records_or_none(await self._call("Get", _Requests.get(keys, refresh)))

    async def delete(self, namespace: Sequence[str], key: str, *, hard: bool = False) -> bool:
        raw = await self._call("Delete", _Requests.delete([(namespace, key)], hard))
        return bool(pb.MemoryDeleteResponse.FromString(raw).deleted[0])

    async def list(
        self, namespace_prefix: Sequence[str] = (), *, cursor: str | None = None, limit: int = 100
    ) -> tuple[builtins.list[MemoryRecord], str | None]:
        return _Requests.page(await self._call("List", _Requests.list(namespace_prefix, cursor, limit)))

    async def search(
        self,
        namespace_prefix: Sequence[str] = (),
        *,
        vector: Any = None,
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        top_k: int = 10,
        as_of: float | None = None,
        cursor: int = 0,
        alpha: float | None = None,
        semantic: bool = False,
    ) -> builtins.list[MemoryRecord]:
        req = _Requests.search(namespace_prefix, vector, query, filter, top_k, as_of, cursor, alpha, semantic)
        return _Requests.found(await self._call("Search", req))
