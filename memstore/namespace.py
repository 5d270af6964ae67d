"""Namespaces: a name, a durability class, codecs per tier and an optional value schema.

Every stored key is the namespace's prefix (its name's length and bytes, ``memstore.tenancy``) followed
by the caller's key, so a full key names its namespace. The store keeps each namespace's options as a
``ns:NAME`` entry beside the records in the cold tier's LMDB file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from memstore import settings, tenancy
from memstore.codecs import RAW, codec_named
from memstore.cold import ColdTier
from memstore.errors import InvalidKeyError, InvalidNamespaceError, InvalidValueError, UnknownNamespaceError
from memstore.record import RecordMeta, check_array_meta, value_to_raw

Durability = Literal["cache", "persistent"]


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    durability: Durability = "cache"
    warm_codec: str = str(settings.DEFAULTS["warm_codec"])
    cold_codec: str = str(settings.DEFAULTS["cold_codec"])
    # A schema every value must follow (KV namespaces: one block's dtype and shape); None allows any.
    value_dtype: str | None = None
    value_shape: tuple[int, ...] | None = None
    # Published to the pool (memstore.pool) and read from it on a miss, when the store has one.
    shared: bool = False
    # What the values were made by, as canonical JSON (KV namespaces: their KVIdentity), or "": it
    # decides nothing in the store, and lets ``memstore explain`` name the fields two namespaces differ in.
    identity: str = ""

    @property
    def prefix(self) -> bytes:
        return tenancy.key_prefix(self.name)

    @property
    def persistent(self) -> bool:
        return self.durability == "persistent"

    def full_key(self, key: object) -> bytes:
        """The stored key of a caller's key in this namespace (the key checked first)."""
        return self.prefix + check_key(key)

    def full_keys(self, keys: Iterable[object]) -> list[bytes]:
        prefix = self.prefix
        return [prefix + check_key(k) for k in keys]

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "durability": self.durability,
            "warm_codec": self.warm_codec,
            "cold_codec": self.cold_codec,
        }
        if self.value_dtype is not None:
            opts["value_dtype"] = self.value_dtype
            opts["value_shape"] = list(self.value_shape or ())
        if self.shared:
            opts["shared"] = True
        if self.identity:
            opts["identity"] = self.identity
        return opts

    def check_value(self, dtype: str | None, shape: tuple[int, ...] | None) -> None:
        if self.value_dtype is None:
            return
        if dtype != self.value_dtype or shape != self.value_shape:
            raise InvalidValueError(
                f"namespace {self.name!r} holds arrays of dtype {self.value_dtype} and shape "
                f"{list(self.value_shape or ())}, not {dtype} {list(shape) if shape is not None else 'bytes'}"
            )

    def records_of(
        self, pairs: list[tuple[bytes, Any]], parents: Sequence[bytes | None] | None
    ) -> list[tuple[bytes, memoryview, RecordMeta, bytes | None]]:
        """Each (key, value) of a put as (full key, raw bytes, metadata, full key of its parent), every
        key and value checked before anything is stored."""
        if parents is not None and len(parents) != len(pairs):
            raise InvalidValueError(f"{len(parents)} parents given for {len(pairs)} values")
        out = []
        for (key, value), parent in zip(pairs, parents or [None] * len(pairs), strict=True):
            fk = self.full_key(key)
            raw, dtype, shape = value_to_raw(value)
            self.check_value(dtype, shape)
            out.append(
                (
                    fk,
                    raw,
                    RecordMeta(RAW.id, len(raw), dtype, shape),
                    self.full_key(parent) if parent else None,
                )
            )
        return out

    @classmethod
    def checked(
        cls,
        name: str,
        durability: str,
        warm_codec: str,
        cold_codec: str,
        value_dtype: str | None,
        value_shape: Iterable[int] | None,
        shared: bool = False,
        identity: str = "",
    ) -> Namespace:
        """A namespace from a caller's options, each checked (``InvalidNamespaceError`` names the bad one)."""
        tenancy.owner(name)  # a name the store can hold: NAME, TENANT#NAME or TENANT!NAME
        if durability not in ("cache", "persistent"):
            raise InvalidNamespaceError(f"durability is 'cache' or 'persistent', not {durability!r}")
        for codec in (warm_codec, cold_codec):
            try:
                codec_named(codec)
            except ValueError as exc:
                raise InvalidNamespaceError(str(exc)) from None
        shape = tuple(int(d) for d in value_shape) if value_shape is not None else None
        if (value_dtype is None) != (shape is None):
            raise InvalidNamespaceError("a value schema needs both value_dtype and value_shape")
        if value_dtype is not None:
            try:
                check_array_meta(RecordMeta(RAW.id, _nbytes(value_dtype, shape), value_dtype, shape))
            except (InvalidValueError, TypeError) as exc:
                raise InvalidNamespaceError(f"bad value schema: {exc}") from None
        if shared and durability != "cache":
            raise InvalidNamespaceError(
                "a shared namespace is a cache namespace (the pool evicts and expires)"
            )
        if identity:
            _check_identity(identity)
        return cls(name, durability, warm_codec, cold_codec, value_dtype, shape, bool(shared), identity)  # type: ignore[arg-type]

    @classmethod
    def from_meta(cls, key: bytes, value: bytes) -> Namespace:
        """A namespace from its ``ns:NAME`` entry in the cold tier."""
        opts = json.loads(value)
        if opts.get("value_shape") is not None:
            opts["value_shape"] = tuple(opts["value_shape"])
        return cls(key[3:].decode(), **opts)

    def meta_entry(self) -> tuple[bytes, bytes]:
        return b"ns:" + self.name.encode(), json.dumps(self.options()).encode()


