"""Prometheus metrics, scraped from a real server over HTTP and read with prometheus_client's own parser."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from memstore import Client, RemoteError, TieredStore
from memstore_server import create_server
from memstore_server.auth import create_token
from memstore_server.metrics import POOL_FIELDS
from tests.conftest import MiB, serve_command, served

ROOT = Path(__file__).resolve().parents[1]


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        text = answer.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def running(tmp_path):  # type: ignore[no-untyped-def]
    store = TieredStore(str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB)
    server = create_server(store, "127.0.0.1:0", metrics_listen="127.0.0.1:0")
    yield store, server
    server.stop(1)
    store.close()


def test_calls_tiers_tenants_and_data_plane_are_scraped(running) -> None:  # type: ignore[no-untyped-def]
    store, server = running
    assert server.metrics is not None
    target = f"127.0.0.1:{server.port}"
    with Client(target, local="never", data="never") as c:
        c.put_many([(b"a", b"x" * 1000), (b"b", b"y" * 2000)])
        assert c.get(b"a") == b"x" * 1000
        assert c.get(b"nope") is None
        with pytest.raises(RemoteError):
            c.get(b"k", ns="never-created")
    with Client(target, local="never", data="tcp") as c:
        assert c.get_many([b"a", b"b", b"nope"]) == [b"x" * 1000, b"y" * 2000, None]
    entry = store.hot.index[b"\x07defaultb"]
    store.hot.arena.mm[entry.offset + entry.length - 1] ^= 0x01  # one bad record in hot
    assert store.get(b"b") is None
    s = scrape(server.metrics.port)
    rpc = {"grpc_type": "server_stream", "grpc_service": "memstore.v1.Store", "grpc_method": "Get"}
    assert value(s, "grpc_server_handled_total", **rpc, grpc_code="OK") == 2
    assert value(s, "grpc_server_handled_total", **rpc, grpc_code="NOT_FOUND") == 1
    assert value(s, "grpc_server_started_total", **rpc) == 3
    assert value(s, "grpc_server_handling_seconds_count", **rpc) == 3
    put = {"grpc_type": "client_stream", "grpc_service": "memstore.v1.Store", "grpc_method": "Put"}
    assert value(s, "grpc_server_handled_total", **put, grpc_code="OK") == 1
    assert value(s, "grpc_server_handling_seconds_bucket", **put, le="+Inf") == 1
    assert value(s, "memstore_tier_items", tier="hot") == 1  # "b" was dropped when found bad
    assert value(s, "memstore_tier_capacity_bytes", tier="hot") == 8 * MiB
    assert value(s, "memstore_tier_hits_total", tier="hot") == 3  # one gRPC get, two on the data plane
    assert value(s, "memstore_tier_checksum_failures_total", tier="hot") == 1
    assert value(s, "memstore_tier_misses_total", tier="cold") >= 2
    assert value(s, "memstore_tenant_bytes", tenant="default", tier="hot") > 1000
    assert value(s, "memstore_dataplane_frames_total", kind="GET", code="OK") == 1
    assert value(s, "memstore_dataplane_sent_bytes_total") == 3000
    assert value(s, "memstore_dataplane_connections") == 0
    # every series the Grafana dashboard in the repository plots is one the server serves
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    plotted = set(re.findall(r"\b(?:memstore|grpc_server)_[a-z_]+", exprs))
    served_names = {name for name, _ in s} | {f"memstore_pool_{f}_total" for f in POOL_FIELDS}
    assert plotted and plotted <= served_names, plotted - served_names


def test_refused_calls_are_counted_with_their_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tokens = tmp_path / "tokens.jsonl"
    create_token(str(tokens), "t1", "read")
    store = TieredStore(str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB)
    server = create_server(store, "127.0.0.1:0", auth_tokens=str(tokens), metrics_listen="127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stats = ch.unary_unary("/memstore.v1.Store/Stats")
            with pytest.raises(grpc.RpcError) as info:
                stats(b"", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert server.metrics is not None
        s = scrape(server.metrics.port)
        labels = {"grpc_type": "unary", "grpc_service": "memstore.v1.Store", "grpc_method": "Stats"}
        assert value(s, "grpc_server_handled_total", **labels, grpc_code="UNAUTHENTICATED") == 1
    finally:
        server.stop(1)
        store.close()


def test_memstore_serve_metrics_listen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd, target = serve_command(tmp_path, "--metrics-listen", f"127.0.0.1:{port}")
    with served(cmd, target):
        with Client(target) as c:
            c.put(b"k", b"v" * 100)
        s = scrape(port)
        assert value(s, "memstore_tier_items", tier="hot") == 1
        assert value(s, "memstore_namespaces") >= 1
