"""Checking a data dir and salvaging what is good in a damaged one (``memstore check`` / ``salvage``).

A data dir's cold tier is one LMDB file. LMDB trusts its file: a file cut short (a full disk during
a copy, a truncated backup) makes a read past its end a SIGBUS, and bytes flipped inside records go
unnoticed by LMDB itself. So:

- ``file_problem(dir)`` is what ``TieredStore`` asks before opening: a file shorter than its own meta
  page says, or one LMDB cannot open, is a ``DamagedStoreError`` naming the file and what to do.
- ``scan(dir)`` (``memstore check``) verifies each record's header and checksum: through the B-tree
  when the file is whole, from its leaf pages (``pagescan``) when it is not, so LMDB never reads a
  damaged file.
- ``salvage(dir, new_dir)`` writes every record that passes into a new store, with its namespaces.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lmdb
import xxhash

from memstore import pagescan
from memstore.errors import CorruptRecordError, DamagedStoreError
from memstore.migrate import namespace_options
from memstore.record import MAGIC, parse_record
from memstore.tenancy import key_prefix

DATA_FILE = os.path.join("cold", "data.mdb")


def _needed_size(path: str) -> tuple[int, int]:
    """(bytes the file has, bytes its last committed page needs); opening reads only the meta pages."""
    size = os.path.getsize(path)
    env = lmdb.open(os.path.dirname(path), readonly=True, lock=False, subdir=True, max_dbs=4)
    try:
        return size, (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    finally:
        env.close()


def file_problem(data_dir: str) -> str | None:
    """Why the data dir's LMDB file cannot be opened safely, or None (also for a new data dir)."""
    path = os.path.join(data_dir, DATA_FILE)
    if not os.path.exists(path):
        return None
    try:
        size, needed = _needed_size(path)
    except lmdb.Error as exc:
        return f"{path} is not a readable LMDB file ({exc})"
    if size < needed:
        return f"{path} is {size} bytes, shorter than the {needed} its last commit needs (it was truncated)"
    return None


def check_openable(data_dir: str) -> None:
    problem = file_problem(data_dir)
    if problem is not None:
        raise DamagedStoreError(
            f"damaged data dir: {problem}; run `memstore check {data_dir}` to see what is intact and "
            f"`memstore salvage {data_dir} NEW_DIR` to copy it out"
        )


@dataclass
class Report:
    path: str
    problem: str | None = None
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    good: int = 0
    bad: list[bytes] = field(default_factory=list)
    unreadable: str | None = None  # the B-tree could not be walked to its end
    from_pages: bool = False  # read from the leaf pages, not through the B-tree
    ambiguous: int = 0  # keys found in leaf pages with two different passing values, left out

    @property
    def damaged(self) -> bool:
        return bool(self.problem or self.bad or self.unreadable)


def scan(
    data_dir: str,
    on_record: Callable[[bytes, bytes], None] | None = None,
    progress: bool = False,
    on_namespaces: Callable[[dict[str, dict[str, Any]]], None] | None = None,
) -> Report:
    """Verify every record; ``on_record(key, record)`` is called for each one that passes.

    A whole file is read through its B-tree. A damaged one (cut short, meta pages unreadable) is never
    handed to LMDB, which trusts its file and aborts the process on a page it does not expect: its leaf
    pages are read straight from the file instead (``pagescan``). There a key may appear more than once
    (pages freed by later commits keep what they held): a key with one passing value counts, one with
    two different passing values is left out as ambiguous, and a deleted record may come back.
    ``on_namespaces(options by name)`` is called once, before the first ``on_record``."""
    path = os.path.join(data_dir, DATA_FILE)
    report = Report(data_dir, file_problem(data_dir))
    if not os.path.exists(path):
        report.problem = f"{path} does not exist"
    elif report.problem is not None:
        report.from_pages = True
        _scan_pages(path, report, on_record, progress, on_namespaces)
    else:
        _scan_tree(path, report, on_record, progress, on_namespaces)
    return report


Visit = Callable[[bytes, bytes], None] | None
Namespaces = Callable[[dict[str, dict[str, Any]]], None] | None


