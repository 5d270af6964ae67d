"""Bringing a data dir written by an older memstore to the current layout, once, when it is opened.

Layout 1 named a tenant's namespaces ``t.TENANT.NAME`` (a name the default tenant could also pick) and
kept every tenant's agent memory in one namespace ``memory``, with the tenant in each key
(``r/TENANT/...``, ``h/TENANT/...``). Layout 2 qualifies names as ``memstore.tenancy`` says:
``TENANT#NAME``, and each tenant's memory in its own internal namespace ``TENANT!memory``.

The migration runs in one LMDB write transaction (all of it or nothing) and marks the dir with its
layout, so it never runs twice. Records keep their bytes: only their keys' namespace prefix changes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import lmdb

from memstore import tenancy

LAYOUT = 2
LAYOUT_KEY = b"layout"
log = logging.getLogger("memstore.migrate")
_MEMORY_KEY = re.compile(rf"^[rh]/([{tenancy.TENANT_CHARS}]{{1,{tenancy.MAX_TENANT_CHARS}}})/".encode())
prefix = tenancy.key_prefix


def namespace_options(txn: lmdb.Transaction, meta: Any) -> dict[str, dict[str, Any]]:
    """Every namespace's stored options (``ns:NAME`` entries of the meta database)."""
    return {
        bytes(k)[3:].decode(): json.loads(bytes(v))
        for k, v in txn.cursor(db=meta)
        if bytes(k).startswith(b"ns:")
    }


def _keys_under(txn: lmdb.Transaction, db: Any, start: bytes) -> Iterator[bytes]:
    cursor = txn.cursor(db=db)
    if not cursor.set_range(start):
        return
    for key in cursor.iternext(keys=True, values=False):
        key = bytes(key)
        if not key.startswith(start):
            return
        yield key


def _move(txn: lmdb.Transaction, db: Any, old: bytes, new: bytes) -> None:
    value = txn.get(old, db=db)
    assert value is not None
    txn.put(new, value, db=db)
    txn.delete(old, db=db)


def migrate(env: lmdb.Environment, records: Any, meta: Any, lengths: Any) -> None:
    """Migrate the environment to ``LAYOUT`` if it is older; a new, empty one is only marked. Renamed
    records leave the ``lengths`` index behind: it is emptied, and the cold tier rebuilds it."""
    with env.begin(write=True) as txn:
        if txn.get(LAYOUT_KEY, db=meta) is not None:
            return
        names = namespace_options(txn, meta)
        moved = 0
        for name, opts in names.items():
            new = tenancy.legacy_rename(name)
            if new is None or new in names:
                continue
            old_p, new_p = prefix(name), prefix(new)
            for key in list(_keys_under(txn, records, old_p)):
                _move(txn, records, key, new_p + key[len(old_p) :])
                moved += 1
            txn.put(b"ns:" + new.encode(), json.dumps(opts).encode(), db=meta)
            txn.delete(b"ns:" + name.encode(), db=meta)
            log.info("migrated namespace %r to %r", name, new)
        if tenancy.MEMORY in names:
            old_p = prefix(tenancy.MEMORY)
            left = False
            created: set[str] = set()
            for key in list(_keys_under(txn, records, old_p)):
                match = _MEMORY_KEY.match(key[len(old_p) :])
                if match is None:
                    left = True  # not agent memory: stays in the default tenant's namespace "memory"
                    continue
                target = tenancy.qualify(match[1].decode(), tenancy.MEMORY, internal=True)
                if target not in created:
                    txn.put(b"ns:" + target.encode(), json.dumps(names[tenancy.MEMORY]).encode(), db=meta)
                    created.add(target)
                _move(txn, records, key, prefix(target) + key[len(old_p) :])
                moved += 1
            if not left:
                txn.delete(b"ns:" + tenancy.MEMORY.encode(), db=meta)
            if created:
                log.info("migrated agent memory to the tenants' own namespaces %s", sorted(created))
        if moved:
            txn.drop(lengths, delete=False)
        txn.put(LAYOUT_KEY, str(LAYOUT).encode(), db=meta)
    env.sync(True)
    if moved:
        log.info("data dir migrated to layout %d: %d records renamed", LAYOUT, moved)
