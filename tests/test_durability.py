"""What kill -9 alone cannot show: that acknowledgements wait for a synced commit, and that an overwrite
removes the old value from disk before it is acknowledged.

- The LMDB environment of a live store is wrapped in a recorder that logs, in order, every committed
  write transaction (with its keys) and every forced sync; the test logs each acknowledgement. Every
  persistent acknowledgement must come after a commit holding its key and a sync after that commit.
- A cache value written down to cold, then overwritten, then the process killed: the old value must
  never come back (the new one may be lost, as a cache value may).
"""

from __future__ import annotations

import random
import signal
import threading
from typing import Any

from memstore.memory import MemoryStore
from tests.conftest import MiB, open_store, rss_bytes, serve_command, served
from tests.store_process import StoreProcess


class _Txn:
    def __init__(self, txn: Any, log: _Log) -> None:
        self._txn, self._log, self._keys = txn, log, set()

    def __enter__(self) -> _Txn:
        self._txn.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        out = self._txn.__exit__(*exc)
        if exc[0] is None:
            self._log.add(("commit", frozenset(self._keys)))
        return out

    def put(self, key: bytes, value: bytes, **kw: Any) -> Any:
        self._keys.add(bytes(key))
        return self._txn.put(key, value, **kw)

    def delete(self, key: bytes, *args: Any, **kw: Any) -> Any:
        self._keys.add(bytes(key))
        return self._txn.delete(key, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, event: tuple[str, Any]) -> None:
        with self._lock:
            self.events.append(event)


class _Env:
    """An LMDB environment that logs committed write transactions and forced syncs."""

    def __init__(self, env: Any, log: _Log) -> None:
        self._env, self._log = env, log

    def begin(self, *args: Any, write: bool = False, **kw: Any) -> Any:
        txn = self._env.begin(*args, write=write, **kw)
        return _Txn(txn, self._log) if write else txn

    def sync(self, force: bool = False) -> Any:
        out = self._env.sync(force)
        if force:
            self._log.add(("sync", None))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def _unsynced_acks(events: list[tuple[str, Any]], full_key: Any) -> list[Any]:
    """Acknowledged keys with no commit holding them followed by a sync, both before the ack."""
    bad = []
    for i, (kind, key) in enumerate(events):
        if kind != "ack":
            continue
        fk = full_key(key)
        commits = [j for j in range(i) if events[j][0] == "commit" and fk in events[j][1]]
        if not commits or not any(events[j][0] == "sync" for j in range(commits[-1] + 1, i)):
            bad.append(key)
    return bad


def test_every_persistent_acknowledgement_follows_a_synced_commit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log = _Log()
    with open_store(str(tmp_path / "s")) as store:
        store.create_namespace("p", durability="persistent")
        store.create_namespace("c")
        store._cold.env = _Env(store._cold.env, log)  # type: ignore[assignment]
        prefix = store._namespaces.named("p").prefix
        rng = random.Random(0)
        for i in range(40):
            batch = [(b"p%d-%d" % (i, j), rng.randbytes(rng.choice([10, 5000, 70_000]))) for j in range(3)]
            store.put_many(batch, ns="p")
            store.put(b"c%d" % i, rng.randbytes(1000), ns="c")  # cache writes in between, not synced
            for key, _ in batch:
                log.add(("ack", key))
        bad = _unsynced_acks(log.events, lambda key: prefix + key)
        assert sum(kind == "ack" for kind, _ in log.events) == 120
        assert bad == [], f"{len(bad)} acknowledged before a synced commit, e.g. {bad[:3]}"
        # Agent memory is persistent too: each acknowledged record follows a synced commit.
        mem = MemoryStore(store, tenant="default")
        for i in range(10):
            mem.put(("u",), f"k{i}", {"i": i})
            log.add(("ack", i))
        commits_before_ack = []
        for n, (kind, _key) in enumerate(log.events):
            if kind == "ack" and isinstance(_key, int):
                since = [e for e in log.events[:n] if e[0] in ("commit", "sync")]
                commits_before_ack.append(since[-1][0] if since else None)
        assert commits_before_ack == ["sync"] * 10  # the last durable step before each ack is a sync
        mem.close()


def test_an_overwritten_value_never_comes_back_after_kill9(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Cache values reach cold, are overwritten, and the process is killed at once, three rounds: after
    each restart every key holds its new value or nothing, never the old one."""
    budgets = {"hot_bytes": 96 << 10, "warm_bytes": 96 << 10, "cold_bytes": 64 * MiB, "prefault": False}
    path = str(tmp_path / "s")
    rng = random.Random(1)
    keys = [b"k%d" % i for i in range(8)]
    old_values: dict[bytes, set[bytes]] = {k: set() for k in keys}
    for round_ in range(3):
        store = StoreProcess(path, **budgets)
        old = {k: rng.randbytes(20_000) for k in keys}
        store.call("put_many", list(old.items()))
        for i in range(40):  # push them down through hot and warm
            store.call("put", b"filler-%d" % i, rng.randbytes(20_000))
        store.call("flush")
        assert store.call("tiers_of", keys) == ["cold"] * len(keys), round_
        new = {k: rng.randbytes(20_000) for k in keys}
        store.call("put_many", list(new.items()))
        store.kill()
        for k in keys:
            old_values[k].add(old[k])
        check = StoreProcess(path, **budgets)
        got = check.call("get_many", keys)
        check.close()
        for k, v in zip(keys, got, strict=True):
            assert v is None or v == new[k], (
                round_,
                k,
                "an old value came back" if v in old_values[k] else "?",
            )


def test_a_restart_reads_the_keys_not_the_values(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A server restarted on 64 MiB of persistent values maps no more of the file than its keys need:
    its file-backed RSS (/proc) stays within a quarter of the data above a fresh server's. A restart
    that read or checksummed every value would map all 64 MiB."""
    data = tmp_path / "full"
    with open_store(str(data), hot_bytes=0, warm_bytes=0, cold_bytes=256 * MiB) as store:
        store.create_namespace("p", durability="persistent")
        rng = random.Random(2)
        for i in range(0, 256, 16):
            store.put_many([(b"v%d" % j, rng.randbytes(256 << 10)) for j in range(i, i + 16)], ns="p")
    file_rss = {}
    for name in ("fresh", "full"):
        (tmp_path / name).mkdir(exist_ok=True)
        cmd, sock = serve_command(tmp_path / name)
        cmd[cmd.index("--data-dir") + 1] = str(tmp_path / name)
        with served(cmd, sock) as proc:
            file_rss[name] = rss_bytes(proc.pid, ("RssFile",))
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    grown = file_rss["full"] - file_rss["fresh"]
    print(
        f"file-backed RSS: fresh {file_rss['fresh'] / MiB:.1f} MiB, "
        f"with 64 MiB of data {grown / MiB:+.1f} MiB more"
    )
    assert grown < 16 * MiB, file_rss
