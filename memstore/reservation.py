"""The store side of the same-host path: locating records in the arena for readers that copy them
out themselves, and reservations of arena space for writers that copy their values in.

A client on the server's host reserves space, writes its value into the arena itself, and commits: only
then is the value indexed and visible. A reservation token is 64 random bits and serves only the caller
that made it; a commit carries the xxh3 checksum of the bytes its writer wrote and is refused if the
arena does not hold them (so it never publishes what the space held before); reserved bytes count
toward the tenant's hot quota from the reservation on; an uncommitted reservation is reclaimed when its
lease ends. Callers hold the store's lock.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import xxhash

from memstore.codecs import RAW
from memstore.errors import InvalidValueError, ReservationMismatchError, UnknownReservationError
from memstore.hot import REMOTE, HotLocation, Remote
from memstore.movement import Movement
from memstore.quota import Usage
from memstore.record import RecordMeta, check_array_meta, pack_header

if TYPE_CHECKING:
    from memstore.store import TieredStore


@dataclass(slots=True)
class Reservation:
    token: int
    fk: bytes
    slot: int
    offset: int
    alloc: int
    header_len: int
    meta: RecordMeta
    expires: float
    parent: bytes | None = None
    owner: str = ""  # who made it: only the same caller may commit or abort it

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header_len


class Reservations:
    """The open reservations of one store's arena."""

    def __init__(self, movement: Movement, usage: Usage) -> None:
        self._movement = movement
        self._hot = movement.hot
        self._usage = usage
        self._open: dict[int, Reservation] = {}

    def open(
        self, fk: bytes, header_len: int, meta: RecordMeta, lease: float, parent: bytes | None, owner: str
    ) -> Reservation | None:
        """Arena space for fk's record, demoting hot victims for it; None when the arena cannot take it."""
        self.reap()
        nbytes = header_len + meta.raw_len
        got = self._movement.in_hot_room(fk, nbytes, lambda: self._hot.arena.reserve(nbytes))
        if got is None:
            return None
        slot, offset, alloc = got
        token = secrets.randbits(64)  # unguessable: a token names the reservation, never a count
        while not token or token in self._open:
            token = secrets.randbits(64)
        r = Reservation(
            token, fk, slot, offset, alloc, header_len, meta, time.monotonic() + lease, parent, owner
        )
        self._open[r.token] = r
        self._account(r, held=True)
        return r

    def commit(
        self, tokens: Sequence[int], checksums: Sequence[int] | None, owner: str
    ) -> tuple[list[tuple[bytes, Future[bool]]], list[tuple[bytes, memoryview, RecordMeta]]]:
        """Publish reserved values, all or none; returns the deletes of older cold copies to wait for,
        and each committed record's key, payload (a view of the arena: valid under the store's lock) and
        meta."""
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise InvalidValueError("a reservation token is named twice in one commit")
        if checksums is not None and len(checksums) != len(tokens):
            raise InvalidValueError(f"{len(checksums)} checksums for {len(tokens)} reservations")
        self.reap()
        found: list[Reservation] = []
        for t in tokens:
            r = self._open.get(t)
            if r is None or r.owner != owner:
                raise UnknownReservationError(
                    f"no open reservation {t} of this caller (expired, committed, aborted or never made)"
                )
            found.append(r)
        views = [self._hot.arena.view[r.payload_offset : r.payload_offset + r.meta.raw_len] for r in found]
        for i, (r, payload) in enumerate(zip(found, views, strict=True)):
            if checksums is not None and xxhash.xxh3_64_intdigest(payload) != checksums[i]:
                self.cancel(r.token)
                raise ReservationMismatchError(
                    f"reservation {r.token}: the arena does not hold the bytes of the given checksum "
                    "(written incompletely or not at all); the reservation is given back"
                )
        stale: list[tuple[bytes, Future[bool]]] = []
        move = self._movement
        for r, payload in zip(found, views, strict=True):
            del self._open[r.token]
            self._account(r, held=False)  # the index counts it from here
            header = pack_header(r.meta, payload)
            move.drop_upper(r.fk)
            fut = move.drop_cold(r.fk, durable=False)
            if fut is not None:
                stale.append((r.fk, fut))
            entry = self._hot.arena.publish_reserved(
                r.slot, r.offset, r.alloc, header, r.header_len + r.meta.raw_len, r.meta, clean=False
            )
            move.set_parent(r.fk, r.parent)
            self._hot.add(r.fk, entry, r.parent)
        return stale, [(r.fk, payload, r.meta) for r, payload in zip(found, views, strict=True)]

    def abort(self, token: int, owner: str) -> bool:
        r = self._open.get(token)
        if r is None or r.owner != owner:
            return False
        return self.cancel(token)

    def cancel(self, token: int) -> bool:
        r = self._open.pop(token, None)
        if r is not None:
            self._account(r, held=False)
            self._hot.arena.cancel_reserved(r.slot, r.offset, r.alloc)
        return r is not None

    def cancel_prefix(self, prefix: bytes) -> None:
        """A namespace is deleted: a commit after this would index a key of no namespace."""
        for token in [t for t, r in self._open.items() if r.fk.startswith(prefix)]:
            self.cancel(token)

    def reap(self) -> None:
        now = time.monotonic()
        for token in [t for t, r in self._open.items() if r.expires < now]:
            self.cancel(token)
            self._hot.stats.bump("expired_reservations")

    def _account(self, r: Reservation, *, held: bool) -> None:
        """Reserved arena bytes count toward the tenant's hot bytes (and record limit) from the
        reservation on, so uncommitted reservations cannot take more of the arena than its quota."""
        change = self._usage.added if held else self._usage.removed
        change("hot", self._movement.quotas.tenant_of(r.fk), r.fk, r.header_len + r.meta.raw_len, item=False)


