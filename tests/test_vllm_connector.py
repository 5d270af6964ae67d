"""vLLM on CPU, end to end, with memstore as its KV connector (``memstore.adapters.vllm``).

vLLM runs in its own virtual environment (it pins its own torch and transformers): ``.venv-vllm`` in the
repository (``scripts/test.sh`` builds it), or the python named by ``MEMSTORE_VLLM_PYTHON``. Without one
the test fails when ``MEMSTORE_REQUIRE_VLLM=1`` (as ``scripts/test.sh`` and so CI run it), and is skipped
with a loud message otherwise (a quick local run).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from memstore import Client
from tests.conftest import serve_command, served, wait_published
from tests.redis_cluster import redis_cluster

ROOT = Path(__file__).resolve().parent.parent


def _vllm_python() -> str | None:
    candidate = os.environ.get("MEMSTORE_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not Path(candidate).exists():
        return None
    ok = subprocess.run(
        [candidate, "-c", "import vllm, memstore.adapters.vllm"], capture_output=True, timeout=300
    )
    return candidate if ok.returncode == 0 else None


def _require_vllm() -> str:
    python = _vllm_python()
    if python is None:
        msg = (
            "SKIPPING the vLLM end-to-end test: no vLLM environment with memstore (build .venv-vllm as "
            ".ci/run does, or set MEMSTORE_VLLM_PYTHON)"
        )
        if os.environ.get("MEMSTORE_REQUIRE_VLLM") == "1":
            pytest.fail(msg.replace("SKIPPING", "CANNOT RUN"))
        print(f"\n*** {msg} ***", file=sys.stderr)
        warnings.warn(msg, stacklevel=1)
        pytest.skip(msg)
    return python


def _script(python: str, name: str, *args: object) -> None:
    """Runs one of tests/vllm/ to its end. Its output goes to files and it leads its own process group:
    vLLM's engine process, when the script dies before shutting it down, keeps pipes open and would
    hide the script's exit (and its error) until a timeout; it is killed with the group here."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [python, str(ROOT / "tests" / "vllm" / name), *map(str, args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={"VLLM_ENGINE_READY_TIMEOUT_S": "300", **os.environ, "VLLM_HOST_IP": "127.0.0.1"},
        )
        try:
            code = proc.wait(timeout=900)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        assert code == 0, f"{name} exited {code}:\n" + out.read()[-8000:]


@pytest.fixture(scope="module")
def result(tmp_path_factory):  # type: ignore[no-untyped-def]
    python = _require_vllm()
    out = tmp_path_factory.mktemp("vllm") / "result.json"
    _script(python, "e2e.py", out)
    return json.loads(out.read_text())


def test_repeated_prompt_loads_its_blocks_and_gives_identical_output(result) -> None:  # type: ignore[no-untyped-def]
    (tokens_1, logprobs_1), (tokens_2, logprobs_2) = result["first"], result["second"]
    hits = [e["hit_blocks"] for e in result["lookups"]]
    assert hits[0] == 0 and hits[1] == result["prompt_tokens"] // result["block_size"] == 2
    assert result["stores"][0]["blocks"] == 2  # the first run stored its full blocks
    assert result["loads"][0]["blocks"] == 2  # the second run loaded them (vLLM's own prefix cache is off)
    assert tokens_1 == tokens_2
    assert np.allclose(logprobs_1, logprobs_2, rtol=0, atol=1e-5)


def test_a_prompt_sharing_only_the_first_block_hits_exactly_that_block(result) -> None:  # type: ignore[no-untyped-def]
    """One block loaded, the rest computed: the same output as the run that computed everything."""
    assert result["lookups"][2]["hit_blocks"] == 1
    assert result["loads"][1]["blocks"] == 1
    assert result["reference_hit_blocks"] == 0
    (tokens, logprobs), (ref_tokens, ref_logprobs) = result["shared"], result["shared_reference"]
    assert tokens == ref_tokens
    assert np.allclose(logprobs, ref_logprobs, rtol=0, atol=1e-4)


