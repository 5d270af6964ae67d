"""The one map from memstore's errors to gRPC status codes."""

from __future__ import annotations

import grpc

from memstore.errors import (
    CapacityError,
    InvalidKeyError,
    InvalidNamespaceError,
    InvalidValueError,
    MemstoreError,
    ReservationMismatchError,
    StoreClosedError,
    UnknownNamespaceError,
    UnknownReservationError,
)
from memstore.memory import VersionConflict
from memstore.wire import ValueTooLarge, WireError


class Abort(Exception):
    """Raised inside a handler to end the call with a given status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def status_for(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, Abort):
        return exc.code
    if isinstance(exc, VersionConflict):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, ValueTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, UnknownNamespaceError | UnknownReservationError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, ReservationMismatchError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, InvalidKeyError | InvalidValueError | InvalidNamespaceError | WireError | TypeError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, CapacityError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, StoreClosedError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, MemstoreError):
        return grpc.StatusCode.UNAVAILABLE  # a failing tier: the caller may retry
    return grpc.StatusCode.INTERNAL
