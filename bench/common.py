"""Shared pieces of the benchmarks: timing, result files, tables and plots."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"  # committed: written with --save only
SCRATCH = Path(tempfile.gettempdir()) / "memstore-bench"
KiB, MiB = 1 << 10, 1 << 20


def human_size(n: int) -> str:
    return f"{n // MiB}MiB" if n >= MiB else f"{n // KiB}KiB"


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "hostname": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def commit() -> str:
    if os.environ.get("MEMSTORE_COMMIT"):  # machines that get the tree without its git history
        return os.environ["MEMSTORE_COMMIT"]
    try:
        here = Path(__file__).parent
        git = ["git", "-C", str(here)]
        out = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(  # results files themselves do not make the code dirty
            [
                *git,
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":/",
                ":(top,exclude)bench/results",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def rounds(fn: Callable[[], int], *, repeat: int, min_time: float = 0.0) -> list[float]:
    """Run fn (which returns the bytes or items it handled) ``repeat`` times; each round's rate per second."""
    rates = []
    start = time.perf_counter()
    i = 0
    while i < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        amount = fn()
        rates.append(amount / (time.perf_counter() - t0))
        i += 1
    return rates


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers (json.dumps would write
    ``NaN``, which other readers refuse). A figure a run could not measure is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_result(
    name: str,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    *,
    args: Any,
    config: dict[str, Any],
) -> Path:
    """Write the result JSON: to ``--json PATH``; with ``--save`` to ``bench/results/NAME.json``, the
    committed results; otherwise to a scratch copy under the temporary directory."""
    now = dt.datetime.now(dt.UTC)
    doc = {
        "benchmark": name,
        "date": now.isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "config": config,
        "summary": summary,
        "rows": rows,
    }
    path = Path(args.json) if args.json else (RESULTS if args.save else SCRATCH) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(strict_json(doc), indent=2, allow_nan=False) + "\n")
    if not args.json and not args.save:
        print(f"a scratch copy: --save writes the committed bench/results/{name}.json instead")
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
