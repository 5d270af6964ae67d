"""The ``memstore`` command: ``serve``, ``stats``, ``token create|list|revoke``, ``check`` and ``salvage``.

Every failure is one line on stderr naming the flag, file or address to change: exit 2 for a usage
error (a bad flag, setting or file), 1 for a runtime failure (a port or data dir in use, a server that
does not answer). ``--debug`` (or ``MEMSTORE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from memstore_server.config import human_size

DEFAULT_TARGET = "127.0.0.1:50051"
_METAVARS = {"size": "SIZE", "int": "N", "float": "SECONDS", "bool": "BOOL"}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _serve(args: argparse.Namespace) -> int:
    from memstore_server.app import serve
    from memstore_server.config import SETTINGS, check_config, load_config

    flags = {name: getattr(args, name, None) for name, *_ in SETTINGS}
    config = load_config(flags, args.config)
    check_config(config)  # before logging is set up with its level
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve(config)


def _stats_target(args: argparse.Namespace) -> str:
    """TARGET, else the server's own setting: MEMSTORE_LISTEN, then ``listen`` in --config, as ``serve``
    reads them; a wildcard address is reached on loopback."""
    if args.target:
        return str(args.target)
    from memstore_server.config import parse_listen, read_config_file

    listen = os.environ.get("MEMSTORE_LISTEN")
    source = "MEMSTORE_LISTEN"
    if not listen and args.config:
        listen, source = read_config_file(args.config).get("listen"), f"{args.config}: listen"
    if not listen:
        return DEFAULT_TARGET
    address = parse_listen(str(listen), source)
    if address.path:
        return str(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)  # a wildcard: loopback
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"  # IPv6 in brackets


def _remote(args: argparse.Namespace, call: Callable[[Any], Any]) -> tuple[str, Any]:
    """``call(client)`` on the server ``args`` name, its failures as one line a person can act on."""
    import grpc

    from memstore.client import Client, RemoteError

    target = _stats_target(args)
    try:
        with Client(
            target, timeout=args.timeout, retries=0, token=args.token or os.environ.get("MEMSTORE_TOKEN")
        ) as client:
            return target, call(client)
    except RemoteError as exc:
        if exc.code == grpc.StatusCode.UNAVAILABLE:
            raise _Failure(
                f"nothing answers at {target}: is memstore serve running there? Name it as TARGET, or "
                "set MEMSTORE_LISTEN or --config as for serve"
            ) from None
        if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise _Failure(f"{target} did not answer within {args.timeout:g}s (--timeout)") from None
        if exc.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise _Failure(
                f"{target} refused the token ({exc.details}): pass a valid one with --token or MEMSTORE_TOKEN"
            ) from None
        raise _Failure(f"{target} answered {exc.code.name}: {exc.details}") from None


def _stats(args: argparse.Namespace) -> int:
    target, st = _remote(args, lambda client: client.stats())
    _print_stats(target, st)
    return 0


def _explain(args: argparse.Namespace) -> int:
    try:
        key = bytes.fromhex(args.key) if args.hex else args.key.encode()
    except ValueError:
        raise _Usage(f"--hex: {args.key!r} is not hexadecimal") from None
    _, got = _remote(args, lambda client: client.explain(key, ns=args.ns, identity=args.identity))
    if args.json:
        print(json.dumps(got.as_dict(), indent=2, sort_keys=True))
    else:
        print(f"{args.ns}/{args.key}: {got.message()}")
    return 0 if got.found else 3


def _print_stats(target: str, st: dict[str, Any]) -> None:
    cols = ["tier", "items", "bytes", "capacity", "hits", "misses", "demotions", "evictions"]
    cols += ["promotions", "checksum_fail", "ratio"]
    rows = []
    for t in ("hot", "warm", "cold", "pool"):
        if t not in st:
            continue  # a server without a pool
        s = st[t]
        counts = [
            s[k] for k in ("hits", "misses", "demotions", "evictions", "promotions", "checksum_failures")
        ]
        rows.append(
            [t, f"{s['items']:,}", human_size(s["bytes"]), human_size(s["capacity_bytes"])]
            + [f"{n:,}" for n in counts]
            + [f"{s['compression_ratio']:.2f}x" if s["compression_ratio"] else "-"]
        )
    if st["scope"]:
        print(f"memstore at {target}: tenant {st['scope']} (its own records only), policy {st['policy']}")
    else:
        print(
            f"memstore at {target}: {st['namespaces']} namespaces, policy {st['policy']}, "
            f"{st['pinned']} pinned, segment {st['hot_segment']}"
        )
    _table(cols, rows)
    if "pool" in st:
        print(f"pool: {st['pool']['published']:,} records published, {st['pool']['errors']:,} errors")
    if st["cold"].get("map_bytes"):
        print(
            f"cold capacity: what records may fill of its {human_size(st['cold']['map_bytes'])} LMDB map "
            "(--cold-bytes); the rest holds LMDB's B-tree and copy-on-write pages"
        )
    if st["tenants"]:
        print()
        trows = [
            [tenant]
            + [_used(u[f"{t}_bytes"], u[f"{t}_limit"]) for t in ("hot", "warm", "cold")]
            + [_used(u["records"], u["records_limit"], size=False)]
            for tenant, u in st["tenants"].items()
        ]
        _table(["tenant", "hot", "warm", "cold", "records"], trows)


def _table(cols: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def _used(n: int, limit: int, *, size: bool = True) -> str:
    shown = human_size(n) if size else f"{n:,}"
    if not limit:
        return shown
    return f"{shown} / {human_size(limit) if size else f'{limit:,}'}"


def _check(args: argparse.Namespace) -> int:
    """``check``: exit 0 if every record passes, 1 if anything is damaged; ``salvage``: 0 once copied."""
    from memstore import check

    if not os.path.isdir(args.data_dir):
        raise _Usage(f"{args.data_dir}: no such data dir")
    if args.command == "salvage":
        report = check.salvage(args.data_dir, args.new_dir, progress=sys.stderr.isatty())
        print(f"salvaged {report.good:,} records into {args.new_dir}; left out {len(report.bad):,} failing")
    else:
        report = check.scan(args.data_dir, progress=sys.stderr.isatty())
        print(
            f"{args.data_dir}: {len(report.namespaces)} namespaces, {report.good:,} records pass their checks"
        )
    if report.from_pages:
        print(
            "records read from the leaf pages (the file is damaged): one deleted before the damage may be "
            f"among them; {report.ambiguous:,} found with two different values are left out"
        )
    if report.problem:
        print(f"damaged: {report.problem}")
    if report.unreadable:
        print(f"damaged: {report.unreadable}")
    if report.bad:
        print(f"damaged: {len(report.bad):,} fail their checks, e.g. {report.bad[0]!r}")
    if args.command == "check" and report.damaged:
        print(f"to copy out what is intact: memstore salvage {args.data_dir} NEW_DIR")
    return 1 if args.command == "check" and report.damaged else 0


def _token(args: argparse.Namespace) -> int:
    import time

    from memstore_server import auth

    try:
        if args.token_command == "create":
            expires = auth.parse_duration(args.expires_in) if args.expires_in else None
            token = auth.create_token(args.file, args.tenant, args.role, expires)
            entry = auth.list_tokens(args.file)[-1]
            print(token)
            print(
                f"token {entry['id']} for tenant {args.tenant} ({args.role}) added to {args.file}; it is "
                f"shown only now (revoke: memstore token revoke --file {args.file} {entry['id']})",
                file=sys.stderr,
            )
        elif args.token_command == "list":
            rows = []
            for e in auth.list_tokens(args.file):
                expires = e.get("expires_at")
                state = "-" if expires is None else _when(expires)
                if expires is not None and expires <= time.time():
                    state += " (expired)"
                rows.append([e["id"], e["tenant"], e["role"], _when(e.get("created_at")), state])
            if rows:
                _table(["id", "tenant", "role", "created", "expires"], rows)
            else:
                print(f"{args.file}: no tokens")
        else:
            e = auth.revoke_token(args.file, args.id)
            print(f"revoked token {e['id']} of tenant {e['tenant']} ({e['role']}); servers refuse it now")
    except FileNotFoundError:
        raise _Usage(f"--file {args.file}: no such tokens file (memstore token create makes one)") from None
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    return 0


def _when(stamp: float | None) -> str:
    import time

    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))


class _Usage(Exception):
    """A usage error found after parsing: exit 2."""


class _Failure(Exception):
    """A runtime failure with its one-line message: exit 1."""


def _parser() -> argparse.ArgumentParser:
    from memstore_server.config import SETTINGS, format_size

    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # so a subcommand's parser does not reset one given before it
        help="show the traceback of a failure (or MEMSTORE_DEBUG=1)",
    )
    parser = _Parser(prog="memstore", description="The memory layer of LLM inference.", parents=[common])
    parser.add_argument("--version", action="version", version=f"memstore {_version()}")
    commands = "{serve,stats,explain,token,check,salvage}"
    sub = parser.add_subparsers(dest="command", required=True, metavar=commands)
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the gRPC server (settings: flags > MEMSTORE_* env > --config TOML)",
    )
    serve.add_argument("--config", help="TOML file with the settings below (top level or a [server] table)")
    for name, kind, default, help_ in SETTINGS:
        shown = format_size(default) if kind == "size" else default
        if name == "cold_bytes":
            shown = f"{shown} for a new store, else as it is"
        extra: dict[str, Any] = {"metavar": _METAVARS.get(kind, name.upper())}
        if kind == "bool":
            extra.update(nargs="?", const="true")  # a bare --allow-no-auth means true
        serve.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{help_} (default {shown})", **extra
        )
    token = sub.add_parser("token", parents=[common], help="manage bearer tokens (create, list, revoke)")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="{create,list,revoke}")
    create = token_sub.add_parser(
        "create",
        parents=[common],
        help="add a token to a tokens file and print it (the only time it is shown)",
    )
    create.add_argument("--tenant", required=True, help="the tenant the token acts for")
    create.add_argument("--role", required=True, choices=["read", "write", "admin"])
    create.add_argument("--file", required=True, help="tokens file (created with mode 0600)")
    create.add_argument("--expires-in", default=None, help="how long the token is valid, like 12h or 30d")
    listing = token_sub.add_parser(
        "list", parents=[common], help="the tokens of a file: id, tenant, role, expiry"
    )
    listing.add_argument("--file", required=True, help="tokens file")
    revoke = token_sub.add_parser(
        "revoke", parents=[common], help="remove a token; a running server refuses it within a second"
    )
    revoke.add_argument("--file", required=True, help="tokens file")
    revoke.add_argument("id", help="the token's id from memstore token list (or the token itself)")
    stats = sub.add_parser("stats", parents=[common], help="print a running server's per-tier table")
    stats.add_argument(
        "target",
        nargs="?",
        default=None,
        help=f"HOST:PORT or unix:PATH (default MEMSTORE_LISTEN, else --config's listen, {DEFAULT_TARGET})",
    )
    explain = sub.add_parser(
        "explain", parents=[common], help="why a key is or is not in a running server (exit 3: not)"
    )
    explain.add_argument("key", help="the key, as text (or hexadecimal with --hex)")
    explain.add_argument("--ns", default="default", help="its namespace (default: default)")
    explain.add_argument("--hex", action="store_true", help="KEY is hexadecimal (KV block keys)")
    explain.add_argument(
        "--identity", default=None, help="your identity as JSON: how the nearest namespace's differs"
    )
    explain.add_argument("--json", action="store_true", help="print the answer as JSON")
    explain.add_argument("--target", default=None, help="HOST:PORT or unix:PATH, found as for stats")
    for p in (stats, explain):
        p.add_argument("--config", help="the server's TOML file, to take its listen address")
        p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
        p.add_argument("--token", default=None, help="bearer token (or MEMSTORE_TOKEN)")
    check = sub.add_parser(
        "check", parents=[common], help="verify every record of a data dir (of a stopped server)"
    )
    check.add_argument("data_dir")
    salvage = sub.add_parser(
        "salvage", parents=[common], help="copy every record that passes its checks into a new data dir"
    )
    salvage.add_argument("data_dir")
    salvage.add_argument("new_dir")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memstore")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("MEMSTORE_DEBUG", "") not in ("", "0")
    prog = " ".join(["memstore", args.command, getattr(args, "token_command", "")]).strip()
    from memstore.errors import MemstoreError
    from memstore_server.app import ServeError
    from memstore_server.config import ConfigError

    try:
        if args.command in ("check", "salvage"):
            return _check(args)
        if args.command == "token":
            return _token(args)
        if args.command == "explain":
            return _explain(args)
        return _serve(args) if args.command == "serve" else _stats(args)
    except KeyboardInterrupt:
        return 130
    except (ConfigError, _Usage) as exc:
        if debug:
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except (_Failure, ServeError, MemstoreError, OSError, RuntimeError) as exc:
        if debug:
            raise
        print(f"{prog}: {_one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
