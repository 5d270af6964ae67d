"""Bearer-token authentication and the tenant of each call.

A tokens file holds one JSON object per line: the SHA-256 of a token (never the token itself), its
tenant, its role (``read`` < ``write`` < ``admin``) and, optionally, when it expires.
``memstore token create`` adds a line and prints the new token once; the server reads the file again
when it changes, so deleting a line revokes a token without a restart. The interceptor checks every
call: a missing, unknown or expired token is UNAUTHENTICATED, a role too weak for the method is
PERMISSION_DENIED. With mutual TLS, a client
certificate can name its holder instead: a URI subject alternative name ``memstore://TENANT/ROLE``. The
tenant comes from the token or the certificate alone and reaches the handlers through
``current_tenant()``, and every namespace a caller names is qualified with it
(``memstore.tenancy``): tenant and name are one identity that no chosen name can imitate.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from memstore import tenancy

ROLES = {"read": 1, "write": 2, "admin": 3}
DEFAULT_TENANT = "default"
_TENANT = tenancy.TENANT
_CERT_URI = re.compile(r"^memstore://([A-Za-z0-9_-]{1,32})/(read|write|admin)$")
log = logging.getLogger("memstore.auth")
_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("memstore_tenant", default=DEFAULT_TENANT)
# Who made the call (tenant and credential), for what must stay bound to its maker: reservations.
_caller: contextvars.ContextVar[str] = contextvars.ContextVar("memstore_caller", default=DEFAULT_TENANT)
_role: contextvars.ContextVar[str] = contextvars.ContextVar("memstore_role", default="admin")
# Whether the call's credential is still good (a token can be revoked or expire while a stream runs).
_valid: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar(
    "memstore_credential_valid", default=lambda: True
)

# The role each method needs; methods not listed need "write".
NEEDS: dict[str, str] = {
    "Get": "read",
    "Exists": "read",
    "Stats": "read",
    "Lookup": "read",
    "Prefetch": "read",
    "List": "read",
    "ListNamespaces": "read",
    "History": "read",
    "Search": "read",
    "Explain": "read",
    "DeleteNamespace": "admin",
    # The shared-memory path maps the whole arena (every tenant's hot records): admin only.
    "OpenLocal": "admin",
    "LocalGet": "admin",
    "LocalPutBegin": "admin",
    "LocalPutCommit": "admin",
    # A data-plane ticket carries the caller's own role: each frame is checked as its RPC would be.
    "OpenData": "read",
}


def current_principal() -> tuple[Principal, Callable[[], bool]]:
    """Who the running call acts as, and its credential check: what a data-plane ticket stands for."""
    return _principal.get(), _valid.get()


def current_tenant() -> str:
    return _tenant.get()


def current_caller() -> str:
    return _caller.get()


def current_role() -> str:
    """The role of the running call (without authentication every caller is the default tenant's admin)."""
    return _role.get()


def credential_still_valid() -> bool:
    """False once the token of the running call was revoked or expired (streams check each message)."""
    return _valid.get()()


def tenant_namespace(name: str) -> str:
    """The store's namespace for the caller's namespace ``name`` (InvalidNamespaceError if malformed)."""
    return tenancy.qualify(current_tenant(), name)


@dataclass(frozen=True)
class Principal:
    tenant: str
    role: str
    expires_at: float | None = None  # unix seconds; None never expires
    credential: str = ""  # which token (its hash) or certificate: calls of one credential are one caller

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at


# Without authentication every caller is the default tenant's admin.
_NO_AUTH = Principal(DEFAULT_TENANT, "admin")
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "memstore_principal",
    default=_NO_AUTH,
)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``12h`` or ``30d``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"a duration is a number and s, m, h or d (like 30d), not {text!r}")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(path: str, tenant: str, role: str, expires_in: float | None = None) -> str:
    """Append a new token for ``tenant`` with ``role`` (valid ``expires_in`` seconds, or for ever) to the
    tokens file; returns the token."""
    if not _TENANT.match(tenant) or tenant == DEFAULT_TENANT:
        raise ValueError("a tenant is 1-32 characters of A-Z a-z 0-9 _ - (and not 'default')")
    if role not in ROLES:
        raise ValueError(f"role is one of {sorted(ROLES)}")
    if expires_in is not None and expires_in <= 0:
        raise ValueError("a token must be valid for some time")
    token = "ms_" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {
        "sha256": hash_token(token),
        "tenant": tenant,
        "role": role,
        "created_at": round(time.time(), 3),
    }
    if expires_in is not None:
        entry["expires_at"] = round(time.time() + expires_in, 3)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(entry) + "\n")
    return token