class Namespaces:
    """Every namespace of a store, by name and by key prefix. Callers hold the store's lock to change it."""

    def __init__(self) -> None:
        self.by_name: dict[str, Namespace] = {}
        self.by_prefix: dict[bytes, Namespace] = {}

    def __len__(self) -> int:
        return len(self.by_name)

    def load(self, writer: ColdTier) -> None:
        """The namespaces the cold tier's file names."""
        for key, value in writer.meta_items():
            if key.startswith(b"ns:"):
                self.add(Namespace.from_meta(key, value))

    def create(self, ns: Namespace, writer: ColdTier) -> Namespace:
        """Add ``ns`` and record it in the cold tier's file; an existing one of the same options is
        returned as it is, one of other options refused."""
        old = self.by_name.get(ns.name)
        if old is not None:
            if old == ns:
                return old
            if replace(old, shared=ns.shared, identity=ns.identity or old.identity) != ns:
                raise InvalidNamespaceError(f"namespace {ns.name!r} exists with options {old.options()}")
            # Sharing is how a deployment uses a namespace, not what its records are: it may change;
            # an identity may be added to a namespace made without one.
            ns = replace(ns, identity=ns.identity or old.identity)
        writer.put_meta(*ns.meta_entry())
        self.add(ns)
        return ns

    def add(self, ns: Namespace) -> None:
        self.by_name[ns.name] = ns
        self.by_prefix[ns.prefix] = ns

    def drop(self, ns: Namespace) -> None:
        del self.by_name[ns.name]
        del self.by_prefix[ns.prefix]

    def named(self, name: str) -> Namespace:
        ns = self.by_name.get(name) if isinstance(name, str) else None
        if ns is None:
            raise UnknownNamespaceError(f"unknown namespace {name!r}; create it with create_namespace()")
        return ns

    def of(self, fk: bytes) -> Namespace | None:
        """The namespace a stored key belongs to (None for one deleted since)."""
        return self.by_prefix.get(fk[: 1 + fk[0]])

    def is_live(self, ns: Namespace) -> bool:
        return self.by_prefix.get(ns.prefix) is ns


MAX_IDENTITY = 4096


def _check_identity(identity: str) -> None:
    if len(identity.encode()) > MAX_IDENTITY:
        raise InvalidNamespaceError(f"an identity is at most {MAX_IDENTITY} bytes of JSON")
    parse_identity(identity, InvalidNamespaceError)


def parse_identity(text: Any, error: type[Exception]) -> dict[str, Any]:
    """An identity's JSON text as a dict; ``error`` when it is not a JSON object."""
    try:
        parsed = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise error(f"an identity is a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise error("an identity is a JSON object")
    return parsed


def check_key(key: object) -> bytes:
    if not isinstance(key, bytes):
        raise InvalidKeyError(f"keys are bytes, not {type(key).__name__}")
    if not 1 <= len(key) <= settings.MAX_KEY_BYTES:
        raise InvalidKeyError(f"keys are 1 to {settings.MAX_KEY_BYTES} bytes, this one is {len(key)}")
    return key


def _nbytes(dtype: str, shape: tuple[int, ...] | None) -> int:
    import numpy as np

    try:
        n = np.dtype(dtype).itemsize
    except TypeError as exc:
        raise InvalidNamespaceError(f"unknown dtype {dtype!r}") from exc
    for d in shape or ():
        n *= d
    return n