def _scan_tree(
    path: str, report: Report, on_record: Visit, progress: bool, on_namespaces: Namespaces
) -> None:
    try:
        env = lmdb.open(os.path.dirname(path), readonly=True, lock=False, subdir=True, max_dbs=4)
    except lmdb.Error as exc:
        report.unreadable = f"LMDB cannot read the file: {exc}"
        return
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(db=meta) as txn:
            report.namespaces = namespace_options(txn, meta)
        if on_namespaces is not None:
            on_namespaces(report.namespaces)
        records = env.open_db(b"records", create=False)
        with env.begin(db=records) as txn:
            bar = _bar(txn.stat(records)["entries"], progress)
            try:
                for key, value in txn.cursor():
                    bar(1)
                    _visit(bytes(key), value, report, on_record)
            except lmdb.Error as exc:
                report.unreadable = (
                    f"the record index breaks off after {report.good + len(report.bad)} records: {exc}"
                )
            bar(0, close=True)
    except lmdb.Error as exc:
        report.unreadable = f"LMDB cannot read the file: {exc}"
    finally:
        env.close()


def _visit(key: bytes, value: Any, report: Report, on_record: Visit) -> None:
    try:
        parse_record(value)
    except CorruptRecordError:
        report.bad.append(key)
        return
    report.good += 1
    if on_record is not None:
        on_record(key, bytes(value))


def _scan_pages(
    path: str, report: Report, on_record: Visit, progress: bool, on_namespaces: Namespaces
) -> None:
    """Two passes over the leaf pages: namespaces and each key's passing values, then the records."""
    page_size = _page_size(path)
    digests: dict[bytes, set[int]] = {}
    bad: set[bytes] = set()
    for key, value in pagescan.leaf_entries(path, page_size):
        k = bytes(key)
        if k[:3] == b"ns:":
            with contextlib.suppress(ValueError):
                report.namespaces[k[3:].decode()] = json.loads(bytes(value))
        if not k or len(k) < 1 + k[0] or value[:2] != MAGIC:
            continue  # not a record (the meta database's entries, LMDB's own)
        try:
            parse_record(value)
        except CorruptRecordError:
            bad.add(k)
            continue
        digests.setdefault(k, set()).add(xxhash.xxh3_64_intdigest(value))
    report.bad = sorted(bad - digests.keys())
    report.ambiguous = sum(len(d) > 1 for d in digests.values())
    if on_namespaces is not None:
        on_namespaces(report.namespaces)
    bar = _bar(len(digests) - report.ambiguous, progress)
    for key, value in pagescan.leaf_entries(path, page_size):
        k = bytes(key)
        if len(digests.get(k, ())) == 1:
            del digests[k]  # once: a key on a freed page as well as a live one, with the same value
            bar(1)
            report.good += 1
            if on_record is not None:
                on_record(k, bytes(value))
    bar(0, close=True)


def _page_size(path: str) -> int:
    try:
        env = lmdb.open(os.path.dirname(path), readonly=True, lock=False, subdir=True, max_dbs=4)
    except lmdb.Error:
        return mmap.PAGESIZE  # the meta pages are unreadable: LMDB's default, the OS page size
    try:
        return int(env.stat()["psize"])
    finally:
        env.close()


def _bar(total: int, enabled: bool) -> Callable[..., None]:
    if not enabled:
        return lambda n, close=False: None
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return lambda n, close=False: None
    bar = tqdm(total=total, unit="rec", file=sys.stderr)

    def step(n: int, close: bool = False) -> None:
        bar.update(n)
        if close:
            bar.close()

    return step


def salvage(data_dir: str, new_dir: str, progress: bool = False) -> Report:
    """Copy every record that passes its checks (as ``scan`` finds them), with its namespace, into a new
    store at ``new_dir``."""
    from memstore.store import TieredStore

    if os.path.exists(os.path.join(new_dir, DATA_FILE)):
        raise DamagedStoreError(f"{new_dir} already holds a store: salvage into a new directory")
    map_size = max(64 << 20, 2 * os.path.getsize(os.path.join(data_dir, DATA_FILE)))
    store = TieredStore(new_dir, hot_bytes=0, warm_bytes=0, cold_bytes=map_size, prefault=False)
    writer = store._cold  # records go in as they are: their bytes, header and checksum unchanged
    by_prefix: set[bytes] = set()

    def create(namespaces: dict[str, dict[str, Any]]) -> None:
        for name, opts in namespaces.items():
            store.create_namespace(name, **opts)
            by_prefix.add(key_prefix(name))

    def copy(key: bytes, record: bytes) -> None:
        if key[: 1 + key[0]] in by_prefix:
            writer.submit_put(key, record, durable=False)

    try:
        report = scan(data_dir, copy, progress, on_namespaces=create)
        writer.flush()
    finally:
        store.close()
    return report
