"""The LangGraph adapter with the real langgraph package: a graph node reads and writes memory through it."""

from __future__ import annotations

from typing import TypedDict

import pytest

from memstore import Client, TieredStore
from memstore_server import create_server
from tests.conftest import MiB

langgraph = pytest.importorskip("langgraph", reason="the LangGraph adapter needs langgraph")
from langchain_core.embeddings import Embeddings  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.store.base import BaseStore  # noqa: E402

from memstore.adapters.langgraph import MemstoreStore  # noqa: E402


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    ts = TieredStore(
        str(tmp_path / "s"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB, prefault=False
    )
    running = create_server(ts, f"unix:{tmp_path}/m.sock")
    client = Client(f"unix:{tmp_path}/m.sock")
    yield MemstoreStore(client.memory)
    client.close()
    running.stop(1)
    ts.close()


def test_basestore_operations(store) -> None:  # type: ignore[no-untyped-def]
    ns = ("users", "u1", "prefs")
    store.put(ns, "drink", {"kind": "tea", "cups": 3})
    store.put(ns, "food", {"kind": "pasta", "cups": 0})
    store.put(("users", "u2", "prefs"), "drink", {"kind": "coffee", "cups": 5})
    item = store.get(ns, "drink")
    assert item.value == {"kind": "tea", "cups": 3} and item.key == "drink" and item.namespace == ns
    assert item.created_at <= item.updated_at
    assert store.get(ns, "missing") is None
    found = store.search(("users",), filter={"cups": {"$gte": 3}})
    assert sorted(i.value["kind"] for i in found) == ["coffee", "tea"]
    # without an index a query does not narrow the results (as LangGraph's stores without one)
    assert sorted(i.key for i in store.search(("users", "u1"), query="pasta")) == ["drink", "food"]
    assert store.list_namespaces(prefix=("users",)) == [("users", "u1", "prefs"), ("users", "u2", "prefs")]
    assert store.list_namespaces(suffix=("prefs",), max_depth=2) == [("users", "u1"), ("users", "u2")]
    assert store.list_namespaces(prefix=("users", "*", "prefs"), limit=1) == [("users", "u1", "prefs")]
    store.delete(ns, "drink")
    assert store.get(ns, "drink") is None
    results = store.batch([])
    assert results == []


def test_a_graph_node_remembers_through_the_store(store) -> None:  # type: ignore[no-untyped-def]
    class State(TypedDict):
        user: str
        message: str
        reply: str

    def remember(state: State, *, store: BaseStore) -> dict[str, str]:
        ns = ("memories", state["user"])
        seen = store.get(ns, "count")
        count = (seen.value["n"] if seen else 0) + 1
        store.put(ns, "count", {"n": count})
        store.put(ns, f"msg-{count}", {"text": state["message"]})
        return {"reply": f"message {count} from {state['user']}"}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    graph = builder.compile(store=store)
    assert graph.invoke({"user": "ada", "message": "hi", "reply": ""})["reply"] == "message 1 from ada"
    assert graph.invoke({"user": "ada", "message": "again", "reply": ""})["reply"] == "message 2 from ada"
    texts = sorted(i.value.get("text", "") for i in store.search(("memories", "ada")))
    assert texts == ["", "again", "hi"]


def test_async_batch(store) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    async def main() -> None:
        await store.aput(("a",), "k", {"v": 1})
        assert (await store.aget(("a",), "k")).value == {"v": 1}

    asyncio.run(main())


class Letters(Embeddings):
    """An embedding of a text by its letter counts: texts sharing letters are close."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return [float(text.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz"]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self.embed_query(text)


def test_index_fields_and_index_false(store) -> None:  # type: ignore[no-untyped-def]
    indexed = MemstoreStore(store.memory, index={"dims": 26, "embed": Letters(), "fields": ["text"]})
    indexed.put(("docs",), "a", {"text": "zzzz zebra", "other": "aaaa"})
    indexed.put(("docs",), "b", {"text": "aardvark", "other": "zzzz"})
    indexed.put(("docs",), "c", {"text": "zzzz"}, index=False)  # stored, never embedded
    found = indexed.search(("docs",), query="zz")
    assert [i.key for i in found] == ["a", "b", "c"]  # "c" has no vector: it comes last, unscored
    assert found[0].score is not None and found[0].score > found[1].score and found[2].score is None
    # a put's own fields override the config's
    indexed.put(("docs",), "d", {"text": "nothing", "other": "zzzzzz"}, index=["other"])
    assert indexed.search(("docs",), query="zzz", limit=1)[0].key == "d"


def test_a_bad_namespace_fails_the_batch_before_any_write(store) -> None:  # type: ignore[no-untyped-def]
    from langgraph.store.base import InvalidNamespaceError, PutOp

    with pytest.raises(InvalidNamespaceError):
        store.batch([PutOp(("ok",), "k", {"v": 1}), PutOp(("bad.label",), "k", {"v": 2})])
    assert store.get(("ok",), "k") is None


def test_filters_follow_paths_and_never_raise_on_mixed_types(store) -> None:  # type: ignore[no-untyped-def]
    store.put(("f",), "a", {"meta": {"n": 3, "tag": "x"}, "v": 1})
    store.put(("f",), "b", {"meta": {"n": "three"}, "v": "1"})
    assert [i.key for i in store.search(("f",), filter={"meta.n": {"$gt": 2}})] == ["a"]
    assert [i.key for i in store.search(("f",), filter={"meta.tag": "x"})] == ["a"]
    assert [i.key for i in store.search(("f",), filter={"v": 1})] == ["a"]  # 1 is not "1"
    assert [i.key for i in store.search(("f",), filter={"v": {"$in": ["1", 2]}})] == ["b"]
    with pytest.raises(ValueError, match="Invalid filter key"):
        store.search(("f",), filter={"v') OR 1=1 --": 1})


def test_ttl_refresh_and_sweep(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from memstore.memory import MemoryStore

    now = [1000.0]
    ts = TieredStore(str(tmp_path / "t"), hot_bytes=8 * MiB, warm_bytes=8 * MiB, cold_bytes=64 * MiB)
    memory = MemoryStore(ts, clock=lambda: now[0])
    store = MemstoreStore(memory, ttl={"default_ttl": 1.0, "refresh_on_read": True})
    assert store.supports_ttl
    store.put(("t",), "kept", {"v": 1})
    store.put(("t",), "plain", {"v": 2})
    store.put(("t",), "forever", {"v": 3}, ttl=None)
    now[0] += 50
    assert store.get(("t",), "kept") is not None  # refreshed: 60 s from now
    assert store.get(("t",), "plain", refresh_ttl=False) is not None  # not refreshed
    now[0] += 30
    assert store.sweep_ttl() == 1
    assert store.get(("t",), "plain") is None
    assert store.get(("t",), "kept") is not None and store.get(("t",), "forever") is not None
    memory.close()
    ts.close()
