"""The LanceDB `chunks` table: incremental refresh, full-text and vector indexes, versions, rollback.

Writes are all-or-nothing: documents are loaded, chunked and embedded in memory first, then one
`merge_insert` commits every insert, update and delete of a refresh as a single table version.
A refresh killed before that commit leaves the previous version untouched; readers keep reading
the version they opened until they check for a newer one (`read_consistency_seconds`).
Each finished refresh is tagged, and `rollback` restores the version of the refresh before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pyarrow as pa

from knowledge.chunking import CHUNKER_VERSION, Chunk, chunk_document, wordpiece_counter
from knowledge.config import IndexSettings
from knowledge.connectors.http import SourceError
from knowledge.connectors.registry import SourceSpec, connector_for, is_connector_uri, spec_uri
from knowledge.connectors.state import forget_states, read_states, write_states
from knowledge.embeddings import DIMENSIONS, Embedder
from knowledge.sources import Document, LoadFailure, SourceLoad
from knowledge.text import sql_string
from knowledge.vector_tuning import VectorIndexPlan, needs_rebuild, plan_for

if TYPE_CHECKING:  # lancedb is imported on first use: `supportbot --help` stays instant
    from lancedb.db import DBConnection
    from lancedb.query import LanceVectorQueryBuilder
    from lancedb.table import LanceTable

TABLE = "chunks"
TAG_PREFIX = "refresh-"
FTS_COLUMN = "search_text"
VECTOR_PLAN_KEY = "supportbot.vector_index"  # table config key: the plan the vector index was built with
COMPACT_AFTER_FRAGMENTS = 32  # each refresh adds a fragment; compact once many small ones pile up


def chunk_schema(dimensions: int = DIMENSIONS) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("url", pa.string()),
            pa.field("doc_url", pa.string()),
            pa.field("heading", pa.string()),
            pa.field("text", pa.string()),
            pa.field(FTS_COLUMN, pa.string()),
            pa.field("position", pa.int32()),
            pa.field("doc_hash", pa.string()),
            pa.field("metadata", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimensions)),
        ]
    )


class AfterWrite(Protocol):
    """Work that belongs to a new index version and must see it first (the engine's self-calibration).
    Called inside the write lock, only when a refresh wrote a new version; what it returns is kept
    in the refresh report. knowledge/ knows only this shape, never the engine behind it."""

    def __call__(self, index: KnowledgeIndex, version: int) -> Awaitable[dict[str, Any] | None]: ...


class RefreshInProgress(RuntimeError):
    """Another refresh holds the write lock on this data directory."""


class IndexNotReady(RuntimeError):
    """The index has not been built yet: run `supportbot refresh` first."""


@dataclass
class SourceCounts:
    source: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0


@dataclass
class RefreshReport:
    """What a refresh did, per source and in total; printed by the CLI and posted to Slack."""

    sources: list[SourceCounts] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_deleted: int = 0
    version_before: int = 0
    version_after: int = 0
    seconds: float = 0.0
    started_at: str = ""
    calibration: dict[str, Any] | None = None  # what the AfterWrite hook reported for the new version
    failed_sources: list[str] = field(default_factory=list)  # sources that could not be listed: all kept
    api_calls: int = 0  # HTTP requests the connectors made

    def total(self, name: str) -> int:
        return sum(getattr(counts, name) for counts in self.sources)

    @property
    def summary(self) -> str:
        return (
            f"added {self.total('added')}, updated {self.total('updated')}, unchanged {self.total('unchanged')}, "
            f"deleted {self.total('deleted')}, failed {self.total('failed')} "
            f"({self.chunks_embedded} chunks embedded, version {self.version_before} -> {self.version_after}, "
            f"{self.seconds:.1f} s)"
            + (
                f"; could not sync {', '.join(self.failed_sources)} (their documents are kept)"
                if self.failed_sources
                else ""
            )
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["totals"] = {name: self.total(name) for name in ("added", "updated", "unchanged", "deleted", "failed")}
        return data


def fingerprint(doc: Document, model: str, max_tokens: int, overlap: int) -> str:
    """A document's hash plus everything that shapes its chunks and vectors."""
    parts = [doc.content_hash, CHUNKER_VERSION, Path(model).name, str(max_tokens), str(overlap)]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


class KnowledgeIndex:
    """One data directory's chunk table, opened lazily; safe for one writer and many readers."""

    def __init__(
        self,
        index_dir: Path,
        embedder: Embedder | None = None,
        *,
        chunk_max_tokens: int = 200,
        chunk_overlap_tokens: int = 32,
        vector_index_min_rows: int = 50_000,
        read_consistency_seconds: float = 5.0,
        max_document_bytes: int = 2_000_000,
        fetch_timeout: float = 15.0,
        fetch_concurrency: int = 8,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.embedder = embedder or Embedder()
        self.chunk_max_tokens = chunk_max_tokens
        self.chunk_overlap_tokens = chunk_overlap_tokens
        self.vector_index_min_rows = vector_index_min_rows
        self.read_consistency_seconds = read_consistency_seconds
        self.max_document_bytes = max_document_bytes
        self.fetch_timeout = fetch_timeout
        self.fetch_concurrency = fetch_concurrency
        self._db: DBConnection | None = None
        self._table: LanceTable | None = None
        self._indexed_columns: tuple[int, frozenset[str]] | None = None
        self._vector_plans: tuple[int, VectorIndexPlan | None, VectorIndexPlan | None] | None = None

    @classmethod
    def from_settings(cls, settings: IndexSettings, embedder: Embedder | None = None) -> KnowledgeIndex:
        return cls(
            settings.index_dir,
            embedder or Embedder(settings.embedding_model, settings.embedding_batch_size),
            chunk_max_tokens=settings.chunk_max_tokens,
            chunk_overlap_tokens=settings.chunk_overlap_tokens,
            vector_index_min_rows=settings.vector_index_min_rows,
            read_consistency_seconds=settings.read_consistency_seconds,
            max_document_bytes=settings.max_document_bytes,
            fetch_timeout=settings.fetch_timeout_seconds,
            fetch_concurrency=settings.fetch_concurrency,
        )

    # ---------------------------------------------------------------- opening and reading

    @property
    def db(self) -> DBConnection:
        if self._db is None:
            import lancedb

            self.index_dir.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(
                str(self.index_dir), read_consistency_interval=timedelta(seconds=self.read_consistency_seconds)
            )
        return self._db

    def exists(self) -> bool:
        return TABLE in self.db.table_names()

    @property
    def table(self) -> LanceTable:
        if self._table is None:
            if not self.exists():
                raise IndexNotReady(f"no knowledge index in {self.index_dir}: run `supportbot refresh` first")
            # a local connection opens a LanceTable; its search() overloads type the query builders
            self._table = cast("LanceTable", self.db.open_table(TABLE))
        return self._table

    @property
    def version(self) -> int:
        """Asked on every search: an opened table answers without listing the directory."""
        if self._table is None and not self.exists():
            return 0
        return int(self.table.version)

    def count_rows(self) -> int:
        return int(self.table.count_rows()) if self.exists() else 0

    def vector_search(self, vector: np.ndarray, limit: int, where: str | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.vector_query(vector, limit, where).to_list()
        return rows

    def vector_query(self, vector: np.ndarray, limit: int, where: str | None = None) -> LanceVectorQueryBuilder:
        """The vector query, probing as many partitions as the plan of the index it will read says."""
        query = self.table.search(vector, query_type="vector").distance_type("cosine").limit(limit)
        plan = self.search_plan()
        if plan is not None:
            query = query.nprobes(plan.nprobes)
            if plan.refine_factor:
                query = query.refine_factor(plan.refine_factor)
        if where:
            query = query.where(where, prefilter=True)
        return query.select([*RESULT_COLUMNS, "_distance"])

    def fts_search(self, text: str, limit: int, where: str | None = None) -> list[dict[str, Any]]:
        if not self.has_index(FTS_COLUMN):
            return []
        query = self.table.search(text, query_type="fts", fts_columns=FTS_COLUMN).limit(limit)
        if where:
            query = query.where(where, prefilter=True)
        rows: list[dict[str, Any]] = query.select([*RESULT_COLUMNS, "_score"]).to_list()
        return rows

    def document_vectors(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
        """(source, doc_id) -> the vectors of all that document's chunks, for document-level ranking."""
        by_source: dict[str, list[str]] = {}
        for source, doc_id in keys:
            by_source.setdefault(source, []).append(doc_id)
        if not by_source:
            return {}
        condition = " OR ".join(
            f"(source = {sql_string(source)} AND doc_id IN ({', '.join(sql_string(d) for d in sorted(set(ids)))}))"
            for source, ids in sorted(by_source.items())
        )
        arrow = self.table.to_lance().to_table(columns=["source", "doc_id", "vector"], filter=condition)
        vectors = arrow.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        matrix = vectors.reshape(arrow.num_rows, -1) if arrow.num_rows else vectors.reshape(0, DIMENSIONS)
        grouped: dict[tuple[str, str], list[int]] = {}
        for row, key in enumerate(zip(arrow.column("source").to_pylist(), arrow.column("doc_id").to_pylist())):
            grouped.setdefault(key, []).append(row)
        return {key: matrix[rows] for key, rows in grouped.items()}

    def has_index(self, column: str) -> bool:
        """Cached per table version: every full-text query asks, and indexes only change with a version."""
        version = int(self.table.version)
        if self._indexed_columns is None or self._indexed_columns[0] != version:
            columns = frozenset(c for index in self.table.list_indices() for c in index.columns)
            self._indexed_columns = (version, columns)
        return column in self._indexed_columns[1]

    def vector_plan(self) -> VectorIndexPlan | None:
        """The plan stored with the vector index this table version carries (None: no index, or one
        built before plans were stored)."""
        return self._plans()[0]

    def search_plan(self) -> VectorIndexPlan | None:
        """What a vector search uses: the stored plan, or for an index without one (built by an older
        release, until the next refresh retrains it) the plan for today's row count; None without an index."""
        return self._plans()[1]

    def _plans(self) -> tuple[VectorIndexPlan | None, VectorIndexPlan | None]:
        """(stored, searched) plans, cached per table version: every vector search asks."""
        version = int(self.table.version)
        if self._vector_plans is None or self._vector_plans[0] != version:
            stored = searched = None
            if self.has_index("vector"):
                text = self.table.to_lance().config().get(VECTOR_PLAN_KEY)
                stored = VectorIndexPlan.from_json(text) if text else None
                searched = stored or plan_for(max(1, self.count_rows()))
            self._vector_plans = (version, stored, searched)
        return self._vector_plans[1], self._vector_plans[2]

    def document_names(self) -> set[str]:
        """Every document id, chunk url and document url in the index (three projected columns,
        never text or vectors): what an eval set's gold sources may name."""
        if not self.exists():
            return set()
        arrow = self.table.to_lance().to_table(columns=["doc_id", "url", "doc_url"])
        return {value for name in ("doc_id", "url", "doc_url") for value in arrow.column(name).to_pylist() if value}

    def doc_hashes(self, source: str | None = None) -> dict[tuple[str, str], str]:
        """(source, doc_id) -> fingerprint of every document in the index."""
        if not self.exists():
            return {}
        arrow = self.table.to_lance().to_table(
            columns=["source", "doc_id", "doc_hash"], filter=f"source = {sql_string(source)}" if source else None
        )
        return {
            (src, doc): fp
            for src, doc, fp in zip(
                arrow.column("source").to_pylist(),
                arrow.column("doc_id").to_pylist(),
                arrow.column("doc_hash").to_pylist(),
            )
        }

    def stats(self) -> dict[str, Any]:
        if not self.exists():
            return {"exists": False, "chunks": 0, "documents": 0, "version": 0, "last_refresh": None}
        docs = self.doc_hashes()
        last = read_last_refresh(self.index_dir)
        return {
            "exists": True,
            "chunks": self.count_rows(),
            "documents": len(docs),
            "sources": sorted({source for source, _ in docs}),
            "version": self.version,
            "indexes": [f"{index.index_type}({', '.join(index.columns)})" for index in self.table.list_indices()],
            "last_refresh": last,
        }

    # ---------------------------------------------------------------- writing

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with open(self.index_dir / "refresh.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise RefreshInProgress("a refresh is already running on this index") from exc
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def load(self, spec: str | SourceSpec, states: dict[str, dict[str, Any]]) -> SourceLoad:
        """One source's load: a connector's changes since its cursor, or a loader's full listing.
        A connector that cannot list its source yields an incomplete load, so nothing is deleted."""
        uri = spec_uri(spec)
        try:
            connector = connector_for(
                spec,
                max_document_bytes=self.max_document_bytes,
                timeout=self.fetch_timeout,
                concurrency=self.fetch_concurrency,
            )
            if not is_connector_uri(uri):  # a folder, file or URL: listed in full every time
                return await connector.changes(None, ())
            known = await asyncio.to_thread(lambda: {doc_id for _, doc_id in self.doc_hashes(uri)})
            return await connector.changes(states.get(uri), known)
        except (SourceError, ValueError) as exc:
            failed = SourceLoad(source=uri, complete=False, incremental=True)
            failed.failures.append(LoadFailure(uri, str(exc).removeprefix(f"{uri}: ")))
            return failed

    async def refresh(
        self,
        specs: Sequence[str | SourceSpec],
        *,
        show_progress: bool | None = None,
        after_write: AfterWrite | None = None,
    ) -> RefreshReport:
        """Bring the index up to date with `specs`; only the documents of those sources are touched.
        `after_write` runs once a new version is committed and tagged (never for a no-op refresh).
        Connector cursors are saved only after the commit, so a crash re-asks rather than skips."""
        started = time.perf_counter()
        report = RefreshReport(started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        with self.write_lock():
            states = await asyncio.to_thread(read_states, self.index_dir)
            loads = [await self.load(spec, states) for spec in specs]
            report.failed_sources = [load.source for load in loads if not load.complete]
            report.api_calls = sum(load.api_calls for load in loads)
            # Everything that touches LanceDB or chunks text runs in a worker thread: the bot's event
            # loop keeps answering while a /kb-refresh from Slack writes.
            report.version_before = await asyncio.to_thread(lambda: self.version)
            new_chunks, stale = await asyncio.to_thread(self._plan, loads, report)
            vectors = await self._embed(new_chunks, show_progress)
            report.chunks_embedded = len(new_chunks)
            await asyncio.to_thread(self._write, report, new_chunks, vectors, stale)
            advanced = {load.source: load.state for load in loads if load.complete and load.state is not None}
            if advanced:
                await asyncio.to_thread(write_states, self.index_dir, {**states, **advanced})
            if after_write is not None and report.version_after != report.version_before:
                report.calibration = await after_write(self, report.version_after)
            report.seconds = time.perf_counter() - started
            await asyncio.to_thread(append_refresh_log, self.index_dir, report)
        return report

    def _write(
        self, report: RefreshReport, chunks: list[Chunk], vectors: np.ndarray, stale: dict[str, set[str]]
    ) -> None:
        """Commit, bring the indexes up to date and tag the new version (or tag a never-tagged index)."""
        if chunks or stale:
            report.chunks_deleted = self._commit(chunks, vectors, stale)
            self._maintain_indexes()
            self.table.tags.create(f"{TAG_PREFIX}{self.table.version}", self.table.version)
        elif self.exists() and not self._tags():
            self.table.tags.create(f"{TAG_PREFIX}{self.table.version}", self.table.version)
        report.version_after = self.version

    def _plan(self, loads: list[SourceLoad], report: RefreshReport) -> tuple[list[Chunk], dict[str, set[str]]]:
        """Decide per document: skip, (re)chunk, or delete. Returns new chunks and stale doc ids per source."""
        count = wordpiece_counter(self.embedder.model_path)
        new_chunks: list[Chunk] = []
        stale: dict[str, set[str]] = {}
        for load in loads:
            counts = SourceCounts(source=load.source, failed=len(load.failures))
            report.failures.extend(str(failure) for failure in load.failures)
            report.warnings.extend(load.warnings)
            existing = {doc_id: fp for (_, doc_id), fp in self.doc_hashes(load.source).items()}
            seen: set[str] = set()
            for doc in load.documents:
                seen.add(doc.doc_id)
                fp = fingerprint(doc, self.embedder.model_path, self.chunk_max_tokens, self.chunk_overlap_tokens)
                if existing.get(doc.doc_id) == fp:
                    counts.unchanged += 1
                    continue
                chunks = chunk_document(doc, count, self.chunk_max_tokens, self.chunk_overlap_tokens)
                if doc.doc_id in existing:
                    counts.updated += 1
                    stale.setdefault(load.source, set()).add(doc.doc_id)
                else:
                    counts.added += 1
                new_chunks.extend(replace(chunk, doc_hash=fp) for chunk in chunks)
            removed = load.deleted_ids if load.incremental else set(existing)  # a connector names its deletions
            if load.complete:
                vanished = (removed & set(existing)) - seen - load.protected_ids
                counts.deleted = len(vanished)
                if vanished:
                    stale.setdefault(load.source, set()).update(vanished)
            if load.incremental:  # documents a connector did not mention are unchanged
                counts.unchanged += len(set(existing) - seen - stale.get(load.source, set()))
            report.sources.append(counts)
        return new_chunks, stale

    async def _embed(self, chunks: list[Chunk], show_progress: bool | None) -> np.ndarray:
        if not chunks:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        from tqdm import tqdm

        disable = (not sys.stderr.isatty() or len(chunks) < 256) if show_progress is None else not show_progress
        with tqdm(total=len(chunks), unit="chunk", desc="embedding", disable=disable, file=sys.stderr) as bar:
            return await self.embedder.aencode([chunk.embed_text for chunk in chunks], progress=bar)

    def _commit(self, chunks: list[Chunk], vectors: np.ndarray, stale: dict[str, set[str]]) -> int:
        """One table version for all inserts, updates and deletes of this refresh."""
        data = chunks_to_arrow(chunks, vectors)
        if not self.exists():
            created = self.db.create_table(TABLE, data=data, schema=chunk_schema(vectors.shape[1] or DIMENSIONS))
            self._table = cast("LanceTable", created)  # local connection, as in `table`
            return 0
        delete_condition = " OR ".join(
            f"(source = {sql_string(source)} AND doc_id IN ({', '.join(sql_string(d) for d in sorted(ids))}))"
            for source, ids in stale.items()
            if ids
        )
        if len(chunks):
            builder = self.table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all()
            if delete_condition:
                builder = builder.when_not_matched_by_source_delete(delete_condition)
            return int(builder.execute(data).num_deleted_rows)
        # lancedb's .pyi lags its runtime: DeleteResult carries num_deleted_rows
        return int(self.table.delete(delete_condition).num_deleted_rows)  # type: ignore[attr-defined]

    def _maintain_indexes(self) -> None:
        """Full-text index over everything (no unindexed tail), vector index once it pays off."""
        from lancedb.index import FTS

        table = self.table
        if not self.has_index(FTS_COLUMN):
            table.create_index(FTS_COLUMN, config=FTS(with_position=False, stem=True, remove_stop_words=True))
        elif len(table.to_lance().get_fragments()) > COMPACT_AFTER_FRAGMENTS:
            table.optimize()  # compaction, index update and old-version cleanup: several versions
        else:
            table.to_lance().optimize.optimize_indices()  # only the index tail: one version
            table.checkout_latest()  # type: ignore[no-untyped-call]  # unannotated in lancedb
        rows = table.count_rows()
        indexed = self.has_index("vector")
        if (indexed or rows >= self.vector_index_min_rows) and needs_rebuild(
            self.vector_plan() if indexed else None, rows
        ):
            self._build_vector_index(rows)

    def _build_vector_index(self, rows: int) -> None:
        """(Re)train the vector index for `rows` and store its plan. LanceDB commits the new index as
        a new table version: readers keep searching the old one until they move to the newest
        version, where the plan follows one commit later (a reader that checks in between searches
        the new index with the old probes until its next check, `read_consistency_seconds`).
        IVF_FLAT keeps exact distances inside the probed partitions: at 100k chunks IVF_HNSW_SQ gave
        recall@10 0.46 and IVF_PQ 0.15 (benchmarks/RESULTS.md), and it builds in seconds, not minutes."""
        from lancedb.index import IvfFlat

        plan = plan_for(rows)
        table = self.table
        table.create_index(
            "vector", config=IvfFlat(distance_type="cosine", num_partitions=plan.partitions), replace=True
        )
        table.to_lance().update_config({VECTOR_PLAN_KEY: plan.to_json()})
        table.checkout_latest()  # type: ignore[no-untyped-call]  # unannotated in lancedb

    def _tags(self) -> list[tuple[int, str]]:
        """Refresh tags as (version, name), oldest first."""
        return sorted(
            (int(info["version"]), name) for name, info in self.table.tags.list().items() if name.startswith(TAG_PREFIX)
        )

    def serving_version(self) -> int:
        """The refresh whose content is being served: the newest refresh tag (after a rollback, the
        tag it restored), else the table version. Per-version artefacts are keyed by it."""
        if not self.exists():
            return 0
        tags = self._tags()
        return tags[-1][0] if tags else self.version

    def rollback(self) -> tuple[int, int]:
        """Restore the version of the refresh before the last one; returns (from, to) versions."""
        with self.write_lock():
            tags = self._tags()
            if len(tags) < 2:
                raise ValueError("nothing to roll back to: the index has only one refresh")
            current = self.table.version
            (_, latest_name), (target, _) = tags[-1], tags[-2]
            self.table.restore(target)
            self.table.tags.delete(latest_name)
            forget_states(self.index_dir)  # cursors describe the newer version: re-list every connector
            entry = {
                "rollback": True,
                "from_version": current,
                "to_version": target,
                "version_after": self.table.version,
            }
            append_log_line(self.index_dir, entry)
            return current, target


RESULT_COLUMNS = ["chunk_id", "doc_id", "source", "title", "url", "doc_url", "heading", "text", "position", "metadata"]


def chunks_to_arrow(chunks: list[Chunk], vectors: np.ndarray) -> pa.Table:
    dims = vectors.shape[1] if len(vectors) else DIMENSIONS
    columns = {
        "chunk_id": [c.chunk_id for c in chunks],
        "doc_id": [c.doc_id for c in chunks],
        "source": [c.source for c in chunks],
        "title": [c.title for c in chunks],
        "url": [c.url for c in chunks],
        "doc_url": [c.doc_url for c in chunks],
        "heading": [c.heading for c in chunks],
        "text": [c.text for c in chunks],
        FTS_COLUMN: [c.embed_text for c in chunks],
        "position": [c.position for c in chunks],
        "doc_hash": [c.doc_hash for c in chunks],
        "metadata": [c.metadata for c in chunks],
    }
    flat = pa.array(vectors.reshape(-1).astype(np.float32), type=pa.float32())
    vector_column = pa.FixedSizeListArray.from_arrays(flat, dims)
    arrays = [pa.array(columns[name], type=chunk_schema(dims).field(name).type) for name in columns]
    return pa.Table.from_arrays([*arrays, vector_column], schema=chunk_schema(dims))


# ---------------------------------------------------------------- the refresh log

LOG_NAME = "refreshes.jsonl"


def append_log_line(index_dir: Path, entry: dict[str, Any]) -> None:
    """Append and fsync, so a crash right after a refresh never loses its record."""
    path = Path(index_dir) / LOG_NAME
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def append_refresh_log(index_dir: Path, report: RefreshReport) -> None:
    entry = report.to_dict()
    entry["failures"] = entry["failures"][:50]
    entry["warnings"] = entry["warnings"][:50]
    append_log_line(index_dir, entry)


def read_last_refresh(index_dir: Path) -> dict[str, Any] | None:
    path = Path(index_dir) / LOG_NAME
    if not path.exists():
        return None
    last = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line after a crash
        if not entry.get("rollback"):
            last = entry
    return last
