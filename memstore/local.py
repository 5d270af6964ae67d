"""The client side of the local path: copying records straight out of the server's arena.

Trust model: the segment is created with mode 0600, so only processes of the server's user can map
it; co-located clients of the same user (and tenant) are trusted not to scribble on it. Even so,
nothing unchecked is accepted: a copy counts only if the slot's generation was the located one before
and after the copy (the server bumps it whenever the slot is freed or reused), and the copied bytes
match the record's checksum. A failed check is retried through the server, then answered over gRPC.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from memstore.errors import CorruptRecordError, MemstoreError
from memstore.hot import ARENA_HEADER, ARENA_MAGIC, ARENA_VERSION, SLOT_SIZE
from memstore.record import RecordMeta, split_record, verify_payload

_GEN = struct.Struct("<Q")


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


class LocalUnavailable(MemstoreError):
    """The server's arena cannot be mapped from here (another host, another user, or no segment)."""


class LocalArena:
    """A mapping of the server's arena segment."""

    def __init__(self, path: str, size: int, *, server_boot_id: str, server_pid: int) -> None:
        if not server_boot_id or server_boot_id != boot_id():
            raise LocalUnavailable("the server runs on another host (boot ids differ)")
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise LocalUnavailable(f"cannot open the arena segment {path}: {exc}") from None
        try:
            if os.fstat(fd).st_size != size:
                raise LocalUnavailable("the arena segment has another size than the server announced")
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        magic, version, self.slot_count, self.slot_table, _, _, pid = ARENA_HEADER.unpack_from(self.mm, 0)
        if magic != ARENA_MAGIC or version != ARENA_VERSION or pid != server_pid:
            self.mm.close()
            raise LocalUnavailable("the segment is not this server's arena")
        self.view = memoryview(self.mm)
        self.path = path
        # Test seam: called with the slot between the first generation check and the copy.
        self.before_copy: Callable[[int], None] | None = None
        self.pinned = False  # registered with CUDA as pinned host memory (memstore.gpu)
        self.on_close: list[Callable[[], object]] = []

    def generation(self, slot: int) -> int:
        return int(_GEN.unpack_from(self.mm, self.slot_table + slot * SLOT_SIZE)[0])

    def copy(
        self, slot: int, offset: int, length: int, generation: int, out: memoryview | None = None
    ) -> tuple[RecordMeta, bytes | bytearray | memoryview] | None:
        """Copy one record's value out; None if the slot changed meanwhile or the bytes fail the checksum.

        ``out`` is an optional flat writable byte view (see ``writable_bytes``) of at least the value's
        size; without it a new buffer is made. Returns the record's metadata and what holds the value.
        """
        if slot >= self.slot_count or offset + length > len(self.view) or self.generation(slot) != generation:
            return None
        try:
            meta, payload, seed, digest = split_record(self.view[offset : offset + length])
        except CorruptRecordError:
            return None  # a slot being rewritten: the generation check below would fail too
        if self.before_copy is not None:
            self.before_copy(slot)
        dst: bytes | bytearray | memoryview
        if out is None:  # bytes for bytes values, a bytearray to wrap as an array: one copy either way
            dst = bytes(payload) if meta.dtype is None else bytearray(payload)
        else:
            if len(out) < meta.raw_len:
                raise ValueError(f"the buffer holds {len(out)} bytes, the value has {meta.raw_len}")
            dst = out[: meta.raw_len]
            dst[:] = payload
        if self.generation(slot) != generation:
            return None
        try:
            verify_payload(dst, seed, digest)
        except CorruptRecordError:
            return None
        return meta, dst

    def check(self, slot: int, offset: int, length: int, generation: int) -> RecordMeta | None:
        """Verify a record in place (after a copy that read it directly): generation and checksum."""
        if slot >= self.slot_count or offset + length > len(self.view) or self.generation(slot) != generation:
            return None
        try:
            meta, payload, seed, digest = split_record(self.view[offset : offset + length])
            verify_payload(payload, seed, digest)
        except CorruptRecordError:
            return None
        return meta if self.generation(slot) == generation else None

    def header_meta(self, slot: int, offset: int, length: int, generation: int) -> RecordMeta | None:
        """A record's metadata after its header checks, without hashing the payload."""
        if slot >= self.slot_count or offset + length > len(self.view) or self.generation(slot) != generation:
            return None
        try:
            meta, _, _, _ = split_record(self.view[offset : offset + length])
        except CorruptRecordError:
            return None
        return meta

    def write(self, offset: int, data: memoryview) -> None:
        self.view[offset : offset + len(data)] = data

    def close(self) -> None:
        for fn in self.on_close:
            fn()
        self.view.release()
        self.mm.close()


def writable_bytes(out: Any) -> memoryview:
    """A flat byte view of a caller's buffer: bytearray, numpy array, or a CPU torch tensor."""
    if hasattr(out, "numpy") and hasattr(out, "is_cuda"):  # torch.Tensor on the CPU
        out = out.numpy()
    if isinstance(out, np.ndarray):
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("output arrays must be C-contiguous and writable")
        return memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    view = memoryview(out)
    if view.readonly:
        raise ValueError("output buffers must be writable")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
