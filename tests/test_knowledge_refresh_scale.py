"""Refresh cost that follows the change: what a refresh reads, what it re-embeds, the embedding
device, and loading overlapping with embedding (issue 18). Speed itself is measured in
benchmarks/refresh_scale.py, never here."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import lance
import pytest
from pydantic import ValidationError

from knowledge.embeddings import Embedder, check_device, resolve_device
from knowledge.index import HASH_COLUMNS, KnowledgeIndex

BODY = "Open Settings, then Billing, and choose the plan that fits your team. " * 6


def export(path: Path, articles: int, edited: int | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for n in range(articles):
            text = f"## Plans\n\n{BODY}\n\n## Seats\n\nArticle {n} explains seats. {BODY}"
            if n == edited:
                text += "\n\n## Changed\n\nSeats now renew monthly."
            handle.write(json.dumps({"id": f"a{n}", "title": f"Article {n}", "text": text}) + "\n")
    return path


@pytest.fixture
def reads(monkeypatch):
    """Every column projection asked of a Lance dataset (the reads LanceDB's own helpers make
    go through these too): None means every column."""
    seen: list[tuple[str, Any]] = []
    for name in ("to_table", "to_batches", "scanner"):
        real = getattr(lance.LanceDataset, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            columns = kwargs.get("columns", args[0] if args else None)
            seen.append((_name, None if columns is None else tuple(columns)))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(lance.LanceDataset, name, spy)
    return seen


def test_a_noop_refresh_reads_only_ids_and_hashes_and_an_edit_reembeds_only_its_document(tmp_path, embedder, reads):
    source = export(tmp_path / "export.jsonl", 12)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    first = asyncio.run(index.refresh([str(source)]))
    assert first.total("added") == 12

    reads.clear()
    before = embedder.texts_encoded
    noop = asyncio.run(index.refresh([str(source)]))
    assert (noop.total("unchanged"), noop.chunks_embedded, noop.version_after) == (12, 0, first.version_after)
    assert embedder.texts_encoded == before
    assert reads, "the refresh read the index through a path this test does not see"
    assert all(columns is not None and set(columns) <= set(HASH_COLUMNS) for _, columns in reads), reads

    export(source, 12, edited=5)
    reads.clear()
    edit = asyncio.run(index.refresh([str(source)]))
    assert reads and all(columns is not None and set(columns) <= set(HASH_COLUMNS) for _, columns in reads), reads
    rows = index.table.to_lance().to_table(columns=["doc_id"], filter="doc_id = 'a5'").num_rows
    assert (edit.total("updated"), edit.total("unchanged")) == (1, 11)
    assert edit.chunks_embedded == rows and embedder.texts_encoded == before + rows


def test_document_hashes_are_one_entry_per_document_whatever_the_batch_size(tmp_path, embedder, monkeypatch):
    source = export(tmp_path / "export.jsonl", 9)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    asyncio.run(index.refresh([str(source)]))
    whole = index.doc_hashes()
    monkeypatch.setattr("knowledge.index.SCAN_BATCH_ROWS", 2)  # documents straddle batches
    assert index.doc_hashes() == whole and len(whole) == 9 < index.count_rows()
    assert index.doc_hashes(str(source.resolve())) == whole and index.doc_hashes("elsewhere") == {}


def test_loading_overlaps_with_embedding(tmp_path, embedder):
    """The last file of the folder is a pipe the test writes only once something was embedded:
    a refresh that loads everything before embedding waits for it forever (here: 60 s)."""
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a-plans.md").write_text(f"# Plans\n\n{BODY}", encoding="utf-8")
    last = folder / "z-seats.md"
    os.mkfifo(last)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    before = embedder.texts_encoded
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = asyncio.run(index.refresh([str(folder)]))
        except BaseException as exc:  # surfaced by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while embedder.texts_encoded == before and time.monotonic() < deadline:
        time.sleep(0.05)
    embedded_while_loading = embedder.texts_encoded - before
    with open(last, "w", encoding="utf-8") as pipe:  # unblocks the loader either way
        pipe.write(f"# Seats\n\nAdd seats under Settings, Team. {BODY}")
    worker.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert embedded_while_loading > 0, "nothing was embedded before the loader finished"
    report = outcome["report"]
    assert report.total("added") == 2 and report.chunks_embedded == index.count_rows()


def test_the_embedding_device_resolves_and_bad_names_are_refused():
    assert check_device(" CPU ") == "cpu"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("cuda", cuda_available=True) == "cuda"
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(ValueError, match="SUPPORTBOT_EMBEDDING_DEVICE must be one of cpu, cuda, auto, not 'gpu'"):
        Embedder(device="gpu")
    with pytest.raises(ValueError, match="at least 1"):
        Embedder(batch_size=0)


def test_the_device_setting_picks_its_batch_size_and_auto_runs_on_this_cpu(embedder):
    from bot.settings import Settings

    with pytest.raises(ValidationError, match="embedding_device"):
        Settings(embedding_device="gpu", _env_file=None)
    settings = Settings(
        embedding_device=" Auto ", embedding_batch_size=8, embedding_cuda_batch_size=512, _env_file=None
    )
    assert settings.embedding_device == "auto"
    auto = Embedder.from_settings(settings)
    assert auto.device == "cpu" and auto.batch_size == 8  # no GPU here: the CPU and its batch size
    auto._model = embedder.model  # the session's loaded model: this test checks the device choice, not loading
    assert auto.encode(["How do I add a seat?"]).shape == (1, 384)
    cuda = Embedder(device="cuda", batch_size=8, cuda_batch_size=512)
    cuda._device = "cuda"  # as resolved on a machine with a GPU
    assert cuda.batch_size == 512


def test_an_untouched_export_is_not_read_again_and_a_touched_one_is(tmp_path, embedder):
    source = export(tmp_path / "export.jsonl", 6)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    asyncio.run(index.refresh([str(source)]))
    stamp = source.stat().st_mtime_ns
    size = source.stat().st_size
    source.write_bytes(b"{not json}\n".ljust(size, b" "))  # same size, same time: looks untouched
    os.utime(source, ns=(stamp, stamp))
    skipped = asyncio.run(index.refresh([str(source)]))
    assert (skipped.total("unchanged"), skipped.total("failed"), skipped.total("deleted")) == (6, 0, 0)

    export(source, 6, edited=2)  # a real edit moves the time: read again, one document re-embedded
    edited = asyncio.run(index.refresh([str(source)]))
    assert (edited.total("updated"), edited.total("unchanged"), edited.chunks_embedded > 0) == (1, 5, True)


def test_an_edited_export_parses_only_its_changed_lines(tmp_path, embedder):
    from knowledge.connectors.state import read_states

    source = export(tmp_path / "export.jsonl", 6)
    index = KnowledgeIndex(tmp_path / "index", embedder)
    asyncio.run(index.refresh([str(source)]))
    export(source, 6, edited=4)
    load, documents = asyncio.run(index.open_stream(str(source), read_states(index.sidecar)))
    assert [doc.doc_id for doc in documents] == ["a4"] and load.unchanged_ids == {"a0", "a1", "a2", "a3", "a5"}
    edit = asyncio.run(index.refresh([str(source)]))
    assert (edit.total("updated"), edit.total("unchanged"), edit.total("deleted")) == (1, 5, 0)
