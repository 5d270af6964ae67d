"""LangGraph's own published store tests against ``MemstoreStore``: the test files of the
``langgraph-checkpoint-sqlite`` and ``langgraph-checkpoint`` sdists, downloaded from PyPI as published
and run unchanged in their own tree, with only the store class their fixtures build swapped
(``tests/langgraph_peers/swap.py``). Tests of SQLite's own internals do not apply and are deselected,
each with its reason; of the rest at least 95% must pass."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "langgraph-peers"
SUITES = {
    "langgraph-checkpoint-sqlite==3.1.2": [
        "tests/test_store.py",
        "tests/test_async_store.py",
        "tests/test_ttl.py",
    ],
    "langgraph-checkpoint==4.3.2": ["tests/test_store.py"],
}
SQLITE = "langgraph-checkpoint-sqlite==3.1.2"
NOT_APPLICABLE = {  # per suite: test id -> why it does not apply to memstore
    SQLITE: {
        "tests/test_store.py::test_nonnull_migrations": "checks SqliteStore.MIGRATIONS (SQLite's schema)",
        "tests/test_store.py::test_list_namespaces_prefix_uses_indexable_condition": "checks the SQL text "
        "BaseSqliteStore generates",
        "tests/test_store.py::test_escape_glob_literal": "tests a helper of SQLite's GLOB matching",
        "tests/test_store.py::test_namespace_match_pattern": "tests a helper of SQLite's GLOB matching",
        "tests/test_store.py::test_vector_store_initialization": "ends by reading sqlite_master through the "
        "store's SQLite connection",
        "tests/test_async_store.py::test_no_running_loop": "AsyncSqliteStore's sync methods cannot run on "
        "its event loop's thread and raise; MemstoreStore's sync methods need no event loop and work there",
    },
}
PASS_SHARE = 0.95


def _tree(spec: str) -> Path:
    """The sdist of ``spec`` from PyPI, unpacked once into .cache/."""
    name, version = spec.split("==")
    dest = CACHE / f"{name}-{version}"
    if (dest / "tests").is_dir():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            spec,
            "-d",
            str(CACHE),
        ],
        check=True,
        timeout=600,
    )
    sdist = next(CACHE.glob(f"{name.replace('-', '_')}-{version}.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(CACHE, filter="data")
    (CACHE / f"{name.replace('-', '_')}-{version}").rename(dest)
    return dest


def _run(spec: str, tmp: Path) -> dict[str, str]:
    """Run the suite's files; each test's outcome by id: passed, failed, skipped."""
    tree = _tree(spec)
    report = tmp / "junit.xml"
    deselect = [a for t in NOT_APPLICABLE.get(spec, {}) for a in ("--deselect", t)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "langgraph_peers")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "swap",
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "-o",
            "addopts=",
            "-o",
            "asyncio_mode=auto",
            *deselect,
            *SUITES[spec],
        ],
        cwd=tree,
        env=env,
        timeout=1200,
        capture_output=True,
    )
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[name] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        )
    return outcomes


@pytest.mark.parametrize("spec", sorted(SUITES))
def test_langgraph_published_store_tests(spec: str, tmp_path: Path) -> None:
    outcomes = _run(spec, tmp_path)
    ran = {k: v for k, v in outcomes.items() if v != "skipped"}
    failed = sorted(k for k, v in ran.items() if v == "failed")
    passed = len(ran) - len(failed)
    print(f"{spec}: {passed} of {len(ran)} passed; failed: {failed}")
    assert len(ran) >= 100
    assert passed >= PASS_SHARE * len(ran), failed
