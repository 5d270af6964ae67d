"""LangGraph adapter: ``MemstoreStore`` implements LangGraph's ``BaseStore`` on memstore's agent memory.

It takes ``client.memory`` (a ``memstore.Client``) or an in-process ``memstore.memory.MemoryStore``,
and behaves as LangGraph's own stores do (their published tests run against it, see
``tests/test_langgraph_peers.py``):

- a batch checks every op's namespace before it writes anything, reads before it writes (a batch's
  reads see the store as it was), and applies its puts in order, the last put of a key winning;
- ``index=`` (LangGraph's ``IndexConfig``: ``embed``, ``dims``, ``fields``) embeds the given fields of
  each value on put (``index=False`` on a put skips it; a list of fields overrides the default), and a
  ``query`` ranks by the best cosine similarity over an item's fields; without an index a query does
  not narrow the results, as LangGraph's stores without one;
- filters follow dotted paths into nested values, compare numbers with numbers and strings with
  strings (anything else does not match rather than fail), and take ``$eq $ne $gt $gte $lt $lte $in
  $nin``; results without a query come newest first;
- ``ttl=`` (LangGraph's ``TTLConfig``, minutes) sets a default TTL, refreshes it on reads unless a read
  says ``refresh_ttl=False`` or the config ``refresh_on_read=False``, and sweeps on
  ``sweep_ttl()`` or a background sweeper (``start_ttl_sweeper``).

A value is stored as the record's value; its vectors, when indexed, in the record's metadata.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)
from langgraph.store.base.embed import ensure_embeddings, get_text_at_path, tokenize_path

from memstore.memory import MemoryRecord

VECTORS = "__vectors__"  # metadata key of an indexed record's vectors: {field path: [floats]}
_MISSING = object()
_FILTER_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
_PAGE = 1000


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _item(rec: MemoryRecord, score: float | None = None, *, search: bool = False) -> Item:
    fields = {
        "namespace": tuple(rec.namespace),
        "key": rec.key,
        "value": rec.value,
        "created_at": _when(rec.created_at),
        "updated_at": _when(rec.updated_at),
    }
    return SearchItem(**fields, score=score) if search else Item(**fields)


# ---- filters ------------------------------------------------------------------------------------


def _at(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return type(v).__name__


def _equal(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and bool(a == b)


def _order(got: Any, op: str, want: Any) -> bool:
    if _kind(got) != _kind(want) or _kind(got) not in ("number", "str"):
        return False  # mixed types (or no value) never match an ordering
    return bool({"$gt": got > want, "$gte": got >= want, "$lt": got < want, "$lte": got <= want}[op])


def _condition(got: Any, want: Any) -> bool:
    if isinstance(want, dict) and want and all(str(k).startswith("$") for k in want):
        return all(_operator(got, op, v) for op, v in want.items())
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_condition(got.get(k, _MISSING), v) for k, v in want.items())
    if got is _MISSING:
        return want is None
    return _equal(got, want)


def _operator(got: Any, op: str, want: Any) -> bool:
    if op == "$eq":
        return got is not _MISSING and _equal(got, want)
    if op == "$ne":
        return got is not _MISSING and not _equal(got, want)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _order(got, op, want)
    if op in ("$in", "$nin"):
        found = got is not _MISSING and any(_equal(got, w) for w in want)
        return found if op == "$in" else (got is not _MISSING and not found)
    raise ValueError(f"unsupported filter operator {op!r}")


def check_filter(flt: dict[str, Any] | None) -> None:
    """A filter's keys are paths of names: letters, digits, ``_``, ``-``, dots between them."""
    for key in flt or {}:
        if not isinstance(key, str) or not _FILTER_KEY.match(key):
            raise ValueError(
                f"Invalid filter key: {key!r}. Filter keys are letters, digits, underscores, hyphens and dots"
            )


def matches(value: Any, flt: dict[str, Any] | None) -> bool:
    """Whether a stored value passes a LangGraph filter."""
    return not flt or all(_condition(_at(value, key), want) for key, want in flt.items())