ID_CHARS = 12  # of a token's SHA-256 in hex: its id in ``memstore token list``


def token_id(sha256: str) -> str:
    """The short name ``memstore token list`` shows for a token and ``revoke`` takes."""
    return sha256[:ID_CHARS]


def list_tokens(path: str) -> list[dict[str, Any]]:
    """The entries of a tokens file, each with its ``id``, in the order they were added."""
    load_tokens(path)  # the same checks as the server's
    with open(path) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    return [{"id": token_id(e["sha256"]), **e} for e in entries]


def revoke_token(path: str, which: str) -> dict[str, Any]:
    """Remove one token from the file, named by its id (a prefix of at least 6 of its hash's hex digits)
    or by the token itself; a running server stops accepting it within a second. Returns its entry."""
    digest = hash_token(which) if which.startswith("ms_") else which.lower()
    if len(digest) < 6 or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"{which!r} is not a token id (memstore token list --file {path} shows them)")
    entries = list_tokens(path)
    hits = [e for e in entries if e["sha256"].startswith(digest)]
    if not hits:
        raise ValueError(f"{path}: no token {which!r} (memstore token list --file {path} shows them)")
    if len(hits) > 1:
        raise ValueError(f"{path}: {which!r} names {len(hits)} tokens; give more of its id")
    keep = [e for e in entries if e is not hits[0]]
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(json.dumps({k: v for k, v in e.items() if k != "id"}) + "\n" for e in keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # readers see the old file or the new one, never half of it
    return hits[0]


def load_tokens(path: str) -> dict[str, Principal]:
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                expires = entry.get("expires_at")
                out[entry["sha256"]] = Principal(
                    entry["tenant"],
                    entry["role"],
                    None if expires is None else float(expires),
                    "token:" + entry["sha256"],
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ValueError(f"{path}:{n}: not a token entry ({exc})") from None
            if entry["role"] not in ROLES or not _TENANT.match(entry["tenant"]):
                raise ValueError(f"{path}:{n}: bad role or tenant")
    return out


class TokensFile:
    """The tokens file, read again when it changes, so tokens are added or revoked without a restart.

    A file that fails to parse keeps the last good set (and the error is logged), so a half-written
    edit never locks everyone out or lets anyone in.
    """

    CHECK_EVERY = 1.0  # seconds between looks at the file's modification time

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp = self._stat()
        self.tokens = load_tokens(path)  # a bad file at start is an error
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _stat(self) -> tuple[float, int, int]:
        st = os.stat(self.path)
        return st.st_mtime, st.st_size, st.st_ino  # a revoke replaces the file: a new inode

    def current(self) -> dict[str, Principal]:
        now = time.monotonic()
        if now - self._checked >= self.CHECK_EVERY:
            with self._lock:
                self._checked = now
                try:
                    stamp = self._stat()
                    if stamp != self._stamp:
                        self.tokens = load_tokens(self.path)
                        self._stamp = stamp
                        log.info("reloaded %s: %d tokens", self.path, len(self.tokens))
                except (OSError, ValueError) as exc:
                    log.error("keeping the previous tokens: %s", exc)
        return self.tokens


def certificate_principal(context: grpc.ServicerContext) -> Principal | None:
    """The principal a verified client certificate names with a ``memstore://TENANT/ROLE`` URI SAN."""
    for uri in context.auth_context().get("peer_uri", ()):
        match = _CERT_URI.match(uri.decode(errors="replace"))
        if match and match[1] != DEFAULT_TENANT:
            return Principal(match[1], match[2], credential="cert:" + uri.decode())
    return None


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """A bearer token decides the caller; without one, the client certificate (mutual TLS) does.

    ``certificate_default`` is the principal of a verified certificate that names no tenant: the
    default tenant as admin when mutual TLS is the only authentication (the CA vouches for its
    holders), None when a tokens file is in use (such a caller is unauthenticated).
    """

    def __init__(
        self,
        tokens: TokensFile | None,
        open_services: tuple[str, ...] = ("grpc.health.v1.Health", "grpc.reflection"),
        certificate_default: Principal | None = None,
    ) -> None:
        self.tokens = tokens
        self.open_services = open_services
        self.certificate_default = certificate_default

    def _principal(self, metadata: Any) -> Principal | None:
        known = self.tokens.current() if self.tokens is not None else {}
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                # A lookup by the token's SHA-256: what a timing difference could reveal is about a
                # hash, not the secret, so no per-entry constant-time scan is needed.
                principal = known.get(hash_token(value[7:]))
                if principal is not None:
                    return None if principal.expired() else principal
        return None

    def _still_valid(self, principal: Principal) -> Callable[[], bool]:
        tokens = self.tokens

        def check() -> bool:
            if principal.expired():
                return False
            known = tokens.current() if tokens is not None else {}
            return known.get(principal.credential.removeprefix("token:")) == principal

        return check

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method = details.method or ""
        if method.lstrip("/").startswith(self.open_services):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        need = NEEDS.get(method.rsplit("/", 1)[-1], "write")
        if any(key == "authorization" for key, _ in details.invocation_metadata or ()):
            principal = self._principal(details.invocation_metadata)
            if principal is None:
                return _refuse(
                    handler, grpc.StatusCode.UNAUTHENTICATED, "a valid, unexpired bearer token is required"
                )
            return _as(handler, lambda _context: principal, need, self._still_valid(principal))
        # No token: the certificate, which only the call's context shows.
        return _as(handler, lambda context: certificate_principal(context) or self.certificate_default, need)


def _wrap(handler: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Any:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return handler._replace(**{kind: wrap(behaviour)})
    return handler


def _refuse(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    def wrap(_behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(code, message)

        return refuse

    return _wrap(handler, wrap)


def _as(
    handler: Any,
    principal_of: Callable[[grpc.ServicerContext], Principal | None],
    need: str,
    still_valid: Callable[[], bool] | None = None,
) -> Any:
    """Run the handler as the call's principal, in its tenant, if its role is strong enough."""

    def wrap(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            principal = principal_of(context)
            if principal is None:
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "a valid bearer token or a client certificate naming a tenant is required",
                )
            assert principal is not None
            if ROLES[principal.role] < ROLES[need]:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"this method needs the {need} role")
            valid = still_valid or (lambda: True)
            with acting_as(principal, valid):
                result = behaviour(request, context)
            if handler.response_streaming:  # a generator runs after we return: carry the principal in
                return _tenant_stream(result, principal, valid)
            return result

        return run

    return _wrap(handler, wrap)


def _caller_of(principal: Principal) -> str:
    return f"{principal.tenant}/{principal.credential}"


@contextlib.contextmanager
def acting_as(principal: Principal, valid: Callable[[], bool]) -> Iterator[None]:
    """The call's tenant, identity, role and credential check, for the code that serves it."""
    tokens = (
        _tenant.set(principal.tenant),
        _caller.set(_caller_of(principal)),
        _role.set(principal.role),
        _valid.set(valid),
        _principal.set(principal),
    )
    try:
        yield
    finally:
        for var, token in zip((_tenant, _caller, _role, _valid, _principal), tokens, strict=True):
            var.reset(token)  # type: ignore[attr-defined]


def _tenant_stream(gen: Any, principal: Principal, valid: Callable[[], bool]) -> Any:
    with acting_as(principal, valid):
        yield from gen
