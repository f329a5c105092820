"""The technotes development domain keeps its contract: loadable by the project's own loaders,
gold sources that exist, honest unanswerables (their notes really are out of the knowledge).

Fast on purpose: no index, no embeddings; it reads three JSONL files.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from evals.cases import EvalCase, load_cases
from knowledge.sources import Document, load_path
from tests.conftest import ROOT

TECHNOTES = ROOT / "evals" / "datasets" / "technotes"
KB = TECHNOTES / "kb.jsonl"
REMOVED = TECHNOTES / "kb-removed.jsonl"
CASES = TECHNOTES / "cases.jsonl"
URL_PREFIX = "https://support.northwind-relay.example/technotes/"
MAX_DOCUMENT_BYTES = 2_000_000  # the Settings default


def load_documents(path: Path) -> list[Document]:
    """Every line of a JSONL knowledge export, through the loader `supportbot refresh` uses."""
    result = load_path(str(path), MAX_DOCUMENT_BYTES)
    assert result.complete and not result.failures, [str(failure) for failure in result.failures]
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(result.documents) == len(lines), "the loader dropped lines (duplicate ids?)"
    return result.documents


@pytest.fixture(scope="module")
def kb() -> list[Document]:
    return load_documents(KB)


@pytest.fixture(scope="module")
def removed() -> list[Document]:
    return load_documents(REMOVED)


@pytest.fixture(scope="module")
def cases() -> list[EvalCase]:
    return load_cases(CASES)


def words(text: str) -> int:
    return len(text.split())


def test_kb_notes_have_unique_urls_titles_and_technote_shape(kb):
    assert len(kb) >= 60
    ids = [doc.doc_id for doc in kb]
    assert len(set(ids)) == len(ids)
    assert all(doc_id.startswith(URL_PREFIX) for doc_id in ids)
    assert len({doc.title for doc in kb}) == len(kb), "titles must tell notes apart"
    for doc in kb:
        assert 350 <= words(doc.text) <= 1200, (doc.doc_id, words(doc.text))
        assert "## Related information" in doc.text, doc.doc_id
        assert doc.text.count("```") % 2 == 0, f"unbalanced code fence in {doc.doc_id}"


def test_removed_notes_are_out_of_the_kb(kb, removed):
    kb_ids = {doc.doc_id for doc in kb}
    removed_ids = {doc.doc_id for doc in removed}
    assert len(removed) >= 10
    assert not kb_ids & removed_ids
    assert all(doc_id.startswith(URL_PREFIX) for doc_id in removed_ids)
    for doc in removed:  # written as full technotes, so adding one back is a realistic knowledge change
        assert "## Resolving the problem" in doc.text and "## Related information" in doc.text, doc.doc_id
        assert doc.text.count("```") % 2 == 0, f"unbalanced code fence in {doc.doc_id}"


def test_cases_counts_and_unique_ids(cases):
    assert len(cases) == 100
    assert len({case.id for case in cases}) == len(cases)
    assert sum(case.answerable for case in cases) == 75
    assert all(case.origin == "handwritten" for case in cases)


def test_gold_sources_exist_and_labels_are_consistent(kb, cases):
    kb_ids = {doc.doc_id for doc in kb}
    for case in cases:
        if case.answerable:
            assert case.gold_sources, case.id
            assert case.reference_answer, case.id
            missing = set(case.gold_sources) - kb_ids
            assert not missing, (case.id, missing)
        else:
            assert case.gold_sources == [], case.id


def test_every_removed_note_backs_an_unanswerable_case(removed, cases):
    """Unanswerables of kind removed-note name their note in kb-removed.jsonl, so they can be audited."""
    removed_ids = {doc.doc_id for doc in removed}
    extra = [case.model_extra or {} for case in cases if not case.answerable]
    kinds = [fields.get("unanswerable_kind") for fields in extra]
    assert set(kinds) == {"removed-note", "not-covered"}
    cited = [fields["removed_source"] for fields in extra if fields.get("unanswerable_kind") == "removed-note"]
    assert set(cited) <= removed_ids
    assert set(cited) == removed_ids, "a removed note without a question is dead weight"
    answerable_extra = [case.model_extra or {} for case in cases if case.answerable]
    assert not any("removed_source" in fields for fields in answerable_extra)


def test_questions_are_long_enough_to_carry_an_error_message(cases):
    lengths = [words(case.question) for case in cases]
    assert statistics.median(lengths) >= 30
    assert min(lengths) >= 10 and max(lengths) <= 150


def test_files_are_one_json_object_per_line():
    for path in (KB, REMOVED, CASES):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            assert isinstance(json.loads(line), dict), f"{path.name}:{number}"
