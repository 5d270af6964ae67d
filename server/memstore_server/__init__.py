"""memstore's gRPC service (installed as ``memstore_server``): thin servicers over ``memstore``."""

from memstore_server.app import create_server, serve

__all__ = ["create_server", "serve"]
