"""Agent memory's record model: a record, its encoding in the store, the filter language over its
metadata, and its protobuf form (shared by the service and the clients)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memstore.errors import InvalidValueError, MemstoreError

SEP = "\x1f"


class _InStore:
    """Placeholder for a value that lives only in the store's tiers (the index keeps what search needs)."""

    def __repr__(self) -> str:
        return "<in store>"


IN_STORE: Any = _InStore()


class VersionConflict(MemstoreError):
    """``if_version`` did not match the record's current version; nothing was written."""


@dataclass
class MemoryRecord:
    namespace: tuple[str, ...]
    key: str
    value: Any = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    embedding: np.ndarray | None = field(default=None, repr=False)
    created_at: float = 0.0
    updated_at: float = 0.0
    ttl: float | None = None
    expires_at: float | None = None
    valid_from: float | None = None
    valid_to: float | None = None
    version: int = 0
    deleted: bool = False
    content_hash: str = field(default="", repr=False)
    score: float | None = None  # set by search

    def _json(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "namespace",
                "key",
                "value",
                "text",
                "metadata",
                "tags",
                "created_at",
                "updated_at",
                "ttl",
                "expires_at",
                "valid_from",
                "valid_to",
                "version",
                "deleted",
                "content_hash",
            )
        }

    def encode(self) -> bytes:
        doc = json.dumps(self._json(), separators=(",", ":")).encode()
        emb = b"" if self.embedding is None else np.asarray(self.embedding, dtype="<f4").tobytes()
        return struct.pack("<I", len(doc)) + doc + emb

    @classmethod
    def decode(cls, raw: bytes) -> MemoryRecord:
        (n,) = struct.unpack_from("<I", raw)
        doc = json.loads(raw[4 : 4 + n])
        doc["namespace"] = tuple(doc["namespace"])
        emb = raw[4 + n :]
        return cls(**doc, embedding=np.frombuffer(emb, dtype="<f4").copy() if emb else None)


def check_namespace(namespace: Sequence[str]) -> tuple[str, ...]:
    ns = tuple(namespace)
    if not ns or not all(isinstance(p, str) and p and SEP not in p and "\x00" not in p for p in ns):
        raise InvalidValueError(
            "a namespace is a non-empty tuple of non-empty strings without \\x1f or \\x00"
        )
    return ns


# ---- filters ----------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$in": lambda a, b: a in b,
    "$nin": lambda a, b: a not in b,
    "$gt": lambda a, b: a is not None and a > b,
    "$gte": lambda a, b: a is not None and a >= b,
    "$lt": lambda a, b: a is not None and a < b,
    "$lte": lambda a, b: a is not None and a <= b,
}


def matches(record: MemoryRecord, flt: dict[str, Any] | None) -> bool:
    """Filter language: {"field": value} (equality on metadata), {"field": {"$ne"|"$in"|"$nin"|"$gt"|
    "$gte"|"$lt"|"$lte": v}}, {"$and": [...]}, {"$or": [...]}, {"$not": {...}}, {"$tags": [all of]}."""
    if not flt:
        return True
    for name, cond in flt.items():
        if name == "$and":
            ok = all(matches(record, f) for f in cond)
        elif name == "$or":
            ok = any(matches(record, f) for f in cond)
        elif name == "$not":
            ok = not matches(record, cond)
        elif name == "$tags":
            ok = set(cond) <= set(record.tags)
        elif isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
            have = record.metadata.get(name)
            for op in cond:
                if op not in _OPS:
                    raise InvalidValueError(f"unknown filter operator {op!r}")
            ok = all(_OPS[op](have, arg) for op, arg in cond.items())
        else:
            ok = record.metadata.get(name) == cond
        if not ok:
            return False
    return True


def valid_at(rec: MemoryRecord, when: float) -> bool:
    """Whether ``when`` falls inside the record's validity interval."""
    return (rec.valid_from is None or rec.valid_from <= when) and (
        rec.valid_to is None or when < rec.valid_to
    )


# ---- protobuf conversion (shared by the service and the clients) ------------------------------------


def record_to_pb(rec: MemoryRecord) -> Any:
    from memstore.v1 import memstore_pb2 as pb

    msg = pb.MemoryRecord(
        namespace=list(rec.namespace),
        key=rec.key,
        value_json=json.dumps(rec.value),
        metadata_json=json.dumps(rec.metadata),
        tags=rec.tags,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        version=rec.version,
        deleted=rec.deleted,
    )
    if rec.embedding is not None:
        msg.embedding.extend(rec.embedding.tolist())
    for name in ("text", "ttl", "expires_at", "valid_from", "valid_to", "score"):
        if getattr(rec, name) is not None:
            setattr(msg, name, getattr(rec, name))
    return msg


def record_from_pb(msg: Any) -> MemoryRecord:
    def opt(name: str) -> Any:
        return getattr(msg, name) if msg.HasField(name) else None

    try:
        value = json.loads(msg.value_json) if msg.value_json else None
        metadata = json.loads(msg.metadata_json) if msg.metadata_json else {}
    except json.JSONDecodeError as exc:
        raise InvalidValueError(f"value_json and metadata_json must be JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise InvalidValueError("metadata_json must be a JSON object")
    return MemoryRecord(
        namespace=tuple(msg.namespace),
        key=msg.key,
        value=value,
        text=opt("text"),
        metadata=metadata,
        tags=list(msg.tags),
        embedding=np.asarray(msg.embedding, dtype=np.float32) if len(msg.embedding) else None,
        created_at=msg.created_at,
        updated_at=msg.updated_at,
        ttl=opt("ttl"),
        expires_at=opt("expires_at"),
        valid_from=opt("valid_from"),
        valid_to=opt("valid_to"),
        version=msg.version,
        deleted=msg.deleted,
        score=opt("score"),
    )
