"""Agent memory's search: an embedding index per dimension (one matrix-vector product a query),
BM25 keyword scores, hybrid scoring, filters, ``as_of`` over versions, and cursor pages.

``MemorySearch`` reads the live records of a ``MemoryStore`` under its lock; values come back from the
store's tiers only for the records it returns.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from memstore.errors import InvalidValueError
from memstore.memory_record import MemoryRecord, matches, valid_at

if TYPE_CHECKING:
    from memstore.memory import MemoryStore

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class VectorIndex:
    """Embeddings of one dimension in a growing matrix: a search is one matrix-vector product."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.mat = np.empty((1024, dim), dtype=np.float32)
        self.norm = np.empty(1024, dtype=np.float32)
        self.valid = np.zeros(1024, dtype=bool)
        self.ns_id = np.zeros(1024, dtype=np.int32)
        self.idents: list[tuple[tuple[str, ...], str]] = []
        self.row: dict[tuple[tuple[str, ...], str], int] = {}
        self.namespaces: dict[tuple[str, ...], int] = {}
        self.n = 0

    def upsert(self, ident: tuple[tuple[str, ...], str], vec: np.ndarray) -> None:
        self.remove(ident)
        if self.n == len(self.mat):
            grow = len(self.mat) * 2
            self.mat = np.resize(self.mat, (grow, self.dim))
            self.norm, self.valid, self.ns_id = (
                np.resize(a, grow) for a in (self.norm, self.valid, self.ns_id)
            )
            self.valid[self.n :] = False
        i = self.n
        self.mat[i] = vec
        self.norm[i] = float(np.linalg.norm(vec))
        self.valid[i] = True
        self.ns_id[i] = self.namespaces.setdefault(ident[0], len(self.namespaces))
        self.idents.append(ident)
        self.row[ident] = i
        self.n += 1

    def remove(self, ident: tuple[tuple[str, ...], str]) -> None:
        i = self.row.pop(ident, None)
        if i is not None:
            self.valid[i] = False

    def ranked(self, q: np.ndarray, prefix: tuple[str, ...], want: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows under the namespace prefix, best first, with their cosine scores (the best ``want`` when
        given, else all)."""
        allowed = np.zeros(max(len(self.namespaces), 1), dtype=bool)
        for ns, j in self.namespaces.items():
            allowed[j] = ns[: len(prefix)] == prefix
        mask = self.valid[: self.n] & allowed[self.ns_id[: self.n]]
        sims = self.mat[: self.n] @ q / (self.norm[: self.n] * max(float(np.linalg.norm(q)), 1e-30) + 1e-30)
        sims[~mask] = -np.inf
        count = int(mask.sum())
        if 0 < want < count:  # only the best ``want`` rows, sorted: cheaper than sorting them all
            top = np.argpartition(-sims, want - 1)[:want]
            order = top[np.argsort(-sims[top], kind="stable")]
        else:
            order = np.argsort(-sims, kind="stable")[:count]
        return order, sims[order]


class MemorySearch:
    """``MemoryStore.search``: vector, keyword and hybrid search over one store's live records."""

    def __init__(self, memory: MemoryStore) -> None:
        self._m = memory
        self.vectors: dict[int, VectorIndex] = {}

    def index(self, rec: MemoryRecord) -> None:
        """Index (or re-index, or drop when deleted) one record's embedding; the caller holds the lock."""
        ident = (rec.namespace, rec.key)
        for index in self.vectors.values():
            index.remove(ident)
        if rec.embedding is not None and not rec.deleted:
            dim = int(rec.embedding.shape[0])
            self.vectors.setdefault(dim, VectorIndex(dim)).upsert(ident, rec.embedding)

    def search(
        self,
        namespace_prefix: Sequence[str] = (),
        *,
        vector: Sequence[float] | np.ndarray | None = None,
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        top_k: int = 10,
        as_of: float | None = None,
        cursor: int = 0,
        alpha: float = 0.5,
        semantic: bool = False,
    ) -> builtins.list[MemoryRecord]:
        """Cosine over embeddings (``vector``), keyword (``query``), or both (hybrid: ``alpha`` weighs the
        vector score); ``semantic`` embeds the query and searches by meaning; metadata ``filter``;
        ``as_of`` searches the versions that were current then.
        ``cursor`` skips that many results (pages of ``top_k``)."""
        prefix = tuple(namespace_prefix)
        now = self._m.clock()
        if semantic and query and vector is None:
            if self._m.embedder is None:
                raise InvalidValueError("semantic search needs a server started with text embedding")
            vector, query = self._m.embedder([query])[0], None
        if vector is not None and query is None and as_of is None:
            return self._vector_search(
                prefix, np.asarray(vector, dtype=np.float32).reshape(-1), filter, top_k, cursor, now
            )
        with self._m._lock:
            candidates = [r for i, r in self._m._live.items() if i[0][: len(prefix)] == prefix]
        if as_of is not None:
            candidates = [r for r in (self._m._as_of(r, as_of) for r in candidates) if r is not None]
            alive: Callable[[MemoryRecord], bool] = lambda r: not r.deleted  # noqa: E731
            when = as_of
        else:
            alive = lambda r: self._m._alive(r, now)  # noqa: E731
            when = now
        pool = [r for r in candidates if alive(r) and valid_at(r, when) and matches(r, filter)]
        if not pool:
            return []
        scores = np.zeros(len(pool))
        if vector is not None:
            q = np.asarray(vector, dtype=np.float32).reshape(-1)
            has = [i for i, r in enumerate(pool) if r.embedding is not None and r.embedding.shape == q.shape]
            if has:
                m = np.stack([pool[i].embedding for i in has])  # type: ignore[misc]
                cos = (m @ q) / (np.linalg.norm(m, axis=1) * max(float(np.linalg.norm(q)), 1e-30) + 1e-30)
                scores[has] += (alpha if query else 1.0) * cos
        if query:
            keyword = self._keyword_scores(pool, query)
            scores += (1 - alpha if vector is not None else 1.0) * keyword
            if vector is None:  # a keyword search returns only records that contain a query term
                keep = [i for i in range(len(pool)) if keyword[i] > 0]
                pool, scores = [pool[i] for i in keep], scores[keep]
        if vector is None and not query:
            order = sorted(range(len(pool)), key=lambda i: (pool[i].namespace, pool[i].key))
        else:
            order = sorted(range(len(pool)), key=lambda i: -scores[i])
        out = []
        for i in order[cursor : cursor + top_k]:
            out.append(
                replace(
                    self._m._full(pool[i]), score=float(scores[i]) if (vector is not None or query) else None
                )
            )
        return out

    def _vector_search(
        self,
        prefix: tuple[str, ...],
        q: np.ndarray,
        flt: dict[str, Any] | None,
        top_k: int,
        cursor: int,
        now: float,
    ) -> builtins.list[MemoryRecord]:
        """The fast path: one matrix-vector product over the index, then filters on the best rows."""
        with self._m._lock:
            index = self.vectors.get(int(q.shape[0]))
            if index is None:
                return []
            # Room for rows the filters reject; when that is not enough, rank every row.
            want = 4 * (cursor + top_k) + 64
            out = self._collect(index, *index.ranked(q, prefix, want), flt, top_k, cursor, now)
            if len(out) < top_k and want < index.n:
                out = self._collect(index, *index.ranked(q, prefix), flt, top_k, cursor, now)
            return out

    def _collect(
        self,
        index: VectorIndex,
        order: np.ndarray,
        sims: np.ndarray,
        flt: dict[str, Any] | None,
        top_k: int,
        cursor: int,
        now: float,
    ) -> builtins.list[MemoryRecord]:
        out: builtins.list[MemoryRecord] = []
        skipped = 0
        for row, score in zip(order.tolist(), sims.tolist(), strict=True):
            rec = self._m._live.get(index.idents[row])
            if rec is None or not self._m._alive(rec, now) or not matches(rec, flt) or not valid_at(rec, now):
                continue
            if skipped < cursor:
                skipped += 1
                continue
            out.append(replace(self._m._full(rec), score=float(score)))
            if len(out) == top_k:
                break
        return out

    @staticmethod
    def _keyword_scores(pool: builtins.list[MemoryRecord], query: str) -> np.ndarray:
        """BM25 over each record's text (and string values), normalised to 0..1."""
        docs = [
            _words(" ".join(x for x in (r.text, r.value if isinstance(r.value, str) else None) if x))
            for r in pool
        ]
        terms = set(_words(query))
        n = len(docs)
        avg = sum(len(d) for d in docs) / max(n, 1) or 1.0
        df = {t: sum(1 for d in docs if t in d) for t in terms}
        out = np.zeros(n)
        for j, d in enumerate(docs):
            for t in terms:
                tf = d.count(t)
                if tf:
                    idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    out[j] += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(d) / avg))
        top = out.max()
        return out / top if top > 0 else out
