"""One runner for every benchmark: ``python bench/run.py NAME [--quick] [--json PATH]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    benches = [
        ("tiers", "put/get GB/s per tier next to memcpy and py-lmdb"),
        ("service", "the gRPC service next to Redis: GB/s, ops/s, batched small lookups"),
        ("transport", "same-host transfer: memcpy, local path, gRPC, Redis; GPU restore where CUDA is"),
        ("ttft", "prefill against loading the cached prefix through memstore (CPU, or CUDA shapes)"),
        ("codecs", "KV compression: memstore's codecs against zstd, lz4, blosc2 and ZipNN on real K/V"),
        ("replay", "replay a Mooncake trace through every eviction policy and OPT: hit ratios, cold writes"),
        ("memory", "agent memory: put and search at 10k and 100k records against numpy and LangGraph"),
    ]
    for name, help_ in benches:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--quick", action="store_true", help="smaller data, fewer rounds (under a minute)")
        p.add_argument("--json", help="where to write the JSON result (default bench/results/NAME.json)")
        if name == "replay":
            from bench import replay

            replay.add_arguments(p)
        if name == "transport":
            p.add_argument(
                "--no-redis", action="store_true", help="skip the Redis peer (machines without it)"
            )
    args = parser.parse_args(argv)
    import importlib

    importlib.import_module(f"bench.{args.name}").run(args)


if __name__ == "__main__":
    main()
