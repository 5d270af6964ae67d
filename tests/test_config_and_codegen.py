"""Settings precedence, README's settings table, and the committed generated protobuf code."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from memstore_server.config import SETTINGS, load_config, parse_size

ROOT = Path(__file__).resolve().parent.parent


def test_parse_size() -> None:
    assert parse_size("256MiB") == 256 << 20
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("1.5kb") == 1500
    assert parse_size(123) == 123
    for bad in ("", "12 parsecs", "-1", "MiB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_precedence_flags_over_env_over_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    toml = tmp_path / "memstore.toml"
    toml.write_text('[server]\nlisten = "127.0.0.1:7000"\nhot-bytes = "1MiB"\nworkers = 3\n')
    cfg = load_config({}, str(toml), env={})
    assert (cfg.listen, cfg.hot_bytes, cfg.workers) == ("127.0.0.1:7000", 1 << 20, 3)
    cfg = load_config({}, str(toml), env={"MEMSTORE_HOT_BYTES": "2MiB"})
    assert cfg.hot_bytes == 2 << 20 and cfg.listen == "127.0.0.1:7000"
    cfg = load_config({"hot_bytes": "3MiB"}, str(toml), env={"MEMSTORE_HOT_BYTES": "2MiB"})
    assert cfg.hot_bytes == 3 << 20
    toml.write_text("typo_setting = 1\n")
    with pytest.raises(ValueError, match="unknown setting"):
        load_config({}, str(toml), env={})
    with pytest.raises(ValueError, match="MEMSTORE_WORKERS"):
        load_config({}, None, env={"MEMSTORE_WORKERS": "many"})


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, _kind, _default, _help in SETTINGS:
        flag = f"--{name.replace('_', '-')}"
        assert f"`{flag}`" in readme and f"`MEMSTORE_{name.upper()}`" in readme, name


def test_committed_generated_code_is_fresh(tmp_path) -> None:  # type: ignore[no-untyped-def]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)], check=True)
    for name in ("memstore_pb2.py", "memstore_pb2.pyi"):
        fresh = tmp_path / "memstore" / "v1" / name
        committed = ROOT / "memstore" / "v1" / name
        assert filecmp.cmp(fresh, committed, shallow=False), (
            f"{committed} is stale: run python scripts/gen_proto.py"
        )
