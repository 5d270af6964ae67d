"""The KV-cache layer: namespace identity, chained block keys, and one-call prefix operations.

Key spec (version 1), reproducible in any language:

- A KV namespace's identity (``KVIdentity``: tenant, model id, revision or weights digest, KV dtype,
  layout, block size, TP/PP rank and size, adapter id, cache salt) is serialised as canonical JSON
  (keys sorted, no spaces, UTF-8) and digested: ``identity_digest = SHA-256(b"memstore.kv.v1\\0" + json)``.
- Block keys chain over the token ids: ``h0 = SHA-256(b"memstore.kv.v1/root\\0" + identity_digest)``,
  ``h_i = SHA-256(h_{i-1} + token ids of block i as little-endian uint32 + extra)``; the key of block i
  is ``h_i`` (32 bytes). A key therefore names a block *and* everything before it.
- Only full blocks are keyed unless ``partial=True``.

``tests/test_kv.py`` holds golden vectors for these rules.

A block holds every layer of its tokens: an array of shape (layers, 2, kv_heads, block_tokens,
head_dim), K before V, in the namespace's storage dtype (bf16 travels as its uint16 bits). Engines
that load layer by layer index the first axis.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from memstore.errors import InvalidValueError
from memstore.retention import Hint

SPEC = b"memstore.kv.v1"
# KV dtypes and how their elements are stored (numpy has no bfloat16: its raw bits travel as uint16).
STORAGE_DTYPES = {
    "bfloat16": "<u2",
    "float16": "<f2",
    "float32": "<f4",
    "float8_e4m3fn": "|u1",
    "int8": "|i1",
}


@dataclass(frozen=True)
class KVIdentity:
    """Everything that decides the bytes of a KV block; two identities never share a block."""

    model_id: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    kv_dtype: str = "bfloat16"
    block_tokens: int = 16
    revision: str = ""
    weights_digest: str = ""
    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1
    adapter_id: str = ""
    cache_salt: str = ""
    tenant: str = "default"

    def __post_init__(self) -> None:
        if self.kv_dtype not in STORAGE_DTYPES:
            raise InvalidValueError(f"kv_dtype is one of {sorted(STORAGE_DTYPES)}, not {self.kv_dtype!r}")
        for name in ("num_layers", "num_kv_heads", "head_dim", "block_tokens", "tp_size", "pp_size"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(f"{name} must be at least 1")

    def canonical_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(SPEC + b"\0" + self.canonical_json()).digest()

    @property
    def namespace(self) -> str:
        return "kv-" + self.digest().hex()[:40]

    @property
    def storage_dtype(self) -> str:
        return STORAGE_DTYPES[self.kv_dtype]

    @property
    def block_shape(self) -> tuple[int, int, int, int, int]:
        return (self.num_layers, 2, self.num_kv_heads, self.block_tokens, self.head_dim)

    @property
    def block_bytes(self) -> int:
        n = np.dtype(self.storage_dtype).itemsize
        for d in self.block_shape:
            n *= d
        return n


def block_keys(
    identity_digest: bytes,
    tokens: Sequence[int] | np.ndarray,
    block_tokens: int,
    *,
    extra: bytes = b"",
    partial: bool = False,
) -> list[bytes]:
    """The chained keys of the blocks of ``tokens`` (full blocks only unless ``partial``)."""
    ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= 1 << 32):
        raise InvalidValueError("token ids must fit in uint32")
    le = ids.astype("<u4")
    count = len(le) // block_tokens + (1 if partial and len(le) % block_tokens else 0)
    h = hashlib.sha256(SPEC + b"/root\0" + identity_digest).digest()
    keys = []
    for i in range(count):
        h = hashlib.sha256(h + le[i * block_tokens : (i + 1) * block_tokens].tobytes() + extra).digest()
        keys.append(h)
    return keys


@dataclass(frozen=True)
class PrefixHit:
    """Result of a lookup: how many leading blocks (and tokens) are cached, and where each one is."""

    blocks: int
    tokens: int
    tiers: list[str]


class KVCache:
    """Prefix-keyed KV blocks in one namespace of a memstore server; every operation is one call."""

    def __init__(
        self,
        client: Any,
        identity: KVIdentity,
        *,
        warm_codec: str = "",
        cold_codec: str = "",
        shared: bool = True,
    ) -> None:
        self.client = client
        self.identity = identity
        self.ns = identity.namespace
        self._digest = identity.digest()
        client.create_namespace(
            self.ns,
            warm_codec=warm_codec,
            cold_codec=cold_codec,
            value_dtype=identity.storage_dtype,
            value_shape=identity.block_shape,
            shared=shared,  # through the server's pool, when it has one (memstore serve --pool)
            identity=identity.canonical_json().decode(),  # what explain compares a miss against
        )

    def keys(self, tokens: Sequence[int] | np.ndarray, *, extra: bytes = b"") -> list[bytes]:
        return block_keys(self._digest, tokens, self.identity.block_tokens, extra=extra)

    def lookup(self, tokens: Sequence[int] | np.ndarray, *, hint: Hint | None = None) -> PrefixHit:
        """How many leading full blocks of ``tokens`` are stored, and in which tier (one call); with a
        retention ``hint`` (``memstore.retention.Hint``), the stored ones take it."""
        return self._prefix(self.keys(tokens), hint)

    def _prefix(self, keys: list[bytes], hint: Hint | None = None) -> PrefixHit:
        tiers = self.client.tiers(keys, ns=self.ns, hint=hint) if keys else []
        n = next((i for i, t in enumerate(tiers) if t is None), len(tiers))
        return PrefixHit(n, n * self.identity.block_tokens, tiers[:n])

    def explain(self, tokens: Sequence[int] | np.ndarray) -> Any:
        """Why the cached prefix of ``tokens`` ends where it does: the server's explanation
        (``memstore.explain.Explanation``) of the first full block no tier holds, with this identity
        compared against the tenant's other KV namespaces; None when every full block is stored."""
        keys = self.keys(tokens)
        hit = self._prefix(keys)
        if hit.blocks == len(keys):
            return None
        return self.client.explain(keys[hit.blocks], ns=self.ns, identity=self.identity)

    def put_blocks(
        self,
        tokens: Sequence[int] | np.ndarray,
        blocks: Sequence[np.ndarray] | np.ndarray,
        *,
        start: int = 0,
        hint: Hint | None = None,
    ) -> int:
        """Store blocks ``start, start+1, ...`` of ``tokens``; returns how many were written. Each block
        is stored with the key of the block before it as its parent, for prefix-aware eviction; a
        retention ``hint`` applies to all of them."""
        chain = self.keys(tokens)
        keys = chain[start : start + len(blocks)]
        if len(keys) < len(blocks):
            raise InvalidValueError(
                f"{len(blocks)} blocks given, the tokens have {len(keys) + start} full blocks"
            )
        parents = [chain[i - 1] if i else None for i in range(start, start + len(keys))]
        pairs = list(zip(keys, blocks, strict=False))
        return int(self.client.put_many(pairs, ns=self.ns, parents=parents, hint=hint))

    def end_session(self, session: str, *, pause: bool = False, resume_in: float | None = None) -> int:
        """End a session named in hints: its blocks no open session shares go first. With ``pause``
        it waits (a tool call in flight) until a hinted lookup or put names it again; ``resume_in``:
        an estimate of the seconds until then (the blocks of sessions due back later go first)."""
        return int(self.client.end_session(session, pause=pause, resume_in=resume_in))

    def get_blocks(
        self, tokens: Sequence[int] | np.ndarray, count: int | None = None
    ) -> list[np.ndarray | None]:
        """The first ``count`` blocks of ``tokens`` (all full blocks by default), None where missing."""
        keys = self.keys(tokens)
        keys = keys if count is None else keys[:count]
        return list(self.client.get_many(keys, ns=self.ns)) if keys else []

    def prefetch(self, tokens: Sequence[int] | np.ndarray) -> int:
        keys = self.keys(tokens)
        return int(self.client.prefetch(keys, ns=self.ns)) if keys else 0

    def pin(self, tokens: Sequence[int] | np.ndarray, *, unpin: bool = False) -> int:
        keys = self.keys(tokens)
        return sum(self.client.pin(keys, ns=self.ns, unpin=unpin)) if keys else 0

    def drop(self) -> int:
        """Delete the whole namespace (every block of this identity)."""
        return int(self.client.delete_namespace(self.ns))
