"""Hybrid retrieval: vector and full-text candidates fused by weighted reciprocal rank.

Both lists are first collapsed to documents (a document's rank is the rank of its best chunk),
because users and the eval metrics care which article answers, and three chunks of one article
in a top three crowd out the second article that many questions need. The raw signals (cosine
similarity, BM25 score, ranks in each list) travel with every hit for the confidence judge.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from knowledge.config import SearchSettings
from knowledge.index import KnowledgeIndex
from knowledge.text import sql_string

Mode = Literal["hybrid", "vector", "fts"]
FTS_SAFE = re.compile(r"[^\w\s]+", flags=re.UNICODE)
# A hybrid search runs its full-text query here while its own thread embeds the question and runs
# the vector query: the full-text query needs no embedding, and LanceDB releases the GIL, so the
# full-text time hides behind the other two instead of adding to them (benchmarks/search_latency.py).
FULL_TEXT_THREADS = "full-text"
FULL_TEXT_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix=FULL_TEXT_THREADS)


@dataclass
class SearchHit:
    chunk_id: str
    doc_id: str
    source: str
    title: str
    url: str
    doc_url: str
    heading: str
    text: str
    position: int
    score: float  # fused score in [0, 1]: 1 = first in every list
    vector_similarity: float | None = None  # cosine similarity of this chunk to the query
    fts_score: float | None = None  # BM25 score of this chunk
    vector_rank: int | None = None  # rank of this hit's document in the vector list (1 = first)
    fts_rank: int | None = None
    updated_at: str | None = None  # when the source last changed the document, if it says

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query: str
    mode: Mode
    hits: list[SearchHit]
    top_vector_similarity: float = 0.0
    top_fts_score: float = 0.0
    index_version: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hits"] = [hit.to_dict() for hit in self.hits]
        return data


def fts_query_text(query: str) -> str:
    """Punctuation is syntax to the full-text parser; a support question only needs its words."""
    return " ".join(FTS_SAFE.sub(" ", query).split())


def page_filter(pages: list[str]) -> str | None:
    """A `where` clause for the chunks of these pages: the document url, or a section of it
    (`page#anchor`, for knowledge whose sections are documents)."""
    clauses = []
    for page in pages:
        quoted = sql_string(page)
        clauses.append(f"doc_url = {quoted} OR url = {quoted} OR url LIKE {sql_string(page + '#%')}")
    return " OR ".join(f"({clause})" for clause in clauses) or None


def source_filter(sources: Collection[str] | None) -> str | None:
    """A `where` clause keeping only chunks of these sources; None means every source, and an
    empty collection matches nothing (a channel allowed no knowledge gets no answers from it)."""
    if sources is None:
        return None
    if not sources:
        return "source IS NULL"  # the column is non-nullable: no chunk matches
    return f"source IN ({', '.join(sql_string(source) for source in sorted(sources))})"


def both(first: str | None, second: str | None) -> str | None:
    if first and second:
        return f"({first}) AND ({second})"
    return first or second


def updated_at_of(metadata: Any) -> str | None:
    """The stored document's last-updated time, from the chunk's metadata JSON."""
    try:
        value = json.loads(metadata).get("updated_at") if isinstance(metadata, str) and metadata else None
    except (json.JSONDecodeError, AttributeError):
        return None
    return str(value) if value else None


def doc_ranking(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Document -> 1-based rank of its best chunk in a result list."""
    ranks: dict[str, int] = {}
    for row in rows:
        key = row_key(row)
        if key not in ranks:
            ranks[key] = len(ranks) + 1
    return ranks


def row_key(row: dict[str, Any]) -> str:
    return f"{row['source']}\0{row['doc_id']}"


def document_vector_ranking(query_vector: np.ndarray, doc_vectors: dict[str, np.ndarray]) -> list[str]:
    """Documents by the cosine of the query with the normalised mean of all their chunk vectors.

    This is the article's own embedding (the mean of its windows), free because its chunks are
    already embedded: a question about a long note as a whole (a product, an error and its
    context) matches the note even when no single chunk holds all of it.
    """
    scored = []
    for key, vectors in doc_vectors.items():
        mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
        norm = float(np.linalg.norm(mean))
        scored.append((-(float(mean @ query_vector) / norm) if norm else 0.0, key))
    return [key for _, key in sorted(scored)]


def document_fts_ranking(fts_rows: list[dict[str, Any]]) -> list[str]:
    """Documents by the summed BM25 scores of their chunks among the full-text candidates.

    Whole-article BM25 credits a note whose sections share out a long question's terms (the
    product in the title, the error line in one section, the fix in another); a document's
    best chunk alone misses that. Summing per chunk keeps each section's length normalisation.
    """
    totals: dict[str, float] = {}
    for row in fts_rows:
        key = row_key(row)
        totals[key] = totals.get(key, 0.0) + float(row.get("_score") or 0.0)
    return sorted(totals, key=lambda key: -totals[key])


