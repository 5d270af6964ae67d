"""One root error for every fault memstore raises; a miss is never an error.

Each class says what to change. The service maps these to gRPC status codes in one place
(``memstore_server.errors``).
"""

from __future__ import annotations


class MemstoreError(Exception):
    """Root of every error memstore raises on purpose."""


class InvalidKeyError(MemstoreError, ValueError):
    """A key is empty, too long or not bytes: keys are 1 to MAX_KEY_BYTES bytes."""


class InvalidValueError(MemstoreError, ValueError):
    """A value is not bytes-like or a plain numpy array, or its dtype/shape disagree with its bytes."""


class InvalidNamespaceError(MemstoreError, ValueError):
    """A namespace name or option is malformed, or the namespace does not exist."""


class UnknownNamespaceError(InvalidNamespaceError):
    """The namespace does not exist: create it first with ``create_namespace``."""


class CapacityError(MemstoreError):
    """The store cannot hold this: a value larger than every tier, or a full persistent tier.

    Free space (delete records) or open the store with a larger ``cold_bytes``.
    """


class QuotaExceededError(CapacityError):
    """The tenant's quota (bytes in a tier, or records) cannot take this; other tenants are unaffected.

    Delete some of the tenant's records or raise its quota (``memstore serve --quotas FILE``).
    """


class PersistentFullError(CapacityError):
    """The cold tier cannot take a persistent record; nothing was written."""


class DiskFullError(CapacityError):
    """The disk that holds the cold tier has no room for a write; nothing of that write was stored.

    Free space on that disk or move the data dir to a larger one; the store keeps serving reads.
    """


class CorruptRecordError(MemstoreError):
    """A stored record failed its header or checksum checks; it is treated as a miss and removed."""


class StoreLockedError(MemstoreError):
    """Another live process has this store path open; one process owns a store path at a time."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid  # the process holding it, when it wrote its pid into the LOCK file


class SharedMemoryFullError(CapacityError):
    """The hot tier's arena does not fit in the shared-memory filesystem (``/dev/shm``).

    Give the store fewer ``hot_bytes`` or enlarge that filesystem.
    """

    def __init__(self, message: str, needed: int, free: int) -> None:
        super().__init__(message)
        self.needed, self.free = needed, free


class ColdResizeError(CapacityError):
    """A smaller ``cold_bytes`` than the records of an existing store need; the store was not opened."""


class StoreClosedError(MemstoreError):
    """The store was closed; open it again."""


class StaleLoadError(MemstoreError):
    """Blocks changed in the store while they were being copied to the GPU: load them again.

    Raised by a layer-by-layer load when the model reaches its last layer, so no output computed from
    changed bytes is ever returned.
    """


class UnknownReservationError(MemstoreError):
    """No open shared-memory reservation has this token for this caller (expired, committed, aborted,
    made by another caller, or never made): reserve again."""


class ReservationMismatchError(MemstoreError):
    """The arena does not hold the bytes a commit's checksum names: the value was not written (or not
    completely); the reservation was given back. Write the value and reserve again, or use Put."""


class DamagedStoreError(MemstoreError):
    """The data dir's files are damaged (for example an LMDB file cut short): the store does not open.
    ``memstore check DIR`` reports what is intact, ``memstore salvage DIR NEW_DIR`` copies it out."""
