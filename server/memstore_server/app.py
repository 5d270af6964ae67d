"""Building, running and stopping the gRPC server."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import CollectorRegistry

from memstore import TieredStore
from memstore.errors import ColdResizeError, SharedMemoryFullError, StoreLockedError
from memstore.hot import shm_dir
from memstore.quota import Quota, load_quotas
from memstore.settings import COLD_FILL
from memstore.tuning import pool_large_allocations
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import CHUNK
from memstore_server.auth import DEFAULT_TENANT, AuthInterceptor, Principal, TokensFile, load_tokens
from memstore_server.config import (
    Address,
    ConfigError,
    ServerConfig,
    check_config,
    format_size,
    human_size,
    parse_listen,
    parse_size,
)
from memstore_server.dataplane import DataPlane
from memstore_server.limits import bulk_streams_for
from memstore_server.memory_servicer import SERVICE as MEMORY_SERVICE
from memstore_server.memory_servicer import MemoryService
from memstore_server.metrics import CallMetrics, MetricsServer, StoreCollector
from memstore_server.servicer import SERVICE, Limits, StoreService

log = logging.getLogger("memstore.server")
# Shutdown refuses new calls for at least DRAIN_MIN seconds, and at most DRAIN_MAX while calls finish,
# before gRPC itself stops (RunningServer.stop).
DRAIN_MIN, DRAIN_MAX = 0.1, 2.0
# Seconds one call to the pool may take before it counts as a miss (and the pool is skipped a while).
POOL_TIMEOUT = 0.5
# Messages are at most one chunk plus headers; the limit leaves room and refuses anything bigger.
MAX_MESSAGE_BYTES = CHUNK + (1 << 20)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    service: StoreService
    health: health.HealthServicer
    memory: MemoryService
    dataplane: DataPlane | None = None
    metrics: MetricsServer | None = None

    def stop(self, grace: float) -> None:
        """Refuse new calls, let calls in flight finish within ``grace`` seconds.

        First the servicers refuse every new call with UNAVAILABLE (which clients retry elsewhere) while
        the calls in their handlers finish, for at least DRAIN_MIN seconds; only then does gRPC stop,
        which would end a call that had arrived but not yet reached a handler with CANCELLED."""
        self.health.enter_graceful_shutdown()  # every service reports NOT_SERVING from now on
        self.service.shutting_down.set()
        start = time.monotonic()
        drain = min(grace, DRAIN_MAX)
        while time.monotonic() - start < drain:
            if time.monotonic() - start >= min(drain, DRAIN_MIN) and not (
                self.service.active or self.memory.active
            ):
                break
            time.sleep(0.01)
        if self.dataplane is not None:
            self.dataplane.close()
        self.server.stop(max(0.0, grace - (time.monotonic() - start))).wait()
        self.memory.close()
        self.service.limits.close()
        if self.metrics is not None:
            self.metrics.close()


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _reflection_v1(names: tuple[str, ...]) -> grpc.GenericRpcHandler:
    """``grpc.reflection.v1``, which newer tools ask for first, beside the ``v1alpha`` that grpcio
    ships: the two packages' messages are the same on the wire, so one servicer answers both."""
    servicer = reflection.ReflectionServicer(names)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": info})