def _namespace_matches(ns: tuple[str, ...], path: tuple[str, ...], suffix: bool) -> bool:
    if len(path) > len(ns):
        return False
    part = ns[len(ns) - len(path) :] if suffix else ns[: len(path)]
    return all(p == "*" or p == n for p, n in zip(path, part, strict=True))


# ---- the store ----------------------------------------------------------------------------------


class MemstoreStore(BaseStore):
    supports_ttl = True

    def __init__(
        self, memory: Any, *, index: IndexConfig | None = None, ttl: TTLConfig | None = None
    ) -> None:
        self.memory = memory
        self.ttl_config = ttl
        self.index_config: dict[str, Any] | None = dict(index) if index else None
        self.embeddings = ensure_embeddings(index.get("embed")) if index else None
        config = self.index_config or {}
        fields = config.get("fields") or config.get("text_fields") or ["$"]  # SQLite's name for them
        self._fields = [(p, tokenize_path(p) if p != "$" else p) for p in fields]
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- batches ----

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = _checked(ops)
        embed = self.embeddings
        vectors = {q: embed.embed_query(q) for q in _queries(ops)} if embed is not None else {}
        return self._run(ops, vectors, self._embed_puts(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = _checked(ops)
        vectors: dict[str, list[float]] = {}
        puts: dict[int, dict[str, list[float]]] = {}
        embed = self.embeddings
        if embed is not None:
            queries = _queries(ops)
            found = await asyncio.gather(*(embed.aembed_query(q) for q in queries))
            vectors = dict(zip(queries, found, strict=True))
            texts = self._texts(ops)
            if texts:
                puts = _grouped(texts, await embed.aembed_documents([t for _, _, t in texts]))
        return await asyncio.to_thread(self._run, ops, vectors, puts)

    def _run(
        self, ops: list[Op], queries: dict[str, list[float]], puts: dict[int, dict[str, list[float]]]
    ) -> list[Result]:
        results: list[Result] = [self._read(op, queries) for op in ops]
        for i, op in enumerate(ops):
            if isinstance(op, PutOp):
                self._put(op, puts.get(i))
        return results

    def _read(self, op: Op, queries: dict[str, list[float]]) -> Result:
        if isinstance(op, GetOp):
            rec = self.memory.get(op.namespace, op.key, refresh=self._refresh(op.refresh_ttl))
            return _item(rec) if rec is not None else None
        if isinstance(op, SearchOp):
            return self._search(op, queries.get(op.query or ""))
        if isinstance(op, ListNamespacesOp):
            return self._list_namespaces(op)
        if isinstance(op, PutOp):
            return None
        raise ValueError(f"unsupported LangGraph store operation {type(op).__name__}")

    def _refresh(self, asked: bool) -> bool:
        """Whether a read refreshes TTLs: asked for (LangGraph asks by default) and turned on in the
        TTL config, as LangGraph's SQLite and Postgres stores decide it."""
        config = self.ttl_config or {}
        return bool(asked) and bool(config.get("refresh_on_read", False))

    # ---- puts ----

    def _texts(self, ops: list[Op]) -> list[tuple[int, str, str]]:
        """(op index, field path, text) of everything the batch's puts embed."""
        if self.embeddings is None:
            return []
        out: list[tuple[int, str, str]] = []
        for i, op in enumerate(ops):
            if not isinstance(op, PutOp) or op.value is None or op.index is False:
                continue
            paths = self._fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
            for path, tokens in paths:
                texts = get_text_at_path(op.value, tokens)
                names = [path] if len(texts) == 1 else [f"{path}.{j}" for j in range(len(texts))]
                out.extend((i, name, text) for name, text in zip(names, texts, strict=True))
        return out

    def _embed_puts(self, ops: list[Op]) -> dict[int, dict[str, list[float]]]:
        texts = self._texts(ops)
        if not texts or self.embeddings is None:
            return {}
        return _grouped(texts, self.embeddings.embed_documents([t for _, _, t in texts]))

    def _put(self, op: PutOp, vectors: dict[str, list[float]] | None) -> None:
        if op.value is None:
            self.memory.delete(op.namespace, op.key, hard=True)
            return
        self.memory.put(
            op.namespace,
            op.key,
            dict(op.value),
            metadata={VECTORS: vectors} if vectors else None,
            ttl=op.ttl * 60 if op.ttl else None,
        )

    # ---- reads ----

    def _records(self, prefix: tuple[str, ...]) -> list[MemoryRecord]:
        out: list[MemoryRecord] = []
        cursor: str | None = None
        while True:
            page, cursor = self.memory.list(prefix, cursor=cursor, limit=_PAGE)
            out.extend(page)
            if cursor is None:
                return out

    def _search(self, op: SearchOp, query: list[float] | None) -> list[SearchItem]:
        found = [r for r in self._records(tuple(op.namespace_prefix)) if matches(r.value, op.filter)]
        if op.query and query is not None:
            scored = [(r, _best(query, (r.metadata or {}).get(VECTORS))) for r in found]
            ranked = sorted((x for x in scored if x[1] is not None), key=lambda x: -float(x[1] or 0.0))
            ranked += [x for x in scored if x[1] is None]  # items with nothing embedded come last
        else:
            ranked = [(r, None) for r in sorted(found, key=lambda r: -r.updated_at)]
        page = ranked[op.offset : op.offset + op.limit]
        if self._refresh(op.refresh_ttl):
            for rec, _ in page:
                self.memory.get(rec.namespace, rec.key, refresh=True)
        return [_item(rec, score, search=True) for rec, score in page]  # type: ignore[misc]

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        spaces = [tuple(ns) for ns in self.memory.list_namespaces()]
        for cond in op.match_conditions or ():
            suffix = cond.match_type == "suffix"
            spaces = [ns for ns in spaces if _namespace_matches(ns, tuple(cond.path), suffix)]
        if op.max_depth is not None:
            spaces = [ns[: op.max_depth] for ns in spaces]
        return sorted(set(spaces))[op.offset : op.offset + op.limit]

    # ---- TTL ----

    def sweep_ttl(self) -> int:
        """Remove the items whose TTL has passed; returns how many."""
        return int(self.memory.sweep())

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> None:
        """Sweep in a background thread every ``sweep_interval_minutes`` (the TTL config's, else 5)."""
        if self._sweeper is not None:
            return
        minutes = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(float(minutes) * 60):
                self.sweep_ttl()

        self._sweeper = threading.Thread(target=loop, name="memstore-langgraph-ttl", daemon=True)
        self._sweeper.start()

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        if self._sweeper is None:
            return True
        self._stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        self._sweeper = None
        return stopped


def _checked(ops: Iterable[Op]) -> list[Op]:
    """The batch's ops, every namespace and filter checked before any of them runs."""
    ops = list(ops)
    for op in ops:
        validate_op_namespace(op)
        if isinstance(op, SearchOp):
            check_filter(op.filter)
    return ops


def _queries(ops: list[Op]) -> list[str]:
    return sorted({op.query for op in ops if isinstance(op, SearchOp) and op.query})


def _grouped(
    texts: list[tuple[int, str, str]], vectors: list[list[float]]
) -> dict[int, dict[str, list[float]]]:
    out: dict[int, dict[str, list[float]]] = {}
    for (i, path, _), vector in zip(texts, vectors, strict=True):
        out.setdefault(i, {})[path] = [float(x) for x in vector]
    return out


def _best(query: list[float], vectors: dict[str, list[float]] | None) -> float | None:
    """The best cosine similarity of the query to an item's vectors; None when it has none."""
    if not vectors:
        return None
    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(list(vectors.values()), dtype=np.float64)
    norms = np.linalg.norm(m, axis=1) * (np.linalg.norm(q) or 1.0)
    sims = np.divide(m @ q, norms, out=np.zeros(len(m)), where=norms != 0)
    return float(sims.max())
