"""The pool tier: records of shared namespaces in Redis (one server, or a Redis Cluster), below cold and
shared by every memstore server connected to it.

- **Publish**: a put into a shared namespace is queued here and written in the background, encoded with
  the namespace's cold codec and carrying memstore's own record header and checksum, under a TTL
  (Redis's ``maxmemory`` with an LRU policy bounds the pool's memory; see README). A full queue drops
  the oldest publication (counted): the put itself never waits for the pool.
- **Fetch**: a miss in every local tier asks the pool, one pipelined round trip for a whole batch
  (redis-py's cluster pipeline sends each node its keys). A record that fails its checks is a miss,
  counted, and deleted from the pool.
- **Faults**: every call has a short socket timeout; an error opens a breaker for ``BACKOFF`` seconds
  in which the pool is skipped (fetches are misses, publications wait in the queue). Nothing the pool
  does fails a put or a get, and redis-py reconnects by itself.
- **Keys**: ``memstore:`` + the record's full key, which holds its namespace's qualified name and so its
  tenant: no two tenants or namespaces share a pool key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from memstore.movement import each, encode_for
from memstore.record import RecordMeta

log = logging.getLogger("memstore.pool")
KEY_PREFIX = b"memstore:"
DEFAULT_TTL = 3600.0  # seconds a published record lives in the pool unless published again
BACKOFF = 1.0  # seconds the pool is skipped after an error
SCHEMES = ("redis", "rediss", "redis-cluster", "rediss-cluster")


class PoolAddress(NamedTuple):
    cluster: bool
    tls: bool
    user: str | None
    password: str | None
    nodes: list[tuple[str, int]]


def parse_url(url: str) -> PoolAddress:
    """``redis://HOST:PORT`` (one server) or ``redis-cluster://HOST:PORT[,HOST:PORT...]`` (seed nodes of a
    cluster); ``rediss`` variants use TLS; ``USER:PASSWORD@`` before the hosts. A ValueError names the
    URL and what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or "://" not in url:
        raise ValueError(
            f"{url!r}: not redis://HOST:PORT or redis-cluster://HOST:PORT[,HOST:PORT...] "
            "(rediss:// and rediss-cluster:// for TLS)"
        )
    nodes = []
    for host in parts.netloc.rsplit("@", 1)[-1].split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"{url}: pool address {host!r} is not HOST:PORT")
        nodes.append((name.strip("[]"), int(port)))
    cluster = parts.scheme.endswith("-cluster")
    if not cluster and len(nodes) != 1:
        raise ValueError(
            f"{url}: redis:// names one server; use redis-cluster:// for seed nodes of a cluster"
        )
    return PoolAddress(
        cluster,
        parts.scheme.startswith("rediss"),
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        nodes,
    )


def connect(url: str, timeout: float, password_file: str | None = None, ca: str | None = None) -> Any:
    """A redis-py client for the pool at ``url`` (``parse_url``); the password may come from
    ``password_file`` instead of the URL; ``ca`` is the PEM bundle that signs a TLS pool's certificate."""
    import redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    address = parse_url(url)
    password = address.password
    if password_file:
        with open(password_file) as f:
            password = f.read().strip()
    common: dict[str, Any] = {
        "username": address.user,
        "password": password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "ssl": address.tls,
    }
    if address.tls and ca:
        common["ssl_ca_certs"] = ca
    if address.cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in address.nodes],  # type: ignore[no-untyped-call]
            require_full_coverage=False,  # a slot whose primary is down is a miss, the rest still serve
            retry=Retry(NoBackoff(), 1),
            **common,
        )
    ((host, port),) = address.nodes
    return redis.Redis(host=host, port=port, **common)


def _made(make: Callable[[], bytes] | None) -> bytes | None:
    """A queued record encoded (on the codec workers), or None for a removal or a failed encoding."""
    if make is None:
        return None
    try:
        return make()
    except Exception:
        log.exception("could not encode a record for the pool")
        return None


