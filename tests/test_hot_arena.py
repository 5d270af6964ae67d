"""The shared-memory arena: allocator, slot generations, permissions, and cleanup after a crash."""

from __future__ import annotations

import itertools
import os
import random
import signal
import stat
import struct
import subprocess
import sys

import pytest

from memstore import StoreLockedError
from memstore.hot import ARENA_HEADER, SLOT, HotArena, shm_dir
from memstore.record import RecordMeta, pack_header, parse_record
from tests.conftest import MiB, open_store


def _put(arena: HotArena, payload: bytes):  # type: ignore[no-untyped-def]
    meta = RecordMeta(0, len(payload))
    return arena.store(pack_header(meta, payload), memoryview(payload), meta, clean=False)


def test_allocator_reuses_and_coalesces(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    arena = HotArena(str(tmp_path), 1 * MiB, prefault=False)
    try:
        live = []
        for _ in range(2000):
            if live and rng.random() < 0.45:
                arena.release(live.pop(rng.randrange(len(live))))
            else:
                e = _put(arena, rng.randbytes(rng.randrange(1, 40_000)))
                if e is not None:
                    live.append(e)
            spans = sorted((e.offset, e.offset + e.alloc) for e in live)
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "overlapping blocks"
            assert arena.used == sum(e.alloc for e in live)
        for e in live:
            arena.release(e)
        assert arena.used == 0
        big = _put(arena, b"\1" * (arena.capacity - 64))  # all free space merged back into one block
        assert big is not None
    finally:
        arena.close()


def test_slot_table_describes_records_for_other_readers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    arena = HotArena(str(tmp_path), 1 * MiB, prefault=False)
    try:
        e = _put(arena, b"hello arena")
        # Read it the way another process would: only the segment file and the slot number.
        with open(arena.path, "rb") as f:
            seg = f.read()
        magic, _, slots, table, _, _, pid = ARENA_HEADER.unpack_from(seg, 0)
        assert magic == b"MSARENA1" and pid == os.getpid() and e.slot < slots
        gen, off, length, _hlen, state = SLOT.unpack_from(seg, table + e.slot * SLOT.size)
        assert gen % 2 == 0 and state == 1
        _meta, payload = parse_record(seg[off : off + length])
        assert bytes(payload) == b"hello arena"
        before = arena.generation(e.slot)
        arena.release(e)
        after = arena.generation(e.slot)
        assert after > before and after % 2 == 0  # a reader holding the old generation is refused
        assert struct.unpack_from("<Q", arena.mm, table + e.slot * SLOT.size)[0] == after
        assert stat.S_IMODE(os.stat(arena.path).st_mode) == 0o600
    finally:
        arena.close()
    assert not os.path.exists(arena.path)


def test_dead_owner_segment_is_removed_and_path_is_exclusive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s")
    code = (
        "import sys, time; from memstore import TieredStore;"
        f"s = TieredStore({path!r}, hot_bytes=1<<20, cold_bytes=8<<20, prefault=False);"
        "print(s.stats()['hot_segment'], flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    name = child.stdout.readline().strip()
    assert os.path.exists(os.path.join(shm_dir(), name))
    with pytest.raises(StoreLockedError):
        open_store(path)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert os.path.exists(os.path.join(shm_dir(), name))  # left behind by the dead process
    with open_store(path) as s:
        assert not os.path.exists(os.path.join(shm_dir(), name))
        s.put(b"k", b"v")
        assert s.get(b"k") == b"v"


def test_pinned_keys_are_never_evicted(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    with open_store(str(tmp_path / "s"), hot_bytes=256 << 10, warm_bytes=256 << 10, cold_bytes=1 * MiB) as s:
        pinned = {b"pin%d" % i: rng.randbytes(20_000) for i in range(4)}
        s.put_many(pinned)
        for k in pinned:
            assert s.pin(k)
        assert not s.pin(b"absent")
        for i in range(300):
            s.put(b"f%d" % i, rng.randbytes(20_000))
        hot_keys = set(s.hot.index)
        for k, v in pinned.items():
            assert b"\x07default" + k in hot_keys  # not even demoted
            assert s.get(k) == v
        assert s.stats()["cold"]["evictions"] > 0
        assert s.unpin(b"pin0") and not s.unpin(b"pin0")


def test_close_writes_everything_down_and_reopen_serves_it(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    values = {b"k%d" % i: rng.randbytes(rng.randrange(10, 30_000)) for i in range(60)}
    path = str(tmp_path / "s")
    with open_store(path, hot_bytes=256 << 10, warm_bytes=512 << 10, cold_bytes=16 * MiB) as s:
        s.put_many(values)
        st = s.stats()
        assert st["hot"]["items"] > 0 and st["warm"]["items"] > 0
    with open_store(path, hot_bytes=256 << 10, warm_bytes=512 << 10, cold_bytes=16 * MiB) as s:
        assert s.stats()["cold"]["items"] == len(values)
        for k, v in values.items():
            assert s.get(k) == v


def _resident(path: str) -> int:
    """Bytes of this process's mapping of ``path`` that are in memory (/proc/self/smaps)."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(" " + path):
            return next(int(ln.split()[1]) * 1024 for ln in lines[i + 1 :] if ln.startswith("Rss:"))
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux's /proc")
def test_a_prefaulted_arena_is_in_memory_before_its_first_put(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without it, every first write to a page of the arena takes a fault: a put into a fresh server
    ran at a fraction of a memcpy (on Python 3.11, whose mmap does not name MADV_POPULATE_WRITE)."""
    from memstore.hot import HotArena

    size = 16 << 20
    lazy = HotArena(str(tmp_path / "lazy"), size, prefault=False)
    eager = HotArena(str(tmp_path / "eager"), size, prefault=True)
    try:
        assert _resident(lazy.path) < size // 4
        major, minor = os.uname().release.split(".")[:2]
        if (int(major), int("".join(c for c in minor if c.isdigit()) or 0)) >= (5, 14):
            assert _resident(eager.path) >= size
    finally:
        lazy.close()
        eager.close()
