"""README.md's Quickstart, run as a newcomer would: its setup-and-serve block in a copy of the tree
(a fresh virtual environment, ``pip install -e .``, ``memstore serve`` on its defaults), then the client,
library and agent-memory examples next to that server. The blocks are read from README.md here, so the
README and this test cannot drift apart."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.conftest import wait_serving

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = "127.0.0.1:50051"


def _section(readme: str, heading: str) -> str:
    start = readme.index(f"\n## {heading}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _copy_of_the_tree(dest: Path) -> None:
    """What a clone holds: the files git tracks (the working tree's versions of them)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def _port_free(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


def test_quickstart_and_examples_run_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    quick = _section(readme, "Quickstart")
    serve_block = next(b for b in _blocks(quick, "") if "memstore serve" in b).strip()
    client_example = _blocks(quick, "python")[0]
    library_example = _blocks(_section(readme, "Library (in-process)"), "python")[0]
    memory_example = _blocks(_section(readme, "Agent memory"), "python")[0]
    assert serve_block.startswith("python3 -m venv .venv") and serve_block.endswith("memstore serve")
    assert DEFAULT in client_example

    tree = tmp_path / "clone"
    _copy_of_the_tree(tree)
    # The examples name the default address; where another server holds it, this one runs elsewhere
    # and the examples are pointed there (the only change made to them).
    address = DEFAULT
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMSTORE_", "VIRTUAL_ENV"))}
    if not _port_free(DEFAULT):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{s.getsockname()[1]}"
        env["MEMSTORE_LISTEN"] = address
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            ["bash", "-c", serve_block],
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_serving(address, timeout=600, proc=server)  # the install comes first
        python = str(tree / ".venv" / "bin" / "python3")
        for name, example, expect in (
            ("client", client_example, ["(2, 8, 128, 64) None [b'likes tea']", "tiers: {'hot': 2,"]),
            ("library", library_example, ["b'hello' None"]),
            ("agent memory", memory_example, ["[{'likes': 'tea'}, {'likes': 'coffee'}]"]),
        ):
            code = example.replace(DEFAULT, address) if "Client(" in example else example
            if address != DEFAULT and "Client()" in code:
                code = code.replace("Client()", f"Client({address!r})")
            run = subprocess.run([python, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, f"{name} example: {run.stderr[-3000:]}"
            for line in expect:
                assert line in run.stdout, f"{name} example printed {run.stdout!r}"
        assert (tree / "memstore-data").is_dir() and (tree / "my-store").is_dir()
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the Quickstart says
        code = server.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert "stopped" in log.read_text()
