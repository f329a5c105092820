"""The vector index's partitions and probes follow the row count, through the real LanceDB table."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import knowledge.vector_tuning as tuning
from knowledge.chunking import Chunk
from knowledge.index import VECTOR_PLAN_KEY, KnowledgeIndex, RefreshReport
from knowledge.vector_tuning import VectorIndexPlan, needs_rebuild, plan_for


def test_plan_is_a_pure_function_of_the_row_count():
    assert plan_for(100_000) == plan_for(100_000)
    assert plan_for(100_000).rows == 100_000
    sizes = [1, 1_000, 10_000, 50_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]
    plans = [plan_for(rows) for rows in sizes]
    for plan in plans:
        assert 1 <= plan.nprobes <= plan.partitions
        assert plan.rows / plan.partitions == pytest.approx(tuning.PARTITION_ROWS, rel=0.5) or plan.partitions == 1
    partitions = [plan.partitions for plan in plans]
    probes = [plan.nprobes for plan in plans]
    assert partitions == sorted(partitions) and probes == sorted(probes)
    dense = [plan_for(rows) for rows in range(10_000, 5_000_000, 7_919)]
    assert [plan.nprobes for plan in dense] == sorted(plan.nprobes for plan in dense)  # no step back at any size
    # the fixed 20 probes of ~244 partitions that lost recall at 1M chunks (issue 18) are gone
    assert plan_for(1_000_000).nprobes / plan_for(1_000_000).partitions >= 0.2
    with pytest.raises(ValueError):
        plan_for(0)


def test_rebuild_is_due_when_the_table_doubles_or_halves():
    built = plan_for(100_000)
    assert needs_rebuild(None, 10)  # an index no plan of ours describes is retrained
    assert not needs_rebuild(built, 100_000)
    assert not needs_rebuild(built, 199_999) and not needs_rebuild(built, 50_001)
    assert needs_rebuild(built, 200_000) and needs_rebuild(built, 50_000)


def test_plans_build_ivf_sq_and_an_older_ivf_flat_index_is_retrained():
    plan = plan_for(1_000_000)
    assert (plan.kind, plan.refine_factor) == ("IVF_SQ", tuning.REFINE_FACTOR)
    older = VectorIndexPlan.from_json('{"rows": 1000000, "partitions": 244, "nprobes": 86}')  # before IVF_SQ
    assert older is not None and older.kind == "IVF_FLAT" and needs_rebuild(older, 1_000_000)
    assert not needs_rebuild(plan, 1_000_000)


def test_plan_round_trips_and_rejects_what_it_did_not_write():
    plan = VectorIndexPlan(rows=5000, partitions=2, nprobes=2, refine_factor=4)
    assert VectorIndexPlan.from_json(plan.to_json()) == plan
    for junk in ("", "{}", "[1]", '{"rows": 0, "partitions": 1, "nprobes": 1}', '{"rows": "x"}'):
        assert VectorIndexPlan.from_json(junk) is None


def synthetic_chunks(start: int, count: int, rng: np.random.Generator) -> tuple[list[Chunk], np.ndarray]:
    """Clustered unit vectors (eight directions plus noise): what k-means partitions meaningfully."""
    centres = np.random.default_rng(0).normal(size=(8, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 8, size=count)] + rng.normal(0, 0.3, size=(count, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    template = Chunk("", "", "synthetic", "Article", "https://help.example/a", "https://help.example/a", "", "", 0, "x")
    chunks = [
        replace(template, chunk_id=f"c{i}", doc_id=f"doc{i}", text=f"article {i}") for i in range(start, start + count)
    ]
    return chunks, vectors


def built_partitions(index: KnowledgeIndex) -> int:
    """Read from the index itself. (LanceDB's optimize may join partitions as small as these test
    ones; at real sizes, around 4096 rows each, it adds the new rows to the trained partitions.)"""
    stats = index.table.to_lance().stats.index_stats("vector_idx")
    return int(stats["indices"][0]["num_partitions"])


def test_index_is_retrained_with_a_new_plan_when_the_table_doubles(tmp_path, embedder, monkeypatch):
    monkeypatch.setattr(tuning, "PARTITION_ROWS", 100)  # partitions at test scale: 3 at 300 rows, 7 at 700
    monkeypatch.setattr(tuning, "MIN_NPROBES", 1)
    index = KnowledgeIndex(tmp_path / "index", embedder, vector_index_min_rows=300)
    rng = np.random.default_rng(1)

    def write(start: int, count: int) -> None:  # the refresh's own write path, without embedding
        index._write(RefreshReport(), *synthetic_chunks(start, count, rng), stale={})

    write(0, 200)
    assert not index.has_index("vector") and index.vector_plan() is None and index.search_plan() is None

    write(200, 100)  # 300 rows: the index is built, trained for 300
    first = index.vector_plan()
    assert first == plan_for(300) and built_partitions(index) == first.partitions == 3
    version_with_first = index.version

    write(300, 200)  # 500 rows: below twice 300, the new rows join the existing index, not retrained
    assert index.vector_plan() == first
    assert index.table.index_stats("vector_idx").num_unindexed_rows == 0

    write(500, 200)  # 700 rows: past twice 300, retrained
    second = index.vector_plan()
    assert second == plan_for(700) and built_partitions(index) == second.partitions == 7

    # Searches use the stored plan of the index they read: the probes travel with the table version.
    query = index.vector_query(np.ones(32, dtype=np.float32), 5).to_query_object()
    assert (query.minimum_nprobes, query.maximum_nprobes) == (second.nprobes, second.nprobes)
    assert query.refine_factor == second.refine_factor
    assert [i.index_type for i in index.table.list_indices() if i.columns == ["vector"]] == ["IvfSq"]
    # The index holds 8-bit codes, but the refine step re-ranks on the stored vectors: distances are exact.
    probe = np.ones(32, dtype=np.float32) / np.sqrt(32)
    rows = index.vector_search(probe, 5)
    vectors = dict(zip(*(index.table.to_arrow().column(name).to_pylist() for name in ("chunk_id", "vector"))))
    for row in rows:
        assert row["_distance"] == pytest.approx(1 - float(np.asarray(vectors[row["chunk_id"]]) @ probe), abs=1e-5)
    assert len(rows) == 5
    index.table.restore(version_with_first)
    assert index.vector_plan() == first and built_partitions(index) == 3
    assert index.vector_query(np.ones(32, dtype=np.float32), 5).to_query_object().minimum_nprobes == first.nprobes


def test_an_index_without_a_stored_plan_is_searched_for_its_size_then_retrained(tmp_path, embedder, monkeypatch):
    monkeypatch.setattr(tuning, "PARTITION_ROWS", 100)
    monkeypatch.setattr(tuning, "MIN_NPROBES", 1)
    index = KnowledgeIndex(tmp_path / "index", embedder, vector_index_min_rows=300)
    rng = np.random.default_rng(2)
    index._write(RefreshReport(), *synthetic_chunks(0, 400, rng), stale={})
    index.table.to_lance().update_config({VECTOR_PLAN_KEY: None})  # as an older release left it
    index.table.checkout_latest()
    assert index.vector_plan() is None and index.search_plan() == plan_for(400)

    index._write(RefreshReport(), *synthetic_chunks(400, 10, rng), stale={})
    assert index.vector_plan() == plan_for(410)


def test_a_search_planned_before_the_first_index_still_gets_exact_distances(tmp_path, embedder, monkeypatch):
    """A reader whose plan comes from the version before the IVF_SQ index was built (no plan, None)
    and whose query then reads the indexed version: without a re-rank, IVF_SQ's distances are about
    twice the true cosine distance, and the confidence judge reads them."""
    monkeypatch.setattr(tuning, "PARTITION_ROWS", 100)
    monkeypatch.setattr(tuning, "MIN_NPROBES", 1)
    index = KnowledgeIndex(tmp_path / "index", embedder, vector_index_min_rows=300)
    index._write(RefreshReport(), *synthetic_chunks(0, 400, np.random.default_rng(3)), stale={})
    assert index.has_index("vector")
    index._vector_plans = (index.table.version, None, None)  # the plan as read one version earlier
    probe = np.ones(32, dtype=np.float32) / np.sqrt(32)
    vectors = dict(zip(*(index.table.to_arrow().column(name).to_pylist() for name in ("chunk_id", "vector"))))
    rows = index.vector_search(probe, 5)
    assert len(rows) == 5
    for row in rows:
        assert row["_distance"] == pytest.approx(1 - float(np.asarray(vectors[row["chunk_id"]]) @ probe), abs=1e-5)
