"""Reading LMDB's leaf pages straight from the file, for salvage when its B-tree cannot be walked.

A file cut short loses whatever pages lay past its end; when those held the root or inner pages, no
record can be reached through the tree although most leaf pages are intact. This walks the file page
by page instead and yields every (key, value) a leaf page holds, reading a large value from its
overflow pages when they are inside the file. It knows LMDB 0.9's page layout (what py-lmdb bundles):

    page:  pgno u64 | pad u16 | flags u16 | lower u16 | upper u16 | node offsets u16 ... (from 16)
    node:  data size lo u16 | hi u16 | flags u16 | key size u16 | key | value, or an overflow pgno u64

Pages freed by later commits still hold what they held, so a key may come back with an older value,
or after it was deleted: every value must still pass memstore's own record checks, and the caller
decides what to do with keys found more than once.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator

HEADER = 16
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2, P_SUBP = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
_KINDS = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP
_PAGE = struct.Struct("<QHHHH")
_NODE = struct.Struct("<HHHH")


def leaf_entries(path: str, page_size: int) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of every leaf page in the file, the two meta pages skipped."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for pgno in range(2, len(m) // page_size):
            yield from _page(m, pgno, page_size)


def _page(m: mmap.mmap, pgno: int, page_size: int) -> Iterator[tuple[bytes, bytes]]:
    base = pgno * page_size
    stored, _pad, flags, lower, upper = _PAGE.unpack_from(m, base)
    if stored != pgno or flags & _KINDS != P_LEAF or not HEADER <= lower <= upper <= page_size:
        return
    end = base + page_size
    for i in range((lower - HEADER) // 2):
        (at,) = struct.unpack_from("<H", m, base + HEADER + 2 * i)
        if at < upper or at + _NODE.size > page_size:
            continue
        lo, hi, node_flags, key_size = _NODE.unpack_from(m, base + at)
        size = lo | hi << 16
        key_at = base + at + _NODE.size
        if node_flags & (F_SUBDATA | F_DUPDATA) or key_at + key_size > end:
            continue
        key = m[key_at : key_at + key_size]
        value_at = key_at + key_size
        if node_flags & F_BIGDATA:
            if value_at + 8 > end:
                continue
            (first,) = struct.unpack_from("<Q", m, value_at)
            start = first * page_size
            if start + HEADER + size > len(m):
                continue  # its overflow pages lay past the end of the file
            over, _pad, over_flags, _lo, _hi = _PAGE.unpack_from(m, start)
            if over != first or over_flags & _KINDS != P_OVERFLOW:
                continue
            yield key, m[start + HEADER : start + HEADER + size]
        elif value_at + size <= end:
            yield key, m[value_at : value_at + size]
