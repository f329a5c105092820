"""Term statistics carried from version to version by the changed documents (bot/engine/corpus_terms.py)
equal a full recount, and are worked out without reading every chunk's text."""

from __future__ import annotations

import asyncio

import lance

from bot.engine.calibration import sampled_documents
from bot.engine.corpus_terms import TEXT_COLUMNS, term_stats
from bot.engine.terms import TermStats
from knowledge.index import KnowledgeIndex
from tests.test_knowledge_refresh_scale import export


def recount(index: KnowledgeIndex) -> TermStats:
    table = index.table.to_lance().to_table(columns=TEXT_COLUMNS)
    return TermStats.from_texts(
        f"{t}\n{h}\n{x}" for t, h, x in zip(*(table.column(c).to_pylist() for c in TEXT_COLUMNS))
    )


def test_term_statistics_follow_an_edit_without_reading_all_text(tmp_path, embedder, monkeypatch):
    source = export(tmp_path / "export.jsonl", 8)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    asyncio.run(index.refresh([str(source)]))
    first = term_stats(index)
    assert (first.df, first.documents) == (recount(index).df, recount(index).documents)

    export(source, 8, edited=3)
    asyncio.run(index.refresh([str(source)]))
    text_reads: list[object] = []
    real = lance.LanceDataset.to_batches

    def spy(self, *args, **kwargs):
        if set(kwargs.get("columns") or ()) & {"text"}:
            text_reads.append(kwargs.get("filter"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "to_batches", spy)
    carried = term_stats(index)
    monkeypatch.undo()
    truth = recount(index)
    assert (carried.df, carried.documents) == (truth.df, truth.documents) and carried.df != first.df
    assert text_reads and all(where and "a3" in where and "a4" not in where for where in text_reads), text_reads
    assert term_stats(index).df == truth.df  # saved for this version: read back, nothing scanned


def test_the_probe_sample_is_chosen_by_id_so_an_edit_moves_nothing_else():
    keys = [("kb", f"doc-{n}") for n in range(5000)]
    sample = sampled_documents(keys, limit=100)
    assert len(sample) == 100 and sample == sampled_documents(list(reversed(keys)), limit=100)
    grown = sampled_documents([*keys, ("kb", "new")], limit=100)
    assert len(set(sample) - set(grown)) <= 1