def create_server(
    store: TieredStore,
    listen: str = "127.0.0.1:0",
    *,
    max_workers: int = 16,
    max_concurrent_rpcs: int = 64,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    auth_tokens: str | None = None,
    embed_text: bool = False,
    tls: tuple[str, str, str | None] | None = None,
    limits: Limits | None = None,
    data_listen: str = "auto",
    data_connections: int = 64,
    data_idle: float = 300.0,
    metrics_listen: str = "",
) -> RunningServer:
    """A started server for ``store``; bind port 0 (or a unix socket) in tests. Returns the bound port.

    ``data_listen``: the data plane's TCP address (HOST:PORT), "auto" for a free port on the gRPC host
    (with a unix socket for clients on this host), or "off". ``metrics_listen``: HOST:PORT of Prometheus
    ``/metrics`` (port 0: a free one, in ``RunningServer.metrics.port``), or "" for none."""
    mutual_tls = tls is not None and tls[2] is not None
    registry = CollectorRegistry(auto_describe=True)
    interceptors: list[grpc.ServerInterceptor] = [CallMetrics(registry)] if metrics_listen else []
    if auth_tokens or mutual_tls:
        # Without a tokens file, mutual TLS alone authenticates: a certificate that names no tenant is
        # the default tenant's admin, as the CA vouches for it.
        tokens = TokensFile(auth_tokens) if auth_tokens else None
        interceptors.append(
            AuthInterceptor(
                tokens, certificate_default=None if auth_tokens else Principal(DEFAULT_TENANT, "admin")
            )
        )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="memstore-rpc"),
        interceptors=interceptors,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    capacity = store.stats()
    largest_tier = max(capacity[t]["capacity_bytes"] for t in ("hot", "warm", "cold"))
    limits = limits or Limits(bulk_streams=bulk_streams_for(max_workers))
    service = StoreService(store, max_value_bytes=largest_tier, limits=limits)
    embedder = None
    if embed_text:
        from memstore.embed import MiniLMEmbedder

        embedder = MiniLMEmbedder()
    memory = MemoryService(store, service.shutting_down, embedder)
    server.add_generic_rpc_handlers((service.generic_handler(), memory.generic_handler()))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        pb.DESCRIPTOR.services_by_name["Store"].full_name,
        pb.DESCRIPTOR.services_by_name["Memory"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
        REFLECTION_V1,
    )
    reflection.enable_server_reflection(names, server)
    server.add_generic_rpc_handlers((_reflection_v1(names),))
    if tls is not None:  # (certificate chain, private key, client CA or None) as PEM file paths
        cert, key, client_ca = (open(p, "rb").read() if p else None for p in tls)  # noqa: SIM115
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
        port = server.add_secure_port(listen, creds)
    else:
        port = server.add_insecure_port(listen)
    if port == 0 and not listen.startswith("unix:"):
        raise OSError(f"could not listen on {listen}")
    dataplane = None
    if data_listen != "off":
        dataplane = DataPlane(
            service,
            tcp=data_address(data_listen, listen),
            tls=tls_context(tls),
            max_connections=data_connections,
            connection_idle=data_idle,
        )
        service.dataplane = dataplane
    metrics = None
    try:
        if metrics_listen:
            registry.register(StoreCollector(store, dataplane))
            metrics = MetricsServer(metrics_listen, registry)
        server.start()
    except BaseException:
        if dataplane is not None:
            dataplane.close()
        if metrics is not None:
            metrics.close()
        raise
    for name in ("", SERVICE, MEMORY_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, service, health_servicer, memory, dataplane, metrics)


def data_address(data_listen: str, listen: str) -> tuple[str, int]:
    """The data plane's TCP address: ``data_listen``, or for "auto" a free port on the gRPC host."""
    if data_listen != "auto":
        address = parse_listen(data_listen, "--data-listen")
        if address.path:
            raise ConfigError(f"--data-listen {data_listen}: HOST:PORT (the unix socket is made by itself)")
        return address.host, address.port
    if listen.startswith("unix:"):
        return "127.0.0.1", 0
    return parse_listen(listen).host, 0