def fuse(
    vector_rows: list[dict[str, Any]],
    fts_rows: list[dict[str, Any]],
    *,
    k: int,
    per_doc: int,
    vector_weight: float,
    fts_weight: float,
    rrf_k: int,
    documents: Sequence[tuple[Sequence[str], float]] = (),
) -> list[SearchHit]:
    """Weighted reciprocal-rank fusion at document level, then the best chunks of each document.

    `documents` adds document-level rankings (row keys, best first) with their weights; they only
    re-rank documents that the chunk lists found, whose chunks are the hits.
    """
    vector_docs, fts_docs = doc_ranking(vector_rows), doc_ranking(fts_rows)
    found = {*vector_docs, *fts_docs}
    extra = [
        ({key: rank for rank, key in enumerate(ranking, start=1)}, weight) for ranking, weight in documents if ranking
    ]
    best_possible = (vector_weight if vector_rows else 0.0) + (fts_weight if fts_rows else 0.0)
    best_possible += sum(weight for _, weight in extra)
    best_possible = best_possible / (rrf_k + 1) or 1.0

    def rrf(rank: int | None, weight: float) -> float:
        return weight / (rrf_k + rank) if rank else 0.0

    doc_scores = {
        key: (
            rrf(vector_docs.get(key), vector_weight)
            + rrf(fts_docs.get(key), fts_weight)
            + sum(rrf(ranks.get(key), weight) for ranks, weight in extra)
        )
        / best_possible
        for key in found
    }
    # Chunks of each document, ordered by their own fused chunk rank.
    chunk_rows: dict[str, dict[str, Any]] = {}
    chunk_scores: dict[str, float] = {}
    for weight, rows, field_name in ((vector_weight, vector_rows, "_distance"), (fts_weight, fts_rows, "_score")):
        for rank, row in enumerate(rows, start=1):
            merged = chunk_rows.setdefault(row["chunk_id"], dict(row))
            merged[field_name] = row.get(field_name)
            chunk_scores[row["chunk_id"]] = chunk_scores.get(row["chunk_id"], 0.0) + weight / (rrf_k + rank)
    chunks_by_doc: dict[str, list[dict[str, Any]]] = {}
    for chunk_id in sorted(chunk_scores, key=lambda cid: -chunk_scores[cid]):
        row = chunk_rows[chunk_id]
        chunks_by_doc.setdefault(row_key(row), []).append(row)

    hits: list[SearchHit] = []
    for key in sorted(doc_scores, key=lambda key: (-doc_scores[key], vector_docs.get(key, 10**9)))[:k]:
        for row in chunks_by_doc[key][: max(1, per_doc)]:
            distance = row.get("_distance")
            hits.append(
                SearchHit(
                    chunk_id=row["chunk_id"],
                    doc_id=row["doc_id"],
                    source=row["source"],
                    title=row["title"],
                    url=row["url"],
                    doc_url=row["doc_url"],
                    heading=row["heading"],
                    text=row["text"],
                    position=int(row["position"]),
                    score=round(doc_scores[key], 6),
                    vector_similarity=None if distance is None else round(1.0 - float(distance), 6),
                    fts_score=None if row.get("_score") is None else round(float(row["_score"]), 6),
                    vector_rank=vector_docs.get(key),
                    fts_rank=fts_docs.get(key),
                    updated_at=updated_at_of(row.get("metadata")),
                )
            )
    return hits


