"""The LangGraph adapter with the real langgraph package: a graph node reads and writes memory through it."""

from __future__ import annotations

from typing import TypedDict

import pytest

from memstore import Client, TieredStore
from memstore_server import create_server
from tests.conftest import MiB

langgraph = pytest.importorskip("langgraph", reason="the LangGraph adapter needs langgraph")
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
    assert [i.key for i in store.search(("users", "u1"), query="pasta")] == ["food"]
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