def tls_context(tls: tuple[str, str, str | None] | None) -> ssl.SSLContext | None:
    """The data plane's TLS, from the same certificate, key and client CA as gRPC's."""
    if tls is None:
        return None
    cert, key, client_ca = tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ServeError(RuntimeError):
    """``memstore serve`` cannot start for a reason outside its settings (a port or data dir in use)."""


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully and close the store. Returns the exit code.

    Every setting is checked, and the address probed, before anything is created on disk."""
    address = check_config(config)
    probe_listen(address, config.origin("listen"), config.listen)
    if config.data_listen not in ("auto", "off"):
        data = parse_listen(config.data_listen, config.origin("data_listen"))
        probe_listen(data, config.origin("data_listen"), config.data_listen)
    if (
        not config.auth_tokens
        and not config.tls_client_ca
        and not _loopback(address)
        and not config.allow_no_auth
    ):
        raise ConfigError(
            f"{config.origin('listen')} {config.listen}: refusing to serve a non-loopback address without "
            "authentication: pass --auth-tokens FILE (memstore token create) or --tls-client-ca, or "
            "--allow-no-auth if the network is trusted"
        )
    quotas = None
    if config.quotas:
        try:
            quotas = load_quotas(config.quotas, parse_size)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{config.origin('quotas')} {config.quotas}: {exc}") from None
    if config.auth_tokens:
        try:
            load_tokens(config.auth_tokens)
        except ValueError as exc:
            raise ConfigError(f"{config.origin('auth_tokens')}: {exc}") from None
    pool_large_allocations()
    store = _open_store(config, quotas)
    try:
        running = create_server(
            store,
            config.listen,
            max_workers=config.workers,
            max_concurrent_rpcs=config.max_concurrent_rpcs,
            auth_tokens=config.auth_tokens or None,
            embed_text=config.embed_text,
            limits=Limits(
                call_bytes=config.max_call_bytes,
                inflight_bytes=config.max_inflight_bytes,
                bulk_streams=bulk_streams_for(config.workers),
                stream_idle=config.stream_idle_timeout,
            ),
            tls=(config.tls_cert, config.tls_key, config.tls_client_ca or None) if config.tls_cert else None,
            data_listen=config.data_listen,
            data_connections=config.data_connections,
            data_idle=config.data_idle_timeout,
            metrics_listen=config.metrics_listen,
        )
    except BaseException:
        store.close()
        raise
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    where = config.listen if address.path else f"{config.listen.rsplit(':', 1)[0]}:{running.port}"
    tiers = store.stats()
    log.info(
        "memstore serving on %s; tiers hot %s, warm %s, cold %s (an LMDB map of %s: records fill up to "
        "%.0f%% of it); config %s",
        where,
        format_size(tiers["hot"]["capacity_bytes"]),
        format_size(tiers["warm"]["capacity_bytes"]),
        human_size(tiers["cold"]["capacity_bytes"]),
        format_size(tiers["cold"]["map_bytes"]),
        COLD_FILL * 100,
        config.describe(),
    )
    if not config.auth_tokens:
        log.warning("authentication is off: every caller is the default tenant with every role")
    stop.wait()
    log.info(
        "shutting down: finishing calls in flight (grace %.1fs), then writing hot and warm to cold",
        config.grace,
    )
    running.stop(config.grace)
    store.close()
    log.info("stopped")
    return 0


def _open_store(config: ServerConfig, quotas: dict[str, Quota] | None) -> TieredStore:
    """The store of ``config``, with its failures put in terms of the settings that caused them."""
    pool = None
    if config.pool:
        from memstore.pool import Pool, connect

        pool = Pool(
            lambda: connect(
                config.pool,
                timeout=POOL_TIMEOUT,
                password_file=config.pool_password_file or None,
                ca=config.pool_ca or None,
            ),
            ttl=config.pool_ttl,
        )
    try:
        return _store_of(config, quotas, pool)
    except BaseException:
        if pool is not None:
            pool.close(timeout=0)
        raise


def _store_of(config: ServerConfig, quotas: dict[str, Quota] | None, pool: Any) -> TieredStore:
    try:
        return TieredStore(
            config.data_dir,
            pool=pool,
            hot_bytes=config.hot_bytes,
            warm_bytes=config.warm_bytes,
            cold_bytes=config.cold_bytes,
            policy=config.policy,
            cold_admission=config.cold_admission,
            quotas=quotas,
        )
    except StoreLockedError as exc:
        by = f" (pid {exc.pid})" if exc.pid else ""
        raise ServeError(
            f"{config.origin('data_dir')} {config.data_dir}: in use by another memstore{by}; stop it or "
            "give another --data-dir"
        ) from None
    except SharedMemoryFullError as exc:
        raise ConfigError(
            f"{config.origin('hot_bytes')} {format_size(config.hot_bytes)}: the hot tier's arena needs "
            f"{human_size(exc.needed)} of shared memory and {shm_dir()} has {human_size(exc.free)} free; "
            f"lower --hot-bytes or enlarge {shm_dir()}"
        ) from None
    except ColdResizeError as exc:
        raise ConfigError(f"{config.origin('cold_bytes')}: {exc}") from None
    except PermissionError as exc:
        raise ServeError(
            f"{config.origin('data_dir')} {config.data_dir}: no permission to write {exc.filename or ''}"
        ) from None


def probe_listen(address: Address, source: str, text: str) -> None:
    """Fail before the store opens if the address cannot be served: an unknown host, an address of
    another machine, a port or unix socket another process holds."""
    if address.path:
        parent = os.path.dirname(os.path.abspath(address.path))
        if not os.path.isdir(parent):
            raise ConfigError(f"{source} {text}: the directory {parent} does not exist")
        if os.path.exists(address.path):
            with socket.socket(socket.AF_UNIX) as s, contextlib.suppress(OSError):
                s.connect(address.path)
                raise ServeError(
                    f"{source} {text}: another server listens on this socket; stop it or pick another"
                )
        return
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"{source} {text}: unknown host {address.host!r}") from None
    if address.port == 0:
        return
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(
                    f"{source} {text}: port {address.port} is in use (another memstore serve?); stop it or "
                    "pick another port"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(
                    f"{source} {text}: {address.host} is not an address of this machine"
                ) from None
            if exc.errno == errno.EACCES:
                raise ServeError(f"{source} {text}: no permission to listen on port {address.port}") from None
            raise


def _loopback(address: Address) -> bool:
    return bool(address.path) or address.host in ("localhost", "::1") or address.host.startswith("127.")
