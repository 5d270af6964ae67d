"""The cold tier: one LMDB environment on disk, written by one writer thread in group commits.

LMDB is the source of truth for persistent data and the last stop of cache data. Facts that shape
this module (measured, see DESIGN.md section 7): LMDB has no checksums of its own (the record header
adds them), map-full fails at commit and leaves the environment usable, reader slots of a killed
process linger until ``reader_check()``, and keys are 1 to 511 bytes.

The environment is opened with ``sync=False``: a commit reaches the OS page cache (enough to survive a
killed process) and the writer calls ``env.sync(True)`` once for every batch that holds a persistent
write, so one fsync acknowledges many puts.

Notes on threads: any thread may call ``read``; ``submit_*`` enqueue work for the single writer thread
and return a Future. Until its batch commits, a queued write is served from ``_pending`` so readers
never see the store go back in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import lmdb

from memstore import settings
from memstore.errors import CapacityError, DiskFullError, MemstoreError
from memstore.policy import EvictionPolicy
from memstore.quota import Usage
from memstore.tier import Tier

T = TypeVar("T")

PAGE = 4096
# LMDB reports a write cut short by a full disk as EIO; with less than this free beyond what the write
# needed, a failed write is taken for a full disk.
DISK_MARGIN = 1 << 20


class ColdFullError(CapacityError):
    """The LMDB map cannot take this write (the cold budget is spent)."""


class ColdIOError(MemstoreError):
    """LMDB reported an error other than a full map (disk error, disk full)."""


def _length(n: int) -> bytes:
    return n.to_bytes(8, "little")


def lmdb_cost(key_len: int, value_len: int) -> int:
    """Bytes a record is expected to take in the map: overflow pages for large values, leaf space else."""
    size = key_len + value_len + 16
    if size > PAGE // 2:
        return (value_len + 16 + PAGE - 1) // PAGE * PAGE
    return 2 * size  # leaf pages run about half full after splits


@dataclass(slots=True)
class _Op:
    db: lmdb._Database
    key: bytes
    value: bytes | None  # None deletes
    durable: bool  # fsync before acknowledging
    tag: int = 0  # the caller's name for this write, echoed in ``failures``
    future: Future[bool] = field(default_factory=Future)


@dataclass(slots=True)
class ColdEntry:
    cost: int  # bytes the record takes in the LMDB file (``lmdb_cost``)
    persistent: bool
    tag: int  # which queued write made this entry (to reconcile failed writes)


class ColdIndex(Tier[ColdEntry]):
    """What the cold tier's LMDB file holds (or will once queued writes land), within its budget.

    Cache records are ranked by the eviction policy; persistent ones are never evicted, so they are
    kept out of its order."""

    def __init__(
        self, budget: int, policy: EvictionPolicy, usage: Usage, tenant_of: Callable[[bytes], str]
    ) -> None:
        super().__init__("cold", budget, policy, usage, tenant_of, lambda c: c.cost)
        self._next_tag = 0

    def entry_for(self, fk: bytes, record_len: int, persistent: bool) -> ColdEntry:
        """A new entry for a write about to be queued, tagged so a failure finds only its own entry."""
        self._next_tag += 1
        return ColdEntry(lmdb_cost(len(fk), record_len), persistent, self._next_tag)


def first_error(futures: Iterable[Future[bool]]) -> MemstoreError | None:
    """Wait for every queued write; the first error any of them ended with (None if all landed)."""
    error = None
    for fut in futures:
        try:
            fut.result()
        except MemstoreError as exc:
            error = error or exc
    return error


def cold_budget(map_size: int) -> int:
    """Bytes of records an LMDB map of ``map_size`` holds: ``COLD_FILL`` of it, less a reserve; the rest
    is LMDB's own B-tree pages and the free pages copy-on-write needs while readers hold old ones."""
    reserve = min(settings.COLD_RESERVED, map_size // 10)
    return max(0, int(map_size * settings.COLD_FILL) - reserve)


class ColdTier:
    def __init__(
        self,
        path: str,
        map_size: int,
        *,
        batch_ops: int = 64,
        batch_bytes: int = 64 << 20,
        pending_limit: int = 256 << 20,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.map_size = map_size
        self.env = lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            max_dbs=4,
            sync=False,
            metasync=False,
            readahead=True,
            lock=True,
            max_readers=512,
        )
        self.env.reader_check()  # free the reader slots of processes that died holding them
        self.records = self.env.open_db(b"records")
        self.meta = self.env.open_db(b"meta")
        # Each record's length, written in the same transaction as the record: a restart reads these
        # small entries instead of walking the records, whose large values LMDB keeps on overflow pages
        # that py-lmdb faults in (touches every page) whenever a cursor steps onto them.
        self.lengths = self.env.open_db(b"lengths")
        self._batch_ops = batch_ops
        self._batch_bytes = batch_bytes
        self._pending_limit = pending_limit
        self._pending: dict[bytes, bytes | None] = {}
        self._pending_bytes = 0
        self._queue: deque[_Op] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.commits = 0
        self.bytes_written = 0
        self.failures: deque[tuple[bytes, bytes | None, int, BaseException]] = deque()
        self._writer = threading.Thread(target=self._run, name="memstore-cold-writer", daemon=True)
        self._writer.start()

    # ---- reads ----------------------------------------------------------------------------------

    def read(self, key: bytes, fn: Callable[[memoryview], T]) -> T | None:
        """Apply ``fn`` to the stored record (a view valid only during the call); None if absent."""
        with self._cond:
            if key in self._pending:
                value = self._pending[key]
                if value is None:
                    return None
                return fn(memoryview(value))
        with self.env.begin(db=self.records, buffers=True) as txn:
            buf = txn.get(key)
            if buf is None:
                return None
            return fn(buf)

    def report(self, raw_bytes: int) -> dict[str, Any]:
        """The writer's part of the cold tier's stats; ``raw_bytes``: decoded bytes of what it wrote."""
        written = self.bytes_written
        return {
            "compression_ratio": raw_bytes / written if written else None,
            "bytes_written": written,
            "commits": self.commits,
            "map_bytes": self.map_size,
            "reader_slots": self.reader_slots(),
        }

    def bytes_in_use(self) -> int:
        """Bytes of the LMDB file up to its last page in use (LMDB never maps less, nor shrinks it)."""
        return (int(self.env.info()["last_pgno"]) + 1) * int(self.env.stat()["psize"])

    def reader_slots(self) -> int:
        """LMDB reader-table slots in use or kept for reuse (a leak of read transactions grows this)."""
        return int(self.env.info()["num_readers"])

    def scan(self) -> Iterator[tuple[bytes, int]]:
        """Every stored key with its record length (reads no value pages)."""
        with self.env.begin() as txn:
            complete = txn.stat(self.lengths)["entries"] == txn.stat(self.records)["entries"]
        if not complete:  # a data dir from before the lengths were kept: build them once
            with self.env.begin(write=True) as txn:
                txn.drop(self.lengths, delete=False)
                for name, record in txn.cursor(db=self.records):
                    txn.put(name, _length(len(record)), db=self.lengths)
        with self.env.begin(db=self.lengths, buffers=True) as txn:
            for key, length in txn.cursor():
                yield bytes(key), int.from_bytes(length, "little")

    def meta_items(self) -> list[tuple[bytes, bytes]]:
        with self.env.begin(db=self.meta) as txn:
            return list(txn.cursor())

    # ---- writes ---------------------------------------------------------------------------------

    def submit_put(self, key: bytes, record: bytes, *, durable: bool = False, tag: int = 0) -> Future[bool]:
        return self._submit(_Op(self.records, key, record, durable, tag))

    def submit_delete(self, key: bytes, *, durable: bool = False) -> Future[bool]:
        return self._submit(_Op(self.records, key, None, durable))

    def put_meta(self, key: bytes, value: bytes) -> None:
        self._submit(_Op(self.meta, key, value, True)).result()

    def submit_meta_delete(self, key: bytes) -> Future[bool]:
        return self._submit(_Op(self.meta, key, None, True))

    def _submit(self, op: _Op) -> Future[bool]:
        size = len(op.value) if op.value is not None else 0
        with self._cond:
            if self._stopping:
                raise MemstoreError("the cold tier is closed")
            # Backpressure: bound the bytes waiting for the writer.
            while self._pending_bytes + size > self._pending_limit and self._queue:
                self._cond.wait()
            if op.db is self.records:
                old = self._pending.get(op.key)
                self._pending_bytes += size - (len(old) if old is not None else 0)
                self._pending[op.key] = op.value
            self._queue.append(op)
            self._cond.notify_all()
        return op.future

    def flush(self) -> None:
        """Wait until every write queued so far has been committed (or failed)."""
        with self._cond:
            last = self._queue[-1] if self._queue else None
        if last is not None:
            with contextlib.suppress(MemstoreError):
                last.future.result()

    def _take_batch(self) -> list[_Op]:
        batch: list[_Op] = []
        size = 0
        while self._queue and len(batch) < self._batch_ops and size < self._batch_bytes:
            op = self._queue.popleft()
            batch.append(op)
            size += len(op.value) if op.value is not None else 0
        return batch

    def _apply(self, batch: list[_Op]) -> None:
        with self.env.begin(write=True) as txn:
            for op in batch:
                if op.value is None:
                    txn.delete(op.key, db=op.db)
                    if op.db is self.records:
                        txn.delete(op.key, db=self.lengths)
                else:
                    txn.put(op.key, op.value, db=op.db)
                    if op.db is self.records:
                        txn.put(op.key, _length(len(op.value)), db=self.lengths)
        if any(op.durable for op in batch):
            self.env.sync(True)

    def _write_error(self, exc: lmdb.Error, op: _Op) -> MemstoreError:
        """A failed write's error: the disk is full when it has less room than the write took."""
        need = len(op.key) + len(op.value or b"") + DISK_MARGIN
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            free = need
        if free < need:
            return DiskFullError(
                f"the disk holding {os.path.abspath(self.path)} is full ({free} bytes free): "
                "free space there or move the data dir to a larger disk"
            )
        return ColdIOError(f"LMDB write failed: {exc}")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                batch = self._take_batch()
            results: list[BaseException | None]
            try:
                self._apply(batch)
                results = [None] * len(batch)
            except lmdb.Error:
                # Find out which writes fail by committing them one at a time.
                results = []
                for op in batch:
                    try:
                        self._apply([op])
                        results.append(None)
                    except lmdb.MapFullError as exc:
                        results.append(ColdFullError(f"cold tier full ({self.map_size} byte map): {exc}"))
                    except lmdb.Error as exc:
                        results.append(self._write_error(exc, op))
            self.commits += 1
            with self._cond:
                for op, err in zip(batch, results, strict=True):
                    if op.db is self.records and self._pending.get(op.key, b"") is op.value:
                        del self._pending[op.key]
                        self._pending_bytes -= len(op.value) if op.value is not None else 0
                    if err is not None and op.db is self.records:
                        self.failures.append((op.key, op.value, op.tag, err))
                    elif op.value is not None:
                        self.bytes_written += len(op.value)
                self._cond.notify_all()
            for op, err in zip(batch, results, strict=True):
                if err is None:
                    op.future.set_result(True)
                else:
                    op.future.set_exception(err)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._writer.join()
        self.env.sync(True)
        self.env.close()
