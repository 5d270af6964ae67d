"""Bearer tokens, roles and tenant isolation on a real server."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from memstore import AsyncClient, Client, RemoteError, TieredStore
from memstore.hot import shm_dir
from memstore_server import create_server
from memstore_server.auth import TokensFile, create_token
from tests.conftest import MiB


@pytest.fixture
def secured(tmp_path):  # type: ignore[no-untyped-def]
    tokens = str(tmp_path / "tokens.jsonl")
    t = {
        name: create_token(tokens, tenant, role)
        for name, tenant, role in [
            ("a_admin", "acme", "admin"),
            ("a_write", "acme", "write"),
            ("a_read", "acme", "read"),
            ("b_write", "bolt", "write"),
        ]
    }
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB, prefault=False
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock", auth_tokens=tokens)
    yield f"unix:{tmp_path}/m.sock", t, tokens, store
    running.stop(1)
    store.close()


def _code(fn) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(RemoteError) as info:
        fn()
    return info.value.code


def test_tokens_file_holds_hashes_only(secured) -> None:  # type: ignore[no-untyped-def]
    _, t, tokens, _ = secured
    with open(tokens) as f:
        text = f.read()
    assert all(tok not in text for tok in t.values())
    assert {json.loads(line)["tenant"] for line in text.splitlines()} == {"acme", "bolt"}
    assert stat.S_IMODE(os.stat(tokens).st_mode) == 0o600


def test_missing_bad_and_weak_credentials(secured) -> None:  # type: ignore[no-untyped-def]
    target, t, _, _ = secured
    with Client(target, local="never") as anon:
        assert _code(lambda: anon.get(b"k")) == grpc.StatusCode.UNAUTHENTICATED
    with Client(target, local="never", token="ms_not-a-real-token") as bad:
        assert _code(lambda: bad.put(b"k", b"v")) == grpc.StatusCode.UNAUTHENTICATED
    with Client(target, local="never", token=t["a_read"]) as reader:
        assert reader.get(b"k") is None  # reading is allowed
        assert _code(lambda: reader.put(b"k", b"v")) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: reader.memory.put(("n",), "k", 1)) == grpc.StatusCode.PERMISSION_DENIED
    with Client(target, local="never", token=t["a_write"]) as writer:
        writer.create_namespace("scratch")
        assert _code(lambda: writer.delete_namespace("scratch")) == grpc.StatusCode.PERMISSION_DENIED
    with Client(target, local="never", token=t["a_admin"]) as admin:
        assert admin.delete_namespace("scratch") == 0
    with grpc.insecure_channel(target) as ch:  # health stays open to probes
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_tenants_never_see_each_other(secured, seed) -> None:  # type: ignore[no-untyped-def]
    target, t, _, store = secured
    rng = np.random.default_rng(seed)
    keys = [b"k%d" % i for i in range(1000)]
    va = {k: rng.bytes(32) for k in keys}
    vb = {k: rng.bytes(32) for k in keys}
    with Client(target, token=t["a_write"]) as a, Client(target, token=t["b_write"]) as b:
        assert not a.local and not b.local  # the shared arena is for admins only when tokens are on
        arena = os.path.join(shm_dir(), store.stats()["hot_segment"])
        assert stat.S_IMODE(os.stat(arena).st_mode) == 0o600  # and no other user can map it
        a.put_many(va)
        b.put_many(vb)
        probes = rng.choice(len(keys), size=10_000)
        got_a = a.get_many([keys[i] for i in probes])
        got_b = b.get_many([keys[i] for i in probes])
        cross = sum(
            ga == vb[keys[i]] or gb == va[keys[i]] for i, ga, gb in zip(probes, got_a, got_b, strict=True)
        )
        same = sum(
            ga == va[keys[i]] and gb == vb[keys[i]] for i, ga, gb in zip(probes, got_a, got_b, strict=True)
        )
        assert cross == 0 and same == 10_000
        # the same namespace name and memory namespace are separate per tenant
        a.create_namespace("shared")
        a.put(b"x", b"from acme", ns="shared")
        assert _code(lambda: b.get(b"x", ns="shared")) == grpc.StatusCode.NOT_FOUND
        a.memory.put(("u",), "fact", {"who": "acme"})
        assert b.memory.get(("u",), "fact") is None
        assert b.memory.search((), query="acme") == [] and a.memory.list_namespaces() == [("u",)]
    assert store.get(b"k0") is None  # nothing landed in the unauthenticated default tenant


def test_async_client_with_a_token(secured) -> None:  # type: ignore[no-untyped-def]
    target, t, _, _ = secured

    async def main() -> None:
        async with AsyncClient(target, token=t["a_write"]) as c:
            await c.put(b"ak", b"av")
            assert await c.get(b"ak") == b"av"
        async with AsyncClient(target) as anon:
            with pytest.raises(RemoteError) as info:
                await anon.get(b"ak")
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED

    asyncio.run(main())


def test_token_command_and_non_loopback_refusal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tokens = str(tmp_path / "t.jsonl")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "memstore.cli",
            "token",
            "create",
            "--tenant",
            "acme",
            "--role",
            "read",
            "--file",
            tokens,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    with open(tokens) as f:
        assert out.stdout.strip().startswith("ms_") and "acme" in f.read()
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "memstore.cli",
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "without authentication" in refused.stderr


def test_expired_revoked_and_added_tokens_without_a_restart(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(TokensFile, "CHECK_EVERY", 0.0)  # look at the file on every call
    tokens = str(tmp_path / "tokens.jsonl")
    keep = create_token(tokens, "acme", "write", expires_in=3600)
    lapsed = create_token(tokens, "acme", "write", expires_in=0.001)
    revoked = create_token(tokens, "bolt", "write")
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=4 * MiB, warm_bytes=4 * MiB, cold_bytes=32 * MiB, prefault=False
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock", auth_tokens=tokens)
    target = f"unix:{tmp_path}/m.sock"
    try:
        with Client(target, local="never", token=keep) as c:
            c.put(b"k", b"v")
        with Client(target, local="never", token=lapsed, retries=0) as c:
            assert _code(lambda: c.get(b"k")) == grpc.StatusCode.UNAUTHENTICATED
        with Client(target, local="never", token=revoked, retries=0) as c:
            c.put(b"k", b"bolt's")
            with open(tokens) as f:
                lines = [line for line in f if '"bolt"' not in line]
            with open(tokens, "w") as f:
                f.writelines(lines)
            assert _code(lambda: c.get(b"k")) == grpc.StatusCode.UNAUTHENTICATED  # revoked, no restart
        added = create_token(tokens, "bolt", "read")
        with Client(target, local="never", token=added) as c:
            assert c.get(b"k") == b"bolt's"  # same tenant, new token
        with open(tokens, "a") as f:
            f.write("{half an edit\n")  # a broken file keeps the last good tokens
        with Client(target, local="never", token=keep) as c:
            assert c.get(b"k") == b"v"
    finally:
        running.stop(1)
        store.close()
    command = ["token", "create", "--tenant", "acme", "--role", "read", "--file", tokens + "2"]
    out = subprocess.run(
        [sys.executable, "-m", "memstore.cli", *command, "--expires-in", "1d"],
        capture_output=True,
        text=True,
        check=True,
    )
    with open(tokens + "2") as f:
        entry = json.loads(f.read())
    assert out.stdout.startswith("ms_") and abs(entry["expires_at"] - time.time() - 86400) < 600
