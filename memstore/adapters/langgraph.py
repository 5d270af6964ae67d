"""LangGraph adapter: ``MemstoreStore`` implements LangGraph's ``BaseStore`` on memstore's agent memory.

It takes ``client.memory`` (a ``memstore.Client``) or an in-process ``memstore.memory.MemoryStore``.
LangGraph values are dicts; each is stored as the record's value and also as its metadata, so
LangGraph's filters (``{"field": v}`` or ``{"field": {"$gt": v}}``) apply to it, and its JSON text is
what a ``query`` searches (keyword search: memstore does not embed text unless asked). TTLs are in
minutes, as LangGraph counts them. A put of ``None`` deletes the item.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from memstore.memory import MemoryRecord


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _fields(rec: MemoryRecord) -> dict[str, Any]:
    """What an Item and a SearchItem share."""
    return {
        "namespace": rec.namespace,
        "key": rec.key,
        "value": rec.value,
        "created_at": _when(rec.created_at),
        "updated_at": _when(rec.updated_at),
    }


def _item(rec: MemoryRecord) -> Item:
    return Item(**_fields(rec))


def _search_item(rec: MemoryRecord) -> SearchItem:
    return SearchItem(**_fields(rec), score=rec.score)


def _matches_path(ns: tuple[str, ...], path: tuple[str, ...], suffix: bool) -> bool:
    if len(path) > len(ns):
        return False
    part = ns[-len(path) :] if suffix else ns[: len(path)]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))


class MemstoreStore(BaseStore):
    def __init__(self, memory: Any) -> None:
        self.memory = memory

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._one(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _one(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            rec = self.memory.get(op.namespace, op.key)
            return _item(rec) if rec is not None else None
        if isinstance(op, PutOp):
            if op.value is None:
                self.memory.delete(op.namespace, op.key, hard=True)
                return None
            fields = op.value if not op.index else {k: op.value.get(k) for k in op.index}
            self.memory.put(
                op.namespace,
                op.key,
                dict(op.value),
                metadata=dict(op.value),
                text=json.dumps(fields, default=str),
                ttl=op.ttl * 60 if op.ttl else None,
            )
            return None
        if isinstance(op, SearchOp):
            found = self.memory.search(
                op.namespace_prefix,
                query=op.query,
                filter=op.filter or None,
                top_k=op.limit,
                cursor=op.offset,
            )
            return [_search_item(r) for r in found]
        if isinstance(op, ListNamespacesOp):
            spaces: list[tuple[str, ...]] = [tuple(ns) for ns in self.memory.list_namespaces()]
            for cond in op.match_conditions or ():
                spaces = [
                    ns for ns in spaces if _matches_path(ns, tuple(cond.path), cond.match_type == "suffix")
                ]
            if op.max_depth is not None:
                spaces = sorted({ns[: op.max_depth] for ns in spaces})
            return spaces[op.offset : op.offset + op.limit]
        raise ValueError(f"unsupported LangGraph store operation {type(op).__name__}")
