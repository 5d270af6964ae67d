"""The hot tier: uncompressed records in a preallocated POSIX shared-memory arena.

Segment layout (little-endian), designed so a reader in another process needs nothing but the segment
and a (slot, generation) pair handed out by the server::

    0    arena header, 64 bytes: magic b"MSARENA1", version u32, slot_count u32, slot_table u64,
         data_offset u64, data_capacity u64, owner_pid u64
    64   slot table, slot_count x 32 bytes: generation u64, offset u64 (from the segment start),
         length u64 (record header + payload), header_len u32, state u32 (0 free, 1 live)
    ...  data region: records (the same header as every tier, then the raw payload), 64-byte aligned

Every change to a slot is bracketed by its generation counter (seqlock): odd while the slot is being
written or freed, even and larger than before once it is stable. A reader copies the bytes and accepts
them only if the generation it saw before and after the copy is the same even number.

Allocation is best-fit over a free list with coalescing of neighbours. Offsets never move, so a
generation check is all a reader needs.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import mmap
import os
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from memstore.errors import CorruptRecordError, SharedMemoryFullError
from memstore.policy import EvictionPolicy
from memstore.quota import Usage
from memstore.record import RecordMeta, header_check
from memstore.tier import Tier

# Linux's MADV_POPULATE_WRITE (5.14+): fault every page in now, not on a put's first write to it.
# Python's mmap names it from 3.12 on; the value is the kernel's own.
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform.startswith("linux") else None)

ARENA_MAGIC = b"MSARENA1"
ARENA_VERSION = 1
ARENA_HEADER = struct.Struct("<8sIIQQQQ")  # padded to 64 bytes in the segment
ARENA_HEADER_SIZE = 64
SLOT = struct.Struct("<QQQII")
SLOT_SIZE = SLOT.size  # 32
ALIGN = 64
SLOT_FREE, SLOT_LIVE, SLOT_WRITING = 0, 1, 2


def shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def segment_name(store_path: str) -> str:
    digest = hashlib.sha256(os.path.abspath(store_path).encode()).hexdigest()[:12]
    return f"memstore-{digest}-{os.getpid()}"


@dataclass(slots=True)
class HotEntry:
    slot: int
    offset: int  # absolute offset of the record in the segment
    length: int  # record length (header + payload)
    alloc: int  # bytes taken from the allocator
    meta: RecordMeta
    clean: bool  # an identical copy is in the cold tier: dropping this entry loses nothing
    header: bytes  # as written: a reader compares the arena's copy with it instead of parsing it
    seed: int  # the payload's checksum seed and expected checksum, from the header
    digest: int


@dataclass(frozen=True, slots=True)
class HotLocation:
    """Where a record sits in the arena, and the slot generation it had when it was located."""

    slot: int
    offset: int
    length: int
    header_len: int
    generation: int


class Remote:
    """Marker: the value exists but is not in the arena; fetch it with ``get``."""

    def __repr__(self) -> str:
        return "REMOTE"


REMOTE = Remote()


class HotArena:
    """The segment, its slot table and its allocator. Callers serialise access (the store's lock)."""

    def __init__(self, store_path: str, capacity: int, *, prefault: bool = True) -> None:
        self.capacity = max(ALIGN, capacity - capacity % ALIGN)
        self.slot_count = int(min(max(self.capacity // 4096, 16), 1 << 20))
        self.slot_table = ARENA_HEADER_SIZE
        data_offset = ARENA_HEADER_SIZE + self.slot_count * SLOT_SIZE
        self.data_offset = data_offset + (-data_offset) % 4096
        self.size = self.data_offset + self.capacity
        self.name = segment_name(store_path)
        self.path = os.path.join(shm_dir(), self.name)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.size)
            # Reserve the pages now: a full /dev/shm must fail here, not as SIGBUS on a later write.
            os.posix_fallocate(fd, 0, self.size)
            self.mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException as exc:
            os.close(fd)
            os.unlink(self.path)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                st = os.statvfs(shm_dir())
                free = st.f_bavail * st.f_frsize
                raise SharedMemoryFullError(
                    f"the hot arena needs {self.size:,} bytes of shared memory and {shm_dir()} has "
                    f"{free:,} free: lower hot_bytes or enlarge {shm_dir()}",
                    self.size,
                    free,
                ) from None
            raise
        os.close(fd)
        if prefault and _POPULATE_WRITE is not None and hasattr(self.mm, "madvise"):
            with contextlib.suppress(OSError):  # kernels before 5.14: pages fault in on first use
                self.mm.madvise(_POPULATE_WRITE)
        self.view = memoryview(self.mm)
        ARENA_HEADER.pack_into(
            self.mm,
            0,
            ARENA_MAGIC,
            ARENA_VERSION,
            self.slot_count,
            self.slot_table,
            self.data_offset,
            self.capacity,
            os.getpid(),
        )
        self.used = 0
        self._free_slots = list(range(self.slot_count - 1, -1, -1))
        self._generation = [0] * self.slot_count
        # Free blocks: start -> size, end -> start, and (size, start) sorted for best fit.
        self._free_start: dict[int, int] = {self.data_offset: self.capacity}
        self._free_end: dict[int, int] = {self.data_offset + self.capacity: self.data_offset}
        self._by_size: list[tuple[int, int]] = [(self.capacity, self.data_offset)]

    # ---- allocator ------------------------------------------------------------------------------

    def _take_free(self, start: int, size: int) -> None:
        del self._free_start[start]
        del self._free_end[start + size]
        i = bisect.bisect_left(self._by_size, (size, start))
        del self._by_size[i]

    def _add_free(self, start: int, size: int) -> None:
        before = self._free_end.get(start)
        if before is not None:  # merge with the block that ends where this one starts
            bsize = self._free_start[before]
            self._take_free(before, bsize)
            start, size = before, size + bsize
        asize = self._free_start.get(start + size)
        if asize is not None:  # merge with the block that starts where this one ends
            self._take_free(start + size, asize)
            size += asize
        self._free_start[start] = size
        self._free_end[start + size] = start
        bisect.insort(self._by_size, (size, start))

    def _alloc(self, nbytes: int) -> int | None:
        i = bisect.bisect_left(self._by_size, (nbytes, -1))
        if i == len(self._by_size):
            return None
        size, start = self._by_size[i]
        self._take_free(start, size)
        if size > nbytes:
            self._add_free(start + nbytes, size - nbytes)
        return start

    # ---- slots ----------------------------------------------------------------------------------

    def _begin(self, slot: int) -> int:
        """Mark a slot unstable (odd generation) before touching it or its bytes."""
        gen = self._generation[slot] + 1
        struct.pack_into("<Q", self.mm, self.slot_table + slot * SLOT_SIZE, gen)
        self._generation[slot] = gen
        return gen

    def _publish(self, slot: int, gen: int, offset: int, length: int, header_len: int, state: int) -> None:
        """Write the slot's fields, then make it stable again with a new even generation."""
        SLOT.pack_into(self.mm, self.slot_table + slot * SLOT_SIZE, gen, offset, length, header_len, state)
        struct.pack_into("<Q", self.mm, self.slot_table + slot * SLOT_SIZE, gen + 1)
        self._generation[slot] = gen + 1

    def generation(self, slot: int) -> int:
        return self._generation[slot]

    def store(self, header: bytes, payload: memoryview, meta: RecordMeta, clean: bool) -> HotEntry | None:
        """Copy a record into the arena; None when no slot or contiguous block is free."""
        length = len(header) + len(payload)
        got = self.reserve(length)
        if got is None:
            return None
        slot, offset, alloc = got
        self.view[offset + len(header) : offset + length] = payload
        return self.publish_reserved(slot, offset, alloc, header, length, meta, clean)

    def reserve(self, length: int) -> tuple[int, int, int] | None:
        """Take a slot and space for a record another process will write; the slot stays unstable (odd
        generation, state WRITING) until ``publish_reserved`` or ``cancel_reserved``.
        Returns (slot, offset, alloc) or None when full."""
        alloc = max(ALIGN, length + (-length) % ALIGN)
        if not self._free_slots:
            return None
        offset = self._alloc(alloc)
        if offset is None:
            return None
        slot = self._free_slots.pop()
        gen = self._begin(slot)
        SLOT.pack_into(self.mm, self.slot_table + slot * SLOT_SIZE, gen, offset, length, 0, SLOT_WRITING)
        self.used += alloc
        return slot, offset, alloc

    def publish_reserved(
        self, slot: int, offset: int, alloc: int, header: bytes, length: int, meta: RecordMeta, clean: bool
    ) -> HotEntry:
        self.view[offset : offset + len(header)] = header
        self._publish(slot, self._generation[slot], offset, length, len(header), SLOT_LIVE)
        return HotEntry(slot, offset, length, alloc, meta, clean, header, *header_check(header))

    def cancel_reserved(self, slot: int, offset: int, alloc: int) -> None:
        self._publish(slot, self._generation[slot], 0, 0, 0, SLOT_FREE)
        self._free_slots.append(slot)
        self._add_free(offset, alloc)
        self.used -= alloc

    def record(self, entry: HotEntry) -> memoryview:
        """A view of the record in the arena; valid until the entry is released."""
        return self.view[entry.offset : entry.offset + entry.length]

    def payload(self, entry: HotEntry) -> memoryview:
        """A view of the entry's payload, once its header in the arena is found unchanged (the payload
        itself is checked against ``entry.digest`` by the reader, on its copy)."""
        start = entry.offset + len(entry.header)
        if self.view[entry.offset : start] != entry.header:
            raise CorruptRecordError("the record's header in the hot arena changed")
        return self.view[start : entry.offset + entry.length]

    def release(self, entry: HotEntry) -> None:
        self._publish(entry.slot, self._begin(entry.slot), 0, 0, 0, SLOT_FREE)
        self._free_slots.append(entry.slot)
        self._add_free(entry.offset, entry.alloc)
        self.used -= entry.alloc

    def max_item(self) -> int:
        return self.capacity // 2

    def close(self) -> None:
        self.view.release()
        self.mm.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class HotTier(Tier[HotEntry]):
    """The hot tier: raw records in the arena. Its budget is the arena's; removing an entry frees its
    space and bumps its slot's generation, so a co-located reader's copy of it is refused."""

    def __init__(
        self,
        arena: HotArena,
        enabled: bool,
        policy: EvictionPolicy,
        usage: Usage,
        tenant_of: Callable[[bytes], str],
    ) -> None:
        super().__init__("hot", arena.capacity, policy, usage, tenant_of, lambda e: e.length)
        self.arena = arena
        self.enabled = enabled  # hot_bytes=0: the arena exists (for reservations' layout) but holds nothing

    @property
    def used(self) -> int:
        return self.arena.used

    def max_item(self) -> int:
        return self.arena.max_item() if self.enabled else -1

    def compression_ratio(self) -> float | None:
        return 1.0 if self.index else None  # stored uncompressed

    def remove(self, fk: bytes) -> HotEntry | None:
        entry = super().remove(fk)
        if entry is not None:
            self.arena.release(entry)
        return entry

    def evict(self, fk: bytes) -> HotEntry:
        entry = super().evict(fk)
        self.arena.release(entry)
        return entry

    def locate(self, fk: bytes) -> HotLocation | None:
        """Where fk's record sits, as a hit; None if it is not in the arena."""
        entry = self.index.get(fk)
        if entry is None:
            return None
        self.policy.access(fk)
        self.stats.hits += 1
        header_len = entry.length - entry.meta.raw_len
        return HotLocation(
            entry.slot, entry.offset, entry.length, header_len, self.arena.generation(entry.slot)
        )


def remove_stale_segment(name: str) -> bool:
    """Unlink a segment left behind by a process that died; True if one was there."""
    if not name.startswith("memstore-") or "/" in name:
        return False
    try:
        os.unlink(os.path.join(shm_dir(), name))
        return True
    except FileNotFoundError:
        return False
