"""Who owns a namespace: the tenant is part of a namespace's identity, never part of its chosen name.

A caller names a namespace with ``NAME`` characters (the same rules for every tenant). The store keeps
each namespace under a *qualified* name that joins the owner to that name with a separator no chosen
name may contain, so no name a caller picks can stand for another tenant's namespace:

- ``NAME``: the default tenant's namespace (the in-process library's namespaces look like this);
- ``TENANT#NAME``: a namespace of tenant ``TENANT``;
- ``TENANT!NAME``: an internal namespace the server keeps for ``TENANT`` (its agent memory). The
  Store service only ever forms the first two kinds, so internal namespaces are out of its reach.

Data dirs written before this layout named a tenant's namespaces ``t.TENANT.NAME`` and kept every
tenant's agent memory in one namespace ``memory``; ``TieredStore`` migrates them when it opens.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from memstore import settings
from memstore.errors import InvalidNamespaceError

DEFAULT_TENANT = "default"
TENANT_CHARS = "A-Za-z0-9_-"
NAME_CHARS = "A-Za-z0-9_.:@+=/-"
USER_SEP = "#"
INTERNAL_SEP = "!"
MAX_TENANT_CHARS = 32
TENANT = re.compile(rf"^[{TENANT_CHARS}]{{1,{MAX_TENANT_CHARS}}}$")
NAME = re.compile(rf"^[{NAME_CHARS}]{{1,{settings.MAX_NAMESPACE_CHARS}}}$")
QUALIFIED = re.compile(
    rf"^(?:(?P<tenant>[{TENANT_CHARS}]{{1,{MAX_TENANT_CHARS}}})(?P<sep>[{USER_SEP}{INTERNAL_SEP}]))?"
    rf"(?P<name>[{NAME_CHARS}]{{1,{settings.MAX_NAMESPACE_CHARS}}})$"
)
MEMORY = "memory"  # the internal namespace of a tenant's agent memory


class Owner(NamedTuple):
    tenant: str
    name: str
    internal: bool


def check_name(name: object) -> str:
    """A namespace name as callers choose it; the same limits hold for every tenant."""
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidNamespaceError(
            f"namespace names are 1-{settings.MAX_NAMESPACE_CHARS} characters of {NAME_CHARS}, not {name!r}"
        )
    return name


def qualify(tenant: str, name: str, *, internal: bool = False) -> str:
    """The store's name for tenant's namespace ``name`` (see the module docstring)."""
    if not TENANT.match(tenant):
        raise InvalidNamespaceError(f"tenant names are 1-{MAX_TENANT_CHARS} characters of {TENANT_CHARS}")
    check_name(name)
    if internal:
        return f"{tenant}{INTERNAL_SEP}{name}"
    return name if tenant == DEFAULT_TENANT else f"{tenant}{USER_SEP}{name}"


def owner(qualified: str) -> Owner:
    """Split a qualified name; raises InvalidNamespaceError for a name the store would not hold."""
    match = QUALIFIED.match(qualified) if isinstance(qualified, str) else None
    if match is None:
        raise InvalidNamespaceError(
            f"namespace names are 1-{settings.MAX_NAMESPACE_CHARS} characters of {NAME_CHARS}, "
            f"optionally after TENANT{USER_SEP} (TENANT{INTERNAL_SEP} for internal ones), not {qualified!r}"
        )
    tenant = match["tenant"]
    if tenant is None:
        return Owner(DEFAULT_TENANT, match["name"], False)
    if tenant == DEFAULT_TENANT and match["sep"] == USER_SEP:
        raise InvalidNamespaceError(f"the default tenant's namespaces carry no prefix: {match['name']!r}")
    return Owner(tenant, match["name"], match["sep"] == INTERNAL_SEP)


def key_prefix(qualified: str) -> bytes:
    """The bytes every record key of the namespace starts with: its name's length, then the name."""
    raw = qualified.encode()
    return bytes([len(raw)]) + raw


def tenant_of(qualified: str) -> str:
    try:
        return owner(qualified).tenant
    except InvalidNamespaceError:
        return DEFAULT_TENANT


def legacy_rename(name: str) -> str | None:
    """The qualified name of a namespace an older data dir called ``t.TENANT.NAME``, else None."""
    parts = name.split(".", 2)
    if len(parts) != 3 or parts[0] != "t" or parts[1] == DEFAULT_TENANT:
        return None
    if TENANT.match(parts[1]) and NAME.match(parts[2]):
        return f"{parts[1]}{USER_SEP}{parts[2]}"
    return None
