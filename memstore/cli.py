"""The ``memstore`` command: ``serve``, ``stats``, ``token create``, ``check`` and ``salvage``."""

from __future__ import annotations

import argparse
import logging
import sys


def _serve(args: argparse.Namespace) -> int:
    from memstore_server.app import serve
    from memstore_server.config import SETTINGS, load_config

    flags = {name: getattr(args, name, None) for name, *_ in SETTINGS}
    config = load_config(flags, args.config)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return serve(config)


def _stats(args: argparse.Namespace) -> int:
    import os

    from memstore.client import Client

    with Client(
        args.target, timeout=args.timeout, token=args.token or os.environ.get("MEMSTORE_TOKEN")
    ) as client:
        st = client.stats()
    cols = [
        "tier",
        "items",
        "bytes",
        "capacity",
        "hits",
        "misses",
        "demotions",
        "evictions",
        "promotions",
        "checksum_fail",
        "ratio",
    ]
    rows = []
    for t in ("hot", "warm", "cold"):
        s = st[t]
        rows.append(
            [
                t,
                f"{s['items']:,}",
                _size(s["bytes"]),
                _size(s["capacity_bytes"]),
                f"{s['hits']:,}",
                f"{s['misses']:,}",
                f"{s['demotions']:,}",
                f"{s['evictions']:,}",
                f"{s['promotions']:,}",
                f"{s['checksum_failures']:,}",
                f"{s['compression_ratio']:.2f}x" if s["compression_ratio"] else "-",
            ]
        )
    if st["scope"]:
        print(
            f"memstore at {args.target}: tenant {st['scope']} (its own records only), policy {st['policy']}"
        )
    else:
        print(
            f"memstore at {args.target}: {st['namespaces']} namespaces, policy {st['policy']}, "
            f"{st['pinned']} pinned, segment {st['hot_segment']}"
        )
    _table(cols, rows)
    if st["tenants"]:
        print()
        tcols = ["tenant", "hot", "warm", "cold", "records"]
        trows = []
        for tenant, u in st["tenants"].items():
            trows.append(
                [tenant]
                + [_used(u[f"{t}_bytes"], u[f"{t}_limit"]) for t in ("hot", "warm", "cold")]
                + [_used(u["records"], u["records_limit"], size=False)]
            )
        _table(tcols, trows)
    return 0


def _table(cols: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def _used(n: int, limit: int, *, size: bool = True) -> str:
    shown = _size(n) if size else f"{n:,}"
    if not limit:
        return shown
    return f"{shown} / {_size(limit) if size else f'{limit:,}'}"


def _check(args: argparse.Namespace) -> int:
    """``check``: exit 0 if every record passes, 1 if anything is damaged; ``salvage``: 0 once copied."""
    from memstore import check

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


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n}B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memstore", description="The memory layer of LLM inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="run the gRPC server (settings: flags > MEMSTORE_* env > --config TOML)"
    )
    serve.add_argument("--config", help="TOML file with the settings below (top level or a [server] table)")
    from memstore_server.config import SETTINGS

    for name, kind, default, help_ in SETTINGS:
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            help=f"{help_} (default {default}{'; sizes like 256MiB' if kind == 'size' else ''})",
        )
    token = sub.add_parser("token", help="manage bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser(
        "create", help="add a token to a tokens file and print it (only time shown)"
    )
    create.add_argument("--tenant", required=True, help="the tenant the token acts for")
    create.add_argument("--role", required=True, choices=["read", "write", "admin"])
    create.add_argument("--file", required=True, help="tokens file (created with mode 0600)")
    create.add_argument("--expires-in", default=None, help="how long the token is valid, like 12h or 30d")
    stats = sub.add_parser("stats", help="print a running server's per-tier table")
    stats.add_argument("target", nargs="?", default="127.0.0.1:50051", help="HOST:PORT or unix:PATH")
    stats.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    stats.add_argument("--token", default=None, help="bearer token (or MEMSTORE_TOKEN)")
    check = sub.add_parser("check", help="verify every record of a data dir (of a stopped server)")
    check.add_argument("data_dir")
    salvage = sub.add_parser("salvage", help="copy every record that passes its checks into a new data dir")
    salvage.add_argument("data_dir")
    salvage.add_argument("new_dir")
    args = parser.parse_args(argv)
    from memstore.errors import MemstoreError

    try:
        if args.command in ("check", "salvage"):
            return _check(args)
        if args.command == "token":
            from memstore_server.auth import create_token, parse_duration

            expires = parse_duration(args.expires_in) if args.expires_in else None
            print(create_token(args.file, args.tenant, args.role, expires))
            return 0
        return _serve(args) if args.command == "serve" else _stats(args)
    except (ValueError, OSError, MemstoreError) as exc:
        print(f"memstore: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
