"""A store's directory: one process holds it at a time, it names the arena its holder created (so the
next holder can remove a dead one's), and it records the cold tier's map size between opens.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from typing import IO

from memstore import settings
from memstore.errors import ColdResizeError, StoreLockedError
from memstore.hot import remove_stale_segment

log = logging.getLogger("memstore.store")


SEGMENT_FILE = "hot.segment"  # names the arena the data dir's holder created


def named_segment(path: str) -> str | None:
    """The arena segment a data dir's last holder created (it may be dead), or None."""
    try:
        with open(os.path.join(path, SEGMENT_FILE)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


class DataDir:
    """The directory of a store, held with an exclusive lock (``LOCK`` names the holder's pid)."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, exist_ok=True)
        self._lockfile: IO[str] = open(os.path.join(path, "LOCK"), "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.seek(0)
            holder = self._lockfile.read().strip()
            self._lockfile.close()
            pid = int(holder) if holder.isdigit() else None
            by = f" (pid {pid})" if pid else ""
            raise StoreLockedError(f"{path} is open in another process{by}", pid) from None
        self._lockfile.seek(0)
        self._lockfile.truncate()
        self._lockfile.write(str(os.getpid()))  # who holds it, for the error a second opener gets
        self._lockfile.flush()
        self._owner_file = os.path.join(path, SEGMENT_FILE)

    def remove_dead_segment(self) -> None:
        """We hold the lock, so a segment named in the owner file belongs to a dead process."""
        name = named_segment(self.path)
        if name is not None:
            remove_stale_segment(name)

    def name_segment(self, name: str) -> None:
        with open(self._owner_file, "w") as f:
            f.write(name)

    def forget_segment(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._owner_file)

    def recorded_map_size(self) -> int | None:
        """The cold tier's map size this store was last opened with (None for a new store)."""
        try:
            with open(os.path.join(self.path, "cold_bytes")) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def settle_map_size(self, size: int, recorded: int | None, pages: int, used: int, budget: int) -> None:
        """Record the cold map size of a new store, or a new ``cold_bytes`` for an existing one: growing
        always works (LMDB maps more of the file); shrinking only while LMDB's ``pages`` (bytes of its
        file in use) and the records (``used`` of ``budget``) still fit."""
        if recorded is not None and size < recorded:
            if pages > size:
                raise ColdResizeError(
                    f"cold_bytes {size:,} is too small for {self.path}: its LMDB file already spans "
                    f"{pages:,} bytes and LMDB never shrinks a file; give at least that, or copy the store "
                    "into a new data dir with memstore salvage, which writes it compactly"
                )
            if used > budget:
                need = math.ceil((used + settings.COLD_RESERVED) / settings.COLD_FILL)
                raise ColdResizeError(
                    f"cold_bytes {size:,} is too small for {self.path}: its cold records take "
                    f"{used:,} bytes and may fill {settings.COLD_FILL:.0%} of cold_bytes; give "
                    f"at least {need:,} (it was {recorded:,}) or delete records first"
                )
        if recorded is not None:
            log.info("cold tier of %s: map size %d -> %d bytes", self.path, recorded, size)
        with open(os.path.join(self.path, "cold_bytes"), "w") as f:
            f.write(str(size))

    def release(self) -> None:
        fcntl.flock(self._lockfile, fcntl.LOCK_UN)
        self._lockfile.close()