class Searcher:
    """Runs a query against the index; synchronous core, `asearch` for the event loop."""

    def __init__(
        self,
        index: KnowledgeIndex,
        *,
        vector_weight: float = 1.0,
        fts_weight: float = 1.0,
        rrf_k: int = 60,
        candidates: int = 50,
        doc_vector_weight: float = 0.0,
        doc_fts_weight: float = 0.0,
    ) -> None:
        self.index = index
        self.vector_weight = vector_weight
        self.fts_weight = fts_weight
        self.rrf_k = rrf_k
        self.candidates = candidates
        # Document-level lists (whole-note embedding, summed BM25 of a note's chunks) are off by
        # default: on long technotes they lifted MRR@5 0.987 -> 0.991, on anthropic-docs sections
        # they cut it 0.930 -> 0.889 (benchmarks/RESULTS.md, "Retrieval against a whole-article
        # baseline"), and the chunk-level hybrid already beats the whole-article baseline everywhere.
        self.doc_vector_weight = doc_vector_weight
        self.doc_fts_weight = doc_fts_weight

    @classmethod
    def from_settings(cls, settings: SearchSettings, index: KnowledgeIndex) -> Searcher:
        return cls(index, vector_weight=settings.vector_weight, fts_weight=settings.fts_weight, rrf_k=settings.rrf_k)

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: Mode = "hybrid",
        per_doc: int = 1,
        where: str | None = None,
        sources: Collection[str] | None = None,
    ) -> SearchResult:
        """`sources` limits the search to those sources (per-channel knowledge), before ranking."""
        where = both(where, source_filter(sources))
        timings: dict[str, float] = {}
        limit = max(self.candidates, k * 10)
        vector_rows: list[dict[str, Any]] = []
        fts_rows: list[dict[str, Any]] = []
        text = fts_query_text(query) if mode in ("hybrid", "fts") else ""
        full_text: Future[tuple[list[dict[str, Any]], float]] | None = None
        # Not from a pool thread itself: four such searches waiting on queued full-text queries would deadlock.
        if text and mode == "hybrid" and not threading.current_thread().name.startswith(FULL_TEXT_THREADS):
            full_text = FULL_TEXT_POOL.submit(self._timed_fts, text, limit, where)
        if mode in ("hybrid", "vector"):
            try:
                started = time.perf_counter()
                vector = self.index.embedder.encode_query(query)
                timings["embed_ms"] = (time.perf_counter() - started) * 1000
                started = time.perf_counter()
                vector_rows = self.index.vector_search(vector, limit, where)
                timings["vector_ms"] = (time.perf_counter() - started) * 1000
            except BaseException:
                if full_text is not None and not full_text.cancel():
                    wait([full_text])  # no worker left busy behind a search that already failed
                raise
        if mode in ("hybrid", "fts"):
            fts_rows, timings["fts_ms"] = full_text.result() if full_text else self._timed_fts(text, limit, where)
        documents: list[tuple[list[str], float]] = []
        if vector_rows and self.doc_vector_weight > 0:
            started = time.perf_counter()
            keys = sorted({(str(row["source"]), str(row["doc_id"])) for row in [*vector_rows, *fts_rows]})
            doc_vectors = {
                f"{source}\0{doc_id}": vectors
                for (source, doc_id), vectors in self.index.document_vectors(keys).items()
            }
            documents.append((document_vector_ranking(vector, doc_vectors), self.doc_vector_weight))
            timings["doc_vector_ms"] = (time.perf_counter() - started) * 1000
        if fts_rows and self.doc_fts_weight > 0:
            documents.append((document_fts_ranking(fts_rows), self.doc_fts_weight))
        hits = fuse(
            vector_rows,
            fts_rows,
            k=k,
            per_doc=per_doc,
            vector_weight=self.vector_weight if mode != "fts" else 0.0,
            fts_weight=self.fts_weight if mode != "vector" else 0.0,
            rrf_k=self.rrf_k,
            documents=documents,
        )
        return SearchResult(
            query=query,
            mode=mode,
            hits=hits,
            top_vector_similarity=max((1.0 - float(r["_distance"]) for r in vector_rows), default=0.0),
            top_fts_score=max((float(r["_score"]) for r in fts_rows), default=0.0),
            index_version=self.index.version,
            timings_ms={name: round(ms, 2) for name, ms in timings.items()},
        )

    def _timed_fts(self, text: str, limit: int, where: str | None) -> tuple[list[dict[str, Any]], float]:
        """Full-text candidates (none for a query without words) and the milliseconds they took."""
        started = time.perf_counter()
        rows = self.index.fts_search(text, limit, where) if text else []
        return rows, (time.perf_counter() - started) * 1000

    def search_masked(
        self, query: str, vector: Any, k: int, *, per_doc: int, masked: Collection[str]
    ) -> tuple[list[SearchHit], list[SearchHit]]:
        """Hybrid hits for `query` as is, and with the chunks `masked` left out, from one candidate
        retrieval (self-calibration asks this of every probe, so the pair costs one search, not two).
        Filtering the candidate lists after retrieval equals a pre-filtered search as long as fewer
        chunks are masked than the candidate lists are long, which a section's few chunks always are."""
        limit = max(self.candidates, k * 10)
        text = fts_query_text(query)
        vector_rows = self.index.vector_search(vector, limit)
        fts_rows = self.index.fts_search(text, limit) if text else []
        kept = [[row for row in rows if row["chunk_id"] not in masked] for rows in (vector_rows, fts_rows)]

        def fused(vectors: list[dict[str, Any]], fts: list[dict[str, Any]]) -> list[SearchHit]:
            return fuse(
                vectors,
                fts,
                k=k,
                per_doc=per_doc,
                vector_weight=self.vector_weight,
                fts_weight=self.fts_weight,
                rrf_k=self.rrf_k,
            )

        return fused(vector_rows, fts_rows), fused(kept[0], kept[1])

    async def asearch(self, query: str, k: int = 5, **options: Any) -> SearchResult:
        return await asyncio.to_thread(self.search, query, k, **options)
