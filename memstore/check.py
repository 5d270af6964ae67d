"""Checking a data dir and salvaging what is good in a damaged one (``memstore check`` / ``salvage``).

A data dir's cold tier is one LMDB file. LMDB trusts its file: a file cut short (a full disk during
a copy, a truncated backup) makes a read past its end a SIGBUS, and bytes flipped inside records go
unnoticed by LMDB itself. So:

- ``file_problem(dir)`` is what ``TieredStore`` asks before opening: a file shorter than its own meta
  page says, or one LMDB cannot open, is a ``DamagedStoreError`` naming the file and what to do.
- ``check(dir)`` reads every record (of a zero-padded copy when the file is short, so nothing reads
  past an end) and verifies each header and checksum.
- ``salvage(dir, new_dir)`` writes every record that passes into a new store, with its namespaces.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lmdb

from memstore.errors import CorruptRecordError, DamagedStoreError
from memstore.migrate import namespace_options
from memstore.record import parse_record
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

    @property
    def damaged(self) -> bool:
        return bool(self.problem or self.bad or self.unreadable)


@contextmanager
def _readable(data_dir: str, problem: str | None) -> Iterator[lmdb.Environment]:
    """The data dir's LMDB, read-only; a short file is read through a copy padded with zeros."""
    src = os.path.join(data_dir, DATA_FILE)
    with tempfile.TemporaryDirectory(prefix="memstore-check-") as tmp:
        where = os.path.dirname(src)
        if problem is not None and os.path.exists(src):
            shutil.copyfile(src, os.path.join(tmp, "data.mdb"))
            size, needed = _needed_size(src)
            if size < needed:
                os.truncate(os.path.join(tmp, "data.mdb"), needed)  # a sparse tail of zeros
            where = tmp
        env = lmdb.open(where, readonly=True, lock=False, subdir=True, max_dbs=4)
        try:
            yield env
        finally:
            env.close()


def _namespaces(env: lmdb.Environment) -> dict[str, dict[str, Any]]:
    meta = env.open_db(b"meta", create=False)
    with env.begin(db=meta) as txn:
        return namespace_options(txn, meta)


def scan(
    data_dir: str, on_record: Callable[[bytes, bytes], None] | None = None, progress: bool = False
) -> Report:
    """Verify every record; ``on_record(key, record)`` is called for each one that passes."""
    report = Report(data_dir, file_problem(data_dir))
    if not os.path.exists(os.path.join(data_dir, DATA_FILE)):
        report.problem = f"{os.path.join(data_dir, DATA_FILE)} does not exist"
        return report
    try:
        with _readable(data_dir, report.problem) as env:
            report.namespaces = _namespaces(env)
            records = env.open_db(b"records", create=False)
            with env.begin(db=records) as txn:
                total = txn.stat(records)["entries"]
                bar = _bar(total, progress)
                try:
                    for key, value in txn.cursor():
                        bar(1)
                        try:
                            parse_record(value)
                        except CorruptRecordError:
                            report.bad.append(bytes(key))
                            continue
                        report.good += 1
                        if on_record is not None:
                            on_record(bytes(key), bytes(value))
                except lmdb.Error as exc:
                    report.unreadable = (
                        f"the record index breaks off after {report.good + len(report.bad)} records: {exc}"
                    )
                bar(0, close=True)
    except lmdb.Error as exc:
        report.unreadable = f"LMDB cannot read the file: {exc}"
    return report


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
    """Copy every record that passes its checks, with its namespace, into a new store at ``new_dir``."""
    from memstore.store import TieredStore

    if os.path.exists(os.path.join(new_dir, DATA_FILE)):
        raise DamagedStoreError(f"{new_dir} already holds a store: salvage into a new directory")
    with _readable(data_dir, file_problem(data_dir)) as env:
        namespaces = _namespaces(env)
    map_size = max(64 << 20, 2 * os.path.getsize(os.path.join(data_dir, DATA_FILE)))
    store = TieredStore(new_dir, hot_bytes=0, warm_bytes=0, cold_bytes=map_size, prefault=False)
    try:
        by_prefix = {}
        for name, opts in namespaces.items():
            store.create_namespace(name, **opts)
            by_prefix[key_prefix(name)] = name
        writer = store._cold  # records go in as they are: their bytes, header and checksum unchanged

        def copy(key: bytes, record: bytes) -> None:
            if key[: 1 + key[0]] in by_prefix:
                writer.submit_put(key, record, durable=False)

        report = scan(data_dir, copy, progress)
        writer.flush()
    finally:
        store.close()
    return report
