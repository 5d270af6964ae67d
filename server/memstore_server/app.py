"""Building, running and stopping the gRPC server."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from memstore import TieredStore
from memstore.quota import load_quotas
from memstore.tuning import pool_large_allocations
from memstore.v1 import memstore_pb2 as pb
from memstore.wire import CHUNK
from memstore_server.auth import DEFAULT_TENANT, AuthInterceptor, Principal, TokensFile
from memstore_server.config import ServerConfig, parse_size
from memstore_server.limits import bulk_streams_for
from memstore_server.memory_servicer import SERVICE as MEMORY_SERVICE
from memstore_server.memory_servicer import MemoryService
from memstore_server.servicer import SERVICE, Limits, StoreService

log = logging.getLogger("memstore.server")
# Messages are at most one chunk plus headers; the limit leaves room and refuses anything bigger.
MAX_MESSAGE_BYTES = CHUNK + (1 << 20)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    service: StoreService
    health: health.HealthServicer
    memory: MemoryService

    def stop(self, grace: float) -> None:
        """Refuse new calls, let calls in flight finish within ``grace`` seconds."""
        self.health.enter_graceful_shutdown()  # every service reports NOT_SERVING from now on
        self.service.shutting_down.set()
        self.server.stop(grace).wait()
        self.memory.close()
        self.service.limits.close()


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
) -> RunningServer:
    """A started server for ``store``; bind port 0 (or a unix socket) in tests. Returns the bound port."""
    mutual_tls = tls is not None and tls[2] is not None
    interceptors = []
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
    )
    reflection.enable_server_reflection(names, server)
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
    server.start()
    for name in ("", SERVICE, MEMORY_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, service, health_servicer, memory)


def serve(config: ServerConfig) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully and close the store. Returns the exit code."""
    pool_large_allocations()
    if config.tls_cert and not config.tls_key:
        raise ValueError("--tls-cert needs --tls-key")
    if (
        not config.auth_tokens
        and not config.tls_client_ca
        and not _loopback(config.listen)
        and not config.allow_no_auth
    ):
        raise ValueError(
            f"refusing to serve {config.listen} without authentication: pass --auth-tokens FILE "
            "(memstore token create) or --tls-client-ca, or --allow-no-auth true if the network is trusted"
        )
    store = TieredStore(
        config.data_dir,
        hot_bytes=config.hot_bytes,
        warm_bytes=config.warm_bytes,
        cold_bytes=config.cold_bytes,
        policy=config.policy,
        cold_admission=config.cold_admission,
        quotas=load_quotas(config.quotas, parse_size) if config.quotas else None,
    )
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
        )
    except BaseException:
        store.close()
        raise
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    where = (
        config.listen
        if config.listen.startswith("unix:")
        else f"{config.listen.rsplit(':', 1)[0]}:{running.port}"
    )
    log.info("memstore serving on %s; config %s", where, config.describe())
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


def _loopback(listen: str) -> bool:
    if listen.startswith("unix:"):
        return True
    host = listen.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")
