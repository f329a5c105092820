"""Hybrid retrieval on the sample help center: fused ranking, per-document dedupe, signals."""

from __future__ import annotations

import json

from evals.metrics import mean_scores, retrieval_scores
from knowledge.search import fts_query_text, fuse
from tests.conftest import SAMPLE_EVALS


def test_fts_query_text_strips_syntax():
    assert fts_query_text('what\'s "SSO" (SAML)? AND/OR: x') == "what s SSO SAML AND OR x"


def row(chunk, doc, distance=None, score=None):
    return {
        "chunk_id": chunk,
        "doc_id": doc,
        "source": "s",
        "title": doc,
        "url": f"u/{doc}",
        "doc_url": f"u/{doc}",
        "heading": "",
        "text": chunk,
        "position": 0,
        "_distance": distance,
        "_score": score,
    }


def test_fuse_ranks_documents_found_by_both_lists_first_and_dedupes():
    vector = [row("a1", "A", 0.2), row("a2", "A", 0.3), row("b1", "B", 0.35), row("c1", "C", 0.4)]
    fts = [row("c1", "C", score=9.0), row("b1", "B", score=8.0), row("d1", "D", score=7.0)]
    hits = fuse(vector, fts, k=3, per_doc=1, vector_weight=1.0, fts_weight=1.0, rrf_k=60)
    assert [h.doc_id for h in hits] == ["C", "B", "A"]  # found by both lists beats first in one
    assert hits[1].vector_rank == 2 and hits[1].fts_rank == 2 and hits[1].fts_score == 8.0
    assert abs(hits[1].vector_similarity - 0.65) < 1e-6 and 0 < hits[-1].score < hits[0].score <= 1
    two = fuse(vector, fts, k=1, per_doc=2, vector_weight=1.0, fts_weight=0.0, rrf_k=60)
    assert [h.chunk_id for h in two] == ["a1", "a2"]


def test_hybrid_beats_or_matches_each_list_on_the_sample_eval_set(sample_searcher):
    cases = [json.loads(line) for line in SAMPLE_EVALS.read_text().splitlines() if line.strip()]
    answerable = [case for case in cases if case["answerable"]]
    scores = {}
    for mode in ("fts", "vector", "hybrid"):
        rows = []
        for case in answerable:
            hits = sample_searcher.search(case["question"], 5, mode=mode).hits
            assert len({h.doc_id for h in hits}) == len(hits)  # one hit per document
            rows.append(retrieval_scores([[h.doc_id, h.doc_url, h.url] for h in hits], case["gold_sources"], 5))
        scores[mode] = mean_scores(rows)
    assert scores["hybrid"]["mrr@5"] >= max(scores["fts"]["mrr@5"], scores["vector"]["mrr@5"]) - 0.02, scores
    assert scores["hybrid"]["recall@5"] >= 0.8, scores


def test_pdf_and_html_sources_are_searchable_with_their_urls(sample_searcher):
    hits = sample_searcher.search("where is customer data stored encryption at rest whitepaper", 3).hits
    assert any(h.doc_id.endswith(".pdf") and h.doc_url.startswith("https://help.tallybook.example/") for h in hits)
    html = sample_searcher.search("ACH direct debit bank transfer", 3).hits
    assert any(h.doc_id.endswith(".html") for h in html)


def unit(*values):
    import numpy as np

    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_document_vector_ranking_uses_the_mean_of_all_chunks():
    import numpy as np

    from knowledge.search import document_vector_ranking

    query = unit(1, 1, 0)
    # A's sections each cover half of the question; B has one chunk close to it and one off topic.
    docs = {"A": np.stack([unit(1, 0, 0), unit(0, 1, 0)]), "B": np.stack([unit(1, 0.6, 0), unit(0, 0, 1)])}
    best_chunk = max(docs, key=lambda key: float((docs[key] @ query).max()))
    assert best_chunk == "B"  # what the chunk lists alone would say
    assert document_vector_ranking(query, docs) == ["A", "B"]
    assert document_vector_ranking(query, {}) == []


def test_document_fts_ranking_sums_the_bm25_of_each_document_s_chunks():
    from knowledge.search import document_fts_ranking

    fts = [row("b1", "B", score=7.0), row("a1", "A", score=5.0), row("a2", "A", score=4.0), row("c1", "C", score=1.0)]
    assert document_fts_ranking(fts) == ["s\0A", "s\0B", "s\0C"]


def test_fuse_adds_document_level_rankings_without_inventing_documents():
    vector = [row("b1", "B", 0.2), row("a1", "A", 0.3)]
    fts = [row("b1", "B", score=9.0), row("a1", "A", score=8.0)]
    plain = fuse(vector, fts, k=2, per_doc=1, vector_weight=1.0, fts_weight=1.0, rrf_k=60)
    assert [h.doc_id for h in plain] == ["B", "A"]
    documents = [(["s\0A", "s\0B", "s\0Z"], 2.0), (["s\0A"], 1.0)]  # Z has no chunk among the candidates
    hits = fuse(vector, fts, k=3, per_doc=1, vector_weight=1.0, fts_weight=1.0, rrf_k=60, documents=documents)
    assert [h.doc_id for h in hits] == ["A", "B"]
    assert 0 < hits[1].score < hits[0].score <= 1 and hits[0].text == "a1"


def test_index_returns_every_chunk_vector_of_the_asked_documents(sample_index):
    table = sample_index.table.to_lance().to_table(columns=["source", "doc_id"]).to_pylist()
    keys = sorted({(r["source"], r["doc_id"]) for r in table})[:3]
    vectors = sample_index.document_vectors([*keys, ("nowhere", "missing.md")])
    assert set(vectors) == set(keys)
    for key in keys:
        chunks = sum(1 for r in table if (r["source"], r["doc_id"]) == key)
        assert vectors[key].shape == (chunks, 384)
    assert sample_index.document_vectors([]) == {}


def test_searcher_ranks_by_whole_document_embedding_when_only_that_list_counts(sample_index, embedder):
    import numpy as np

    from knowledge.search import Searcher

    query = "refund a card payment to the customer"
    only_documents = Searcher(sample_index, vector_weight=0.0, fts_weight=0.0, doc_vector_weight=1.0)
    result = only_documents.search(query, 3, mode="vector")
    assert "doc_vector_ms" in result.timings_ms
    candidates = {(r["source"], r["doc_id"]) for r in sample_index.vector_search(embedder.encode_query(query), 50)}
    vectors = sample_index.document_vectors(candidates)
    q = embedder.encode_query(query)
    expected = sorted(candidates, key=lambda key: -float(q @ (m := vectors[key].mean(axis=0)) / np.linalg.norm(m)))
    assert [(h.source, h.doc_id) for h in result.hits] == expected[:3]
    default = Searcher(sample_index).search(query, 3)  # document-level lists are an option, off by default
    assert "doc_vector_ms" not in default.timings_ms


def test_hybrid_searches_run_from_full_text_pool_threads_finish(sample_searcher):
    """A search already on a full-text worker runs its full-text query inline: four of them filling
    the pool while waiting on queued full-text queries would never finish."""
    from concurrent.futures import wait

    from knowledge.search import FULL_TEXT_POOL

    questions = ["How do I reset my password?", "refund policy", "export invoices to CSV", "SSO setup"]
    futures = [FULL_TEXT_POOL.submit(sample_searcher.search, question, 5) for question in questions * 2]
    done, pending = wait(futures, timeout=120)
    assert not pending, f"{len(pending)} searches still waiting on the full-text pool"
    assert all(future.result().hits for future in done)
