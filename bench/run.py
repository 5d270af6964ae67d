"""One runner for every benchmark: ``python bench/run.py NAME [--quick] [--save | --json PATH]``.

Results go to a scratch copy unless ``--save`` (the committed ``bench/results/``) or ``--json`` says where."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> None:
    missing = [m for m in ("tqdm", "matplotlib", "psutil") if not _installed(m)]
    if missing:
        sys.exit(
            f"bench/run.py: {', '.join(missing)} missing: the benchmarks need the bench extra, "
            "python3 -m pip install -e '.[bench]'"
        )
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    benches = [
        ("tiers", "put/get GB/s per tier next to memcpy and py-lmdb"),
        ("service", "the data plane and gRPC next to Redis and Mooncake Store: GB/s, ops/s, batches"),
        ("transport", "same-host transfer: memcpy, local path, gRPC, Redis; GPU restore where CUDA is"),
        ("ttft", "prefill against loading the cached prefix through memstore (CPU, or CUDA shapes)"),
        ("codecs", "KV compression: memstore's codecs against zstd, lz4, blosc2 and ZipNN on real K/V"),
        ("replay", "replay a Mooncake trace through every eviction policy and OPT: hit ratios, cold writes"),
        ("pool", "the shared pool on a Redis Cluster: a second host's fetches against redis-py reading it"),
        ("breakdown", "where a 1 MiB value's time goes: copies, checksum, store steps, a call's fixed cost"),
        ("memory", "agent memory: put and search at 10k and 100k records against numpy and LangGraph"),
        ("retention", "a tier's victim choice when every block is in an open session, by policy and size"),
    ]
    for name, help_ in benches:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--quick", action="store_true", help="smaller data, fewer rounds (under a minute)")
        p.add_argument(
            "--save",
            action="store_true",
            help="write the result to bench/results/ (the committed figures); otherwise to a scratch copy",
        )
        p.add_argument("--json", help="write the JSON result (and its PNG) here instead")
        if name == "replay":
            from bench import replay

            replay.add_arguments(p)
        if name == "transport":
            p.add_argument(
                "--no-redis", action="store_true", help="skip the Redis peer (machines without it)"
            )
    args = parser.parse_args(argv)
    importlib.import_module(f"bench.{args.name}").run(args)


if __name__ == "__main__":
    main()
