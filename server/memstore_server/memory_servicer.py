"""The Memory service: converts messages to ``MemoryStore`` calls and back."""

from __future__ import annotations

import json
import threading
from typing import Any

import grpc

from memstore import TieredStore
from memstore.errors import InvalidValueError
from memstore.memory import MemoryStore, record_from_pb, record_to_pb
from memstore.v1 import memstore_pb2 as pb
from memstore_server.auth import current_tenant, tenant_namespace
from memstore_server.servicer import Servicer, handler, parse

SERVICE = "memstore.v1.Memory"
MAX_FILTER_DEPTH = 32


def _depth(value: Any) -> int:
    """How deep JSON objects and lists nest (counted without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


class MemoryService(Servicer):
    """One ``MemoryStore`` per tenant, made on the tenant's first call."""

    def __init__(self, store: TieredStore, shutting_down: threading.Event, embedder: Any = None) -> None:
        super().__init__(shutting_down)
        self.store = store
        self.embedder = embedder
        self._by_tenant: dict[str, MemoryStore] = {}
        self._lock = threading.Lock()

    @property
    def memory(self) -> MemoryStore:
        tenant = current_tenant()
        with self._lock:
            mem = self._by_tenant.get(tenant)
            if mem is None:
                mem = self._by_tenant[tenant] = MemoryStore(self.store, tenant=tenant, embedder=self.embedder)
            return mem

    def close(self) -> None:
        with self._lock:
            for mem in self._by_tenant.values():
                mem.close()
            self._by_tenant.clear()

    @handler
    def put(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemoryPutRequest, raw)
        items: list[dict[str, Any]] = []
        for w in req.writes:
            rec = record_from_pb(w.record)
            items.append(
                {
                    "namespace": rec.namespace,
                    "key": rec.key,
                    "value": rec.value,
                    "text": rec.text,
                    "embedding": rec.embedding,
                    "metadata": rec.metadata,
                    "tags": rec.tags,
                    "ttl": rec.ttl,
                    "valid_from": rec.valid_from,
                    "valid_to": rec.valid_to,
                    "dedup": w.dedup,
                    "if_version": w.if_version if w.HasField("if_version") else None,
                }
            )
        return pb.MemoryPutResponse(versions=self.memory.put_many(items)).SerializeToString()

    @handler
    def get(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemoryGetRequest, raw)
        out = pb.MemoryGetResponse()
        for k in req.keys:
            rec = self.memory.get(tuple(k.namespace), k.key, refresh=not req.no_refresh)
            entry = out.entries.add(found=rec is not None)
            if rec is not None:
                entry.record.CopyFrom(record_to_pb(rec))
        return out.SerializeToString()

    @handler
    def delete(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemoryDeleteRequest, raw)
        deleted = [self.memory.delete(tuple(k.namespace), k.key, hard=req.hard) for k in req.keys]
        return pb.MemoryDeleteResponse(deleted=deleted).SerializeToString()

    @handler
    def list(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemoryListRequest, raw)
        records, cursor = self.memory.list(
            tuple(req.namespace_prefix), cursor=req.cursor or None, limit=req.limit or 100
        )
        return pb.MemoryListResponse(
            records=[record_to_pb(r) for r in records], next_cursor=cursor or ""
        ).SerializeToString()

    @handler
    def list_namespaces(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemoryListNamespacesRequest, raw)
        found = self.memory.list_namespaces(
            prefix=tuple(req.prefix), suffix=tuple(req.suffix), max_depth=req.max_depth or None
        )
        return pb.MemoryListNamespacesResponse(
            namespaces=[pb.MemoryNamespace(parts=list(ns)) for ns in found]
        ).SerializeToString()

    @handler
    def history(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemoryHistoryRequest, raw)
        versions, nxt = self.memory.history_page(tuple(req.namespace), req.key, after=req.after_version)
        return pb.MemoryHistoryResponse(
            versions=[record_to_pb(r) for r in versions], next_version=nxt or 0
        ).SerializeToString()

    @handler
    def revert(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemoryRevertRequest, raw)
        version = self.memory.revert(tuple(req.key.namespace), req.key.key, req.version)
        return pb.MemoryPutResponse(versions=[version]).SerializeToString()

    @handler
    def search(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.MemorySearchRequest, raw)
        try:
            flt = json.loads(req.filter_json) if req.filter_json else None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidValueError(f"filter_json is not JSON of a usable depth: {exc}") from None
        if flt is not None and not isinstance(flt, dict):
            raise InvalidValueError("filter_json must be a JSON object")
        if _depth(flt) > MAX_FILTER_DEPTH:
            raise InvalidValueError(f"filters nest at most {MAX_FILTER_DEPTH} levels deep")
        found = self.memory.search(
            tuple(req.namespace_prefix),
            vector=list(req.vector) or None,
            query=req.query if req.HasField("query") else None,
            filter=flt,
            top_k=req.top_k or 10,
            as_of=req.as_of if req.HasField("as_of") else None,
            cursor=req.cursor,
            alpha=req.alpha if req.HasField("alpha") else 0.5,
            semantic=req.semantic,
        )
        return pb.MemorySearchResponse(records=[record_to_pb(r) for r in found]).SerializeToString()

    @handler
    def open_session(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.OpenSessionRequest, raw)
        kv = (tenant_namespace(req.kv_namespace), list(req.kv_keys)) if req.kv_namespace else None
        self.memory.open_session(
            req.session_id,
            tuple(req.namespace),
            hint_queries=list(req.hint_queries),
            recent=req.recent or 64,
            kv=kv,
        )
        return pb.SessionResponse().SerializeToString()

    @handler
    def close_session(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self.memory.close_session(parse(pb.CloseSessionRequest, raw).session_id)
        return pb.SessionResponse().SerializeToString()

    @handler
    def register_kv_dependency(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        req = parse(pb.KVDependencyRequest, raw)
        if len(req.records) != len(req.versions):
            raise InvalidValueError("one version per record")
        records = [(tuple(k.namespace), k.key, v) for k, v in zip(req.records, req.versions, strict=True)]
        self.memory.register_kv_dependency(tenant_namespace(req.kv_namespace), list(req.kv_keys), records)
        return pb.SessionResponse().SerializeToString()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        h = grpc
        return h.method_handlers_generic_handler(
            SERVICE,
            {
                "Put": h.unary_unary_rpc_method_handler(self.put),
                "Get": h.unary_unary_rpc_method_handler(self.get),
                "Delete": h.unary_unary_rpc_method_handler(self.delete),
                "List": h.unary_unary_rpc_method_handler(self.list),
                "ListNamespaces": h.unary_unary_rpc_method_handler(self.list_namespaces),
                "History": h.unary_unary_rpc_method_handler(self.history),
                "Revert": h.unary_unary_rpc_method_handler(self.revert),
                "Search": h.unary_unary_rpc_method_handler(self.search),
                "OpenSession": h.unary_unary_rpc_method_handler(self.open_session),
                "CloseSession": h.unary_unary_rpc_method_handler(self.close_session),
                "RegisterKVDependency": h.unary_unary_rpc_method_handler(self.register_kv_dependency),
            },
        )