def test_the_loaded_kv_is_used_as_it_is(result) -> None:  # type: ignore[no-untyped-def]
    """Prompt C's blocks stored under prompt A's keys: A answers exactly as C's first 256 tokens with A's
    tail, computed from scratch. A connector that loaded nothing, zeros or the wrong blocks differs."""
    assert result["swapped_reference_hit_blocks"] == 0
    (tokens, logprobs), (ref_tokens, ref_logprobs) = result["swapped"], result["swapped_reference"]
    assert result["swapped"] != result["first"]
    assert tokens == ref_tokens
    assert np.allclose(logprobs, ref_logprobs, rtol=0, atol=1e-4)


def test_retention_hints_from_kv_transfer_params(result) -> None:  # type: ignore[no-untyped-def]
    """A request's session reaches memstore with its stores: ending it releases its two blocks; a
    request that asks the connector to end its session has it ended when it finishes."""
    assert result["hinted_store"]["hinted"] is True and result["hinted_store"]["blocks"] == 2
    assert result["released"] == 2
    assert [e["released"] for e in result["ended"]] == [2]
    assert result["released_again"] == 0  # already ended by the connector
    assert [e["released"] for e in result["paused"]] == [2]  # its two blocks wait for its next turn
    assert [e["resume_in"] for e in result["paused"]] == [45]  # with the estimate the request gave
    assert result["paused_again"] == 0  # already waiting


@pytest.fixture(scope="module")
def disaggregated(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A producer vLLM on server A and a consumer vLLM on server B, both servers on one Redis Cluster
    of three primaries; the consumer starts once A has published what the producer stored."""
    python = _require_vllm()
    work = tmp_path_factory.mktemp("disagg")
    with redis_cluster(work / "redis") as cluster:
        (work / "a").mkdir(), (work / "b").mkdir()
        (cmd_a, a), (cmd_b, b) = (serve_command(work / n, "--pool", cluster.url) for n in ("a", "b"))
        with served(cmd_a, a), served(cmd_b, b):
            _script(python, "disagg.py", "producer", a, work / "model", work / "producer.json")
            producer = json.loads((work / "producer.json").read_text())
            stored = sum(e["blocks"] for e in producer["events"] if e["event"] == "store")
            with Client(a) as client:
                wait_published(client, stored, timeout=60)
            _script(python, "disagg.py", "consumer", b, work / "model", work / "consumer.json")
            consumer = json.loads((work / "consumer.json").read_text())
            with Client(b) as client:
                pool_b = client.stats()["pool"]
    return {"producer": producer, "consumer": consumer, "stored": stored, "pool_b": pool_b}


def _of(side: dict, event: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in side["events"] if e["event"] == event]


def test_a_producer_only_stores_and_a_consumer_only_loads(disaggregated) -> None:  # type: ignore[no-untyped-def]
    producer, consumer = disaggregated["producer"], disaggregated["consumer"]
    block = producer["block_size"]
    full = {name: n // block for name, n in producer["prompt_tokens"].items()}
    assert full == {"long": 4, "other": 2}
    assert _of(producer, "lookup") == [] and _of(producer, "load") == []
    assert [e["blocks"] for e in _of(producer, "store")] == [full["long"], full["other"]]
    assert _of(consumer, "store") == []
    # every full block the producer computed is found through server B, from the pool
    hits = [e["hit_blocks"] for e in _of(consumer, "lookup")]
    assert hits == [full["long"], full["other"], 0, 0]  # the fresh prompt twice: the consumer stored nothing
    assert [e["blocks"] for e in _of(consumer, "load")] == [full["long"], full["other"]]
    assert disaggregated["pool_b"]["hits"] >= disaggregated["stored"] == 6


def test_the_consumer_answers_as_the_producer_computed_from_scratch(disaggregated) -> None:  # type: ignore[no-untyped-def]
    """The producer never loads (and vLLM's prefix cache is off): its runs are runs with no cache."""
    for name in ("long", "other"):
        (tokens, logprobs) = disaggregated["consumer"]["runs"][name]
        (ref_tokens, ref_logprobs) = disaggregated["producer"]["runs"][name]
        assert tokens == ref_tokens
        assert np.allclose(logprobs, ref_logprobs, rtol=0, atol=1e-4)
