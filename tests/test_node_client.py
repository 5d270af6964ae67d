"""A Node client built from the proto and docs/kv-keys.md alone (tests/node/client.mjs, with
@grpc/grpc-js and @grpc/proto-loader, which scripts/test.sh installs) against a real ``memstore
serve``; then the KV blocks it stored under keys it computed itself are read back through Python's
own implementation of the spec."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from memstore import Client
from memstore.kv import KVCache, KVIdentity
from tests.conftest import serve_command, served

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_a_node_client_from_the_proto_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(
            "node and tests/node's packages are needed: cd tests/node && npm ci (scripts/test.sh does)"
        )
    cmd, target = serve_command(tmp_path)
    with served(cmd, target):
        run = subprocess.run(
            [node, str(NODE_DIR / "client.mjs"), target], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(run.stdout.strip().splitlines()[-1])
        assert report["store"] == "ok" and report["memory"] == "ok"
        kv = report["kv"]
        ident = KVIdentity(**kv["fields"])
        assert ident.namespace == kv["namespace"]
        with Client(target, local="never") as client:
            cache = KVCache(client, ident, shared=False)
            hit = cache.lookup(kv["tokens"])
            assert hit.blocks == kv["stored_blocks"] == 2
            blocks = cache.get_blocks(kv["tokens"], 2)
            for i, block in enumerate(blocks):
                assert block is not None and block.shape == ident.block_shape
                np.testing.assert_array_equal(
                    block.reshape(-1), 100 * (i + 1) + np.arange(12, dtype=np.float32)
                )