class LocalPath:
    """``store.local``: what the server's same-host RPCs call (``OpenLocal``, ``LocalGet``,
    ``LocalPutBegin``, ``LocalPutCommit``); each call takes the store's lock."""

    def __init__(self, store: TieredStore, reservations: Reservations) -> None:
        self._store = store
        self.reservations = reservations

    def locate_many(self, keys: Iterable[bytes], *, ns: str = "default") -> list[HotLocation | Remote | None]:
        """Where each key's record sits in the hot arena, promoting lower-tier hits into it first.

        ``None`` is a miss; ``REMOTE`` a value that cannot be placed in the arena (too large, or every
        slot pinned): fetch it with ``get``. A reader must check the slot's generation after copying.
        """
        store = self._store
        namespace = store._namespaces.named(ns)
        keys = list(keys)
        fks = [namespace.full_key(key) for key in keys]
        found: list[HotLocation | None] = [self._locate(fk) for fk in fks]
        away = [i for i, loc in enumerate(found) if loc is None]
        if not away:
            return list(found)
        # the rest in one get_many: a shared namespace's misses are one pool round trip
        values = store.get_many([keys[i] for i in away], ns=ns)
        out: list[HotLocation | Remote | None] = list(found)
        for i, value in zip(away, values, strict=True):
            if value is not None:
                loc = self._locate(fks[i])
                out[i] = REMOTE if loc is None else loc
        return out

    def _locate(self, fk: bytes) -> HotLocation | None:
        with self._store._lock:
            self._store._check_open()
            return self._store.hot.locate(fk)

    def reserve_put(
        self,
        key: bytes,
        nbytes: int,
        *,
        ns: str = "default",
        dtype: str | None = None,
        shape: tuple[int, ...] | None = None,
        lease: float = 30.0,
        parent: bytes | None = None,
        owner: str = "",
    ) -> Reservation | None:
        """Allocate arena space for a value another process on this host will write in place.

        The value becomes visible only at ``commit_put``; a reservation not committed within ``lease``
        seconds is reclaimed. None when the arena cannot take it or the namespace is persistent (use ``put``).
        Only ``owner`` (the server passes the caller's identity) may commit or abort it.
        """
        store = self._store
        namespace = store._namespaces.named(ns)
        fk = namespace.full_key(key)
        parent_fk = namespace.full_key(parent) if parent else None
        if not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidValueError("the reserved size is a non-negative int")
        meta = RecordMeta(RAW.id, nbytes, dtype, tuple(shape) if shape is not None else None)
        if (dtype is None) != (shape is None):
            raise InvalidValueError("an array needs both dtype and shape")
        namespace.check_value(meta.dtype, meta.shape)
        check_array_meta(meta)
        header_len = len(pack_header(meta, b""))  # the header's size does not depend on the payload
        if namespace.persistent or header_len + nbytes > store.hot.max_item():
            return None  # persistent data goes through put(): it is acknowledged after a synced commit
        with store._lock:
            store._check_open()
            store._check_live(namespace)
            self.reservations.reap()
            store._quotas.check_records(fk)
            return self.reservations.open(fk, header_len, meta, lease, parent_fk, owner)

    def commit_put(self, token: int, checksum: int | None = None, *, owner: str = "") -> None:
        """Publish one reserved value (see ``commit_puts``)."""
        self.commit_puts([token], None if checksum is None else [checksum], owner=owner)

    def commit_puts(
        self, tokens: Sequence[int], checksums: Sequence[int] | None = None, *, owner: str = ""
    ) -> None:
        """Publish reserved values, all or none: checksum the bytes the writer left in the arena, index them.

        Every token must be open and made by ``owner`` (``UnknownReservationError`` otherwise). With
        ``checksums`` (xxh3-64, seed 0, of each value as its writer wrote it), a value whose arena bytes
        differ is refused (``ReservationMismatchError``) and its reservation given back, so a commit
        never publishes bytes its writer did not write (what the space held before, another record's).
        """
        store = self._store
        with store._lock:
            store._check_open()
            stale, committed = self.reservations.commit(tokens, checksums, owner)
            if store.pool is not None:  # shared namespaces' values go to the pool, as put's do
                for fk, payload, meta in committed:
                    namespace = store._namespaces.of(fk)
                    if namespace is not None and namespace.shared:
                        store.pool.publish_all(namespace.cold_codec, [(fk, payload, meta)])
        if stale:
            store._wait(stale, persistent=False)

    def abort_put(self, token: int, *, owner: str = "") -> bool:
        """Give a reservation back unused; False if ``owner`` holds no open reservation ``token``."""
        with self._store._lock:
            return self.reservations.abort(token, owner)

    def segment(self) -> tuple[str, int]:
        """Path and size of the arena's shared-memory segment."""
        arena = self._store.hot.arena
        return arena.path, arena.size