class Pool:
    """A shared record pool in Redis; safe to use from any thread."""

    def __init__(
        self,
        connector: Callable[[], Any],
        *,
        ttl: float = DEFAULT_TTL,
        queue_bytes: int = 64 << 20,
        batch: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis

        self._connector = connector  # made on first use, and again after it failed: a pool that is
        self._client: Any = None  # down when the server starts is only a miss until it comes up
        self._client_lock = threading.Lock()
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
        )
        self.ttl = ttl
        self._queue_bytes = queue_bytes
        self._batch = batch
        self._clock = clock
        self._queue: deque[tuple[bytes, Callable[[], bytes] | None, int]] = deque()  # key, record maker, size
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._busy = False  # a batch taken off the queue is being written
        self._down_until = 0.0  # the whole pool is skipped until then (one server, or no connection)
        self._node_down: dict[str | None, float] = {}  # a cluster node is skipped until then
        self._refresh = False
        self.counts = {
            "published": 0,
            "publish_dropped": 0,
            "hits": 0,
            "misses": 0,
            "errors": 0,
            "corrupt": 0,
            "bytes_published": 0,
            "bytes_fetched": 0,
        }
        self._thread = threading.Thread(target=self._publish_loop, name="memstore-pool", daemon=True)
        self._thread.start()

    @staticmethod
    def key(fk: bytes) -> bytes:
        return KEY_PREFIX + fk

    # ---- publish ---------------------------------------------------------------------------------

    def publish(self, fk: bytes, make_record: Callable[[], bytes], size: int) -> None:
        """Queue a record for the pool; ``make_record`` encodes it on the publisher thread."""
        self._enqueue(self.key(fk), make_record, size)

    def publish_all(self, codec: str, records: Sequence[tuple[bytes, memoryview, RecordMeta]]) -> None:
        """Queue values just stored in a shared namespace: each is copied now and encoded with ``codec``
        on the publisher thread."""

        def encoder(data: bytes, meta: RecordMeta) -> Callable[[], bytes]:
            return lambda: encode_for(codec, memoryview(data), meta)

        for fk, raw, meta in records:
            self.publish(fk, encoder(bytes(raw), meta), len(raw))

    def remove(self, fk: bytes) -> None:
        """Queue the removal of fk's record (a delete, or a record that failed its checks)."""
        self._enqueue(self.key(fk), None, 0)

    def _enqueue(self, key: bytes, make: Callable[[], bytes] | None, size: int) -> None:
        with self._cond:
            if self._closed:
                return
            self._queue.append((key, make, size))
            self._queued += size
            while self._queued > self._queue_bytes and len(self._queue) > 1:
                _, _, dropped = self._queue.popleft()
                self._queued -= dropped
                self.counts["publish_dropped"] += 1
            self._cond.notify()

    def _publish_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                wait = self._down_until - self._clock()
                if wait > 0 and not self._closed:
                    self._cond.wait(wait)
                    continue
                ops = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                self._queued -= sum(size for _, _, size in ops)
                self._busy = True
            try:
                self._write(ops)
            finally:
                with self._cond:
                    self._busy = False

    def _write(self, ops: list[tuple[bytes, Callable[[], bytes] | None, int]]) -> None:
        records = each(_made, [make for _, make, _ in ops])
        # None: a removal; a value that could not be encoded is simply not shared
        work = [(key, rec) for (key, make, _), rec in zip(ops, records, strict=True) if make is None or rec]
        px = int(self.ttl * 1000)

        def queue(pipe: Any, i: int) -> None:
            key, record = work[i]
            if record is None:
                pipe.delete(key)
            else:
                pipe.set(key, record, px=px)

        done = self._on_nodes([key for key, _ in work], queue)
        sets = [(rec, ok is not None) for (_, rec), ok in zip(work, done, strict=True) if rec is not None]
        with self._cond:
            self.counts["published"] += sum(ok for _, ok in sets)
            self.counts["bytes_published"] += sum(len(rec) for rec, ok in sets if ok)
            self.counts["publish_dropped"] += sum(not ok for _, ok in sets)

    # ---- fetch -----------------------------------------------------------------------------------

    def fetch(self, fks: Sequence[bytes]) -> list[bytes | None]:
        """The pool's records for fks (None where it has none, or is unreachable), in one round trip."""
        found = self._each("get", fks)
        out = [v if isinstance(v, bytes) else None for v in found]
        with self._cond:
            hits = sum(v is not None for v in out)
            self.counts["hits"] += hits
            self.counts["misses"] += len(out) - hits
            self.counts["bytes_fetched"] += sum(len(v) for v in out if v is not None)
        return out

    def exists(self, fks: Sequence[bytes]) -> list[bool]:
        """Which of fks the pool holds, in one round trip (all False when it is unreachable)."""
        return [v == 1 for v in self._each("exists", fks)]

    def _each(self, command: str, fks: Sequence[bytes]) -> list[Any]:
        """``command`` of every key, one pipelined round trip per node; None for the keys of a node
        that is skipped or failing."""
        keys = [self.key(fk) for fk in fks]
        return self._on_nodes(keys, lambda pipe, i: getattr(pipe, command)(keys[i]))

    def _on_nodes(self, keys: Sequence[bytes], queue: Callable[[Any, int], None]) -> list[Any]:
        """``queue(pipeline, i)`` for every key i on the pipeline of the node serving it, then each
        pipeline run (one round trip per node). The answers in key order; None for a key whose node is
        skipped or fails: a failure is counted and skips that node for ``BACKOFF`` seconds, so the
        other nodes' keys still hit while it is down or failing over."""
        out: list[Any] = [None] * len(keys)
        if not keys or self._clock() < self._down_until:
            return out
        try:
            groups = self._groups(self._connected(), keys)
        except self._errors as exc:
            self._failed(None, exc)
            return out
        for name, (conn, indices) in groups.items():
            if self._clock() < self._node_down.get(name, 0.0):
                continue
            try:
                pipe = conn.pipeline(transaction=False)
                for i in indices:
                    queue(pipe, i)
                found = pipe.execute(raise_on_error=False)
            except self._errors as exc:
                self._failed(name, exc)
                continue
            bad = next((v for v in found if isinstance(v, BaseException)), None)
            if bad is not None:  # MOVED during a failover, or a node refusing the command
                self._failed(name, bad)
            for i, v in zip(indices, found, strict=True):
                out[i] = None if isinstance(v, BaseException) else v
        return out

    def _groups(self, client: Any, keys: Sequence[bytes]) -> dict[str | None, tuple[Any, list[int]]]:
        """The keys' indices by the node serving them, with that node's client (one server: itself)."""
        if not hasattr(client, "get_node_from_key"):
            return {None: (client, list(range(len(keys))))}
        if self._refresh:  # a node failed: learn the slots again (a replica may have taken over)
            self._refresh = False
            client.nodes_manager.initialize()
        groups: dict[str | None, tuple[Any, list[int]]] = {}
        for i, key in enumerate(keys):
            try:
                node = client.get_node_from_key(key)
            except self._errors:  # a slot no node serves now: a miss
                continue
            if node.name not in groups:
                groups[node.name] = (client.get_redis_connection(node), [])
            groups[node.name][1].append(i)
        return groups

    def corrupt(self, fk: bytes) -> None:
        """A fetched record failed its checks: counted, and removed from the pool."""
        with self._cond:
            self.counts["corrupt"] += 1
            self.counts["hits"] -= 1
            self.counts["misses"] += 1
        self.remove(fk)

    def _connected(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._connector()
            return self._client

    def _failed(self, node: str | None, exc: BaseException) -> None:
        """Counted; the node (or, for one server or no connection, the whole pool) skipped a while."""
        with self._cond:
            self.counts["errors"] += 1
            until = self._clock() + BACKOFF
            if node is None:
                self._down_until = until
            else:
                self._node_down[node] = until
                self._refresh = True
        log.warning("pool %s unreachable, skipped for %.1fs: %s", node or "", BACKOFF, exc)

    # ---- lifecycle -------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        with self._cond:
            return {**self.counts, "queued_bytes": self._queued, "ttl_seconds": self.ttl}

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout`` seconds) until every queued publication was written or dropped."""
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            with self._cond:
                if not self._queue and not self._busy:
                    break
            time.sleep(0.005)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), then stop."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._client_lock:
            if self._client is not None:
                self._client.close()
