"""memstore: the memory layer of LLM inference.

A tiered store for KV-cache blocks and agent memory: a hot shared-memory arena, a compressed DRAM warm
tier and a compressed LMDB cold tier, usable in-process (``TieredStore``) or over gRPC.
"""

from memstore.client import AsyncClient, Client, RemoteError
from memstore.errors import (
    CapacityError,
    CorruptRecordError,
    InvalidKeyError,
    InvalidNamespaceError,
    InvalidValueError,
    MemstoreError,
    PersistentFullError,
    StoreClosedError,
    StoreLockedError,
    UnknownNamespaceError,
)
from memstore.store import Namespace, TieredStore

__all__ = [
    "AsyncClient",
    "CapacityError",
    "Client",
    "CorruptRecordError",
    "InvalidKeyError",
    "InvalidNamespaceError",
    "InvalidValueError",
    "MemstoreError",
    "Namespace",
    "PersistentFullError",
    "RemoteError",
    "StoreClosedError",
    "StoreLockedError",
    "TieredStore",
    "UnknownNamespaceError",
]
__version__ = "0.1.0"
