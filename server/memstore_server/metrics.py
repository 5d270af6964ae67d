"""Prometheus metrics: ``memstore serve --metrics-listen HOST:PORT`` serves ``/metrics``.

Two sources. Calls: an interceptor, outermost, counts every call by service, method and status code and
times it into a histogram (the names and labels of grpc-ecosystem's go-grpc-prometheus, which Grafana's
gRPC dashboards expect: ``grpc_server_started_total``, ``grpc_server_handled_total``,
``grpc_server_handling_seconds``). The store: a collector that reads ``store.stats()`` when scraped, so
nothing is counted twice and a scrape costs one stats call: per tier items, bytes, capacity, hits,
misses, promotions, demotions, evictions, checksum failures and compression ratio; per tenant bytes and
items per tier; the pool's and the data plane's counters when they run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from memstore import TieredStore
    from memstore_server.dataplane import DataPlane

TIER_COUNTERS = ("hits", "misses", "promotions", "demotions", "evictions", "checksum_failures")
# Seconds: from a fraction of a millisecond (a small hot get) to tens of seconds (a large batch).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


class CallMetrics(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every call; the status is what the handler ended with (OK when it set none)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=registry,
        )
        self.seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end on the server.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = (details.method or "/").lstrip("/").rpartition("/")
        kind = _kind(handler)
        labels = (kind, service, method)
        for name in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, name)
            if behaviour is not None:
                return handler._replace(
                    **{name: self._measured(behaviour, labels, handler.response_streaming)}
                )
        return handler

    def _measured(self, behaviour: Callable[..., Any], labels: tuple[str, str, str], streams: bool) -> Any:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            self.started.labels(*labels).inc()
            start = time.perf_counter()
            try:
                result = behaviour(request, context)
            except BaseException:
                self._done(labels, context, start, failed=True)
                raise
            if not streams:
                self._done(labels, context, start, failed=False)
                return result
            return self._stream(result, labels, context, start)

        return run

    def _stream(self, gen: Iterator[Any], labels: tuple[str, str, str], context: Any, start: float) -> Any:
        try:
            yield from gen
        except BaseException:
            self._done(labels, context, start, failed=True)
            raise
        self._done(labels, context, start, failed=False)

    def _done(self, labels: tuple[str, str, str], context: Any, start: float, *, failed: bool) -> None:
        self.seconds.labels(*labels).observe(time.perf_counter() - start)
        code = context.code()
        if code is None:
            code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
        self.handled.labels(*labels, code.name).inc()


def _kind(handler: Any) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


class StoreCollector(Collector):
    """The store's figures, read when scraped."""

    def __init__(self, store: TieredStore, dataplane: DataPlane | None) -> None:
        self.store = store
        self.dataplane = dataplane

    def collect(self) -> Iterator[Any]:
        st = self.store.stats()
        tiers = ("hot", "warm", "cold")

        def gauge(name: str, doc: str, field: str) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["tier"])
            for tier in tiers:
                if st[tier].get(field) is not None:
                    g.add_metric([tier], float(st[tier][field]))
            return g

        yield gauge("memstore_tier_items", "Records held in the tier.", "items")
        yield gauge("memstore_tier_bytes", "Bytes the tier's records take (after compression).", "bytes")
        yield gauge("memstore_tier_capacity_bytes", "Bytes the tier may hold.", "capacity_bytes")
        yield gauge(
            "memstore_tier_compression_ratio",
            "Decoded bytes over stored bytes of the tier.",
            "compression_ratio",
        )
        for field in TIER_COUNTERS:
            c = CounterMetricFamily(
                f"memstore_tier_{field}",
                f"{field.replace('_', ' ').capitalize()} of the tier.",
                labels=["tier"],
            )
            for tier in tiers:
                c.add_metric([tier], float(st[tier][field]))
            yield c
        yield GaugeMetricFamily(
            "memstore_cold_map_bytes", "Size of the cold tier's LMDB map.", st["cold"]["map_bytes"]
        )
        yield GaugeMetricFamily(
            "memstore_cold_reader_slots", "LMDB reader slots in use or kept.", st["cold"]["reader_slots"]
        )
        yield GaugeMetricFamily("memstore_namespaces", "Namespaces in the store.", st["namespaces"])
        yield GaugeMetricFamily("memstore_pinned_records", "Records pinned in their tier.", st["pinned"])
        tenant_bytes = GaugeMetricFamily(
            "memstore_tenant_bytes", "Bytes a tenant's records take, per tier.", labels=["tenant", "tier"]
        )
        tenant_items = GaugeMetricFamily(
            "memstore_tenant_items", "Records a tenant holds, per tier.", labels=["tenant", "tier"]
        )
        for tenant, usage in st["tenants"].items():
            for tier in tiers:
                tenant_bytes.add_metric([tenant, tier], float(usage[f"{tier}_bytes"]))
                tenant_items.add_metric([tenant, tier], float(usage[f"{tier}_items"]))
        yield tenant_bytes
        yield tenant_items
        if "pool" in st:
            yield from _pool(st["pool"])
        if self.dataplane is not None:
            yield from _dataplane(*self.dataplane.figures())


POOL_FIELDS = {
    "published": "Records this server published to the pool.",
    "hits": "Pool lookups that found a record.",
    "misses": "Pool lookups that found none.",
    "corrupt": "Pool records that failed their checks.",
    "errors": "Pool calls that failed.",
    "publish_dropped": "Records not published because the pool's queue was full.",
    "bytes_published": "Bytes this server published to the pool.",
}


def _dataplane(frames: dict[tuple[str, str], int], received: int, sent: int, open_now: int) -> Iterator[Any]:
    yield GaugeMetricFamily("memstore_dataplane_connections", "Data-plane connections open.", open_now)
    served = CounterMetricFamily(
        "memstore_dataplane_frames",
        "Data-plane frames answered, by kind and status.",
        labels=["kind", "code"],
    )
    for (kind, code), n in sorted(frames.items()):
        served.add_metric([kind, code], n)
    yield served
    yield CounterMetricFamily(
        "memstore_dataplane_received_bytes", "Value bytes received in PUT frames.", received
    )
    yield CounterMetricFamily("memstore_dataplane_sent_bytes", "Value bytes sent in answers.", sent)


def _pool(pool: dict[str, Any]) -> Iterator[Any]:
    for field, doc in POOL_FIELDS.items():
        if field in pool:
            yield CounterMetricFamily(f"memstore_pool_{field}", doc, float(pool[field]))


class MetricsServer:
    """``/metrics`` over HTTP on its own port, for one server's registry."""

    def __init__(self, listen: str, registry: CollectorRegistry) -> None:
        host, _, port = listen.rpartition(":")
        self.http, self.thread = start_http_server(
            int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry
        )
        self.port = int(self.http.server_address[1])

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(timeout=2)
