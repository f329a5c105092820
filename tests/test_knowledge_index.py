"""Incremental refresh, scoping, rollback and crash safety, through the real LanceDB table."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knowledge.index import KnowledgeIndex, RefreshInProgress
from knowledge.search import Searcher

ARTICLES = {
    "refunds.md": "---\ntitle: Refund a payment\nurl: https://help.example/refunds\n---\n## Full refunds\nOpen the payment and click Refund. Refunds reach the card in 5 to 10 business days.\n## Partial refunds\nEnter a smaller amount before confirming.",
    "sso.md": "---\ntitle: Single sign-on\nurl: https://help.example/sso\n---\nSAML SSO is available on the Enterprise plan. Upload the IdP metadata XML under Settings, Security.",
    "export.md": "---\ntitle: Export your data\nurl: https://help.example/export\n---\nUse Settings, Data, Export to download a ZIP of CSV files. Exports are kept for 7 days.",
    "api.md": "---\ntitle: API rate limits\nurl: https://help.example/api-limits\n---\nThe REST API allows 120 requests per minute per key. A 429 response carries a Retry-After header.",
}


def make_folder(root: Path, articles=ARTICLES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in articles.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def refresh(index, *specs):
    return asyncio.run(index.refresh([str(s) for s in specs]))


@pytest.fixture
def index(tmp_path, embedder):
    return KnowledgeIndex(tmp_path / "index", embedder)


def test_second_refresh_embeds_nothing_and_edits_reembed_one_document(tmp_path, index, embedder):
    folder = make_folder(tmp_path / "kb")
    first = refresh(index, folder)
    assert (first.total("added"), first.total("failed")) == (4, 0)
    assert first.chunks_embedded == index.count_rows() > 0

    before = embedder.texts_encoded
    second = refresh(index, folder)
    assert second.chunks_embedded == 0 and embedder.texts_encoded == before
    assert (second.total("unchanged"), second.version_after) == (4, first.version_after)

    sso_before = sum(1 for r in index.table.to_arrow().to_pylist() if r["doc_id"] == "sso.md")
    (folder / "sso.md").write_text(ARTICLES["sso.md"] + "\nSCIM provisioning is supported for Okta.", encoding="utf-8")
    edit = refresh(index, folder)
    sso_chunks = [r for r in index.table.to_arrow().to_pylist() if r["doc_id"] == "sso.md"]
    assert (edit.total("updated"), edit.total("unchanged")) == (1, 3)
    assert edit.chunks_embedded == len(sso_chunks) and embedder.texts_encoded == before + len(sso_chunks)
    assert edit.version_after == edit.version_before + 2  # one commit for the data, one for the index update
    # Replaced chunks are updates, not deletions: the count is exact, from LanceDB's own merge result.
    assert edit.chunks_deleted == max(0, sso_before - len(sso_chunks))
    export_chunks = sum(1 for r in index.table.to_arrow().to_pylist() if r["doc_id"] == "export.md")

    (folder / "export.md").unlink()
    delete = refresh(index, folder)
    assert (delete.total("deleted"), delete.chunks_embedded) == (1, 0)
    assert delete.chunks_deleted == export_chunks > 0
    assert "export.md" not in {r["doc_id"] for r in index.table.to_arrow().to_pylist()}

    hits = Searcher(index).search("SCIM provisioning Okta", 3).hits
    assert hits[0].doc_id == "sso.md"


def test_refreshing_one_source_never_deletes_another(tmp_path, index):
    a = make_folder(tmp_path / "a", {"one.md": "# One\nAlpha article about invoices and their numbering."})
    b = make_folder(tmp_path / "b", {"two.md": "# Two\nBeta article about expenses and receipts scanning."})
    refresh(index, a, b)
    (a / "one.md").unlink()
    (a / "three.md").write_text("# Three\nGamma article about taxes and VAT rates.", encoding="utf-8")
    report = refresh(index, a)
    assert (report.total("added"), report.total("deleted")) == (1, 1)
    assert {(Path(s).name, d) for (s, d) in index.doc_hashes()} == {("a", "three.md"), ("b", "two.md")}


def test_a_missing_source_or_a_failing_file_deletes_nothing(tmp_path, index):
    folder = make_folder(tmp_path / "kb")
    refresh(index, folder)
    rows = index.count_rows()
    (folder / "api.md").write_bytes(b"\x00\x00binary now")
    report = refresh(index, folder, tmp_path / "does-not-exist")
    assert report.total("failed") == 2 and report.total("deleted") == 0
    assert any("api.md" in f and "binary" in f for f in report.failures)
    assert any("does-not-exist" in f for f in report.failures)
    assert index.count_rows() == rows  # the last good version of api.md still answers


def test_rollback_returns_the_previous_refresh(tmp_path, index):
    folder = make_folder(tmp_path / "kb")
    refresh(index, folder)
    (folder / "refunds.md").write_text(ARTICLES["refunds.md"].replace("5 to 10", "2 to 3"), encoding="utf-8")
    (folder / "new.md").write_text("# New\nBrand new article about the mobile app offline mode.", encoding="utf-8")
    refresh(index, folder)
    assert "new.md" in {d for _, d in index.doc_hashes()}
    current, target = index.rollback()
    docs = {d for _, d in index.doc_hashes()}
    assert "new.md" not in docs and len(docs) == 4 and target < current
    text = " ".join(r["text"] for r in index.table.to_arrow().to_pylist() if r["doc_id"] == "refunds.md")
    assert "5 to 10" in text
    assert Searcher(index).search("refund card business days", 1).hits[0].doc_id == "refunds.md"
    with pytest.raises(ValueError, match="nothing to roll back"):
        index.rollback()
    # A refresh after a rollback brings the new state back and is itself undoable.
    report = refresh(index, folder)
    assert (report.total("added"), report.total("updated")) == (1, 1)


def test_fts_index_has_no_unindexed_tail_after_refresh(tmp_path, index):
    folder = make_folder(tmp_path / "kb")
    refresh(index, folder)
    (folder / "more.md").write_text("# More\nA fresh article about bank feeds and reconciliation.", encoding="utf-8")
    refresh(index, folder)
    [fts] = [i for i in index.table.list_indices() if i.index_type == "FTS"]
    stats = index.table.index_stats(fts.name)
    assert stats.num_unindexed_rows == 0 and stats.num_indexed_rows == index.count_rows()


def test_two_refreshes_at_once_are_refused(tmp_path, index):
    Path(index.uri).mkdir(parents=True)
    with open(Path(index.uri) / "refresh.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(RefreshInProgress):
            refresh(index, make_folder(tmp_path / "kb"))


def test_a_reader_keeps_answering_while_a_refresh_writes(tmp_path, embedder):
    folder = make_folder(tmp_path / "kb")
    writer = KnowledgeIndex(tmp_path / "index", embedder)
    refresh(writer, folder)
    reader = KnowledgeIndex(tmp_path / "index", embedder, read_consistency_seconds=0)
    searcher = Searcher(reader)
    for i in range(12):
        (folder / f"extra{i}.md").write_text(
            f"# Extra {i}\nArticle {i} about purchase orders and approvals.", encoding="utf-8"
        )

    async def scenario():
        task = asyncio.create_task(writer.refresh([str(folder)]))
        answered_during_refresh = 0
        while not task.done():
            result = await searcher.asearch("refund card", 2)
            assert result.hits and result.hits[0].doc_id == "refunds.md"
            answered_during_refresh += not task.done()  # a refresh that blocked the loop would be done by now
            await asyncio.sleep(0.01)
        await task
        return answered_during_refresh

    assert asyncio.run(scenario()) >= 2  # the old `> 0` counted the first search, which always runs
    assert len(searcher.search("purchase orders approvals", 5).hits) == 5  # the reader sees the new version


def test_killed_refresh_leaves_previous_version_queryable(tmp_path):
    folder = make_folder(tmp_path / "kb")
    data_dir = tmp_path / "data"
    env = {**os.environ, "SUPPORTBOT_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    cli = [sys.executable, "-m", "bot.cli", "refresh", "--source", str(folder)]
    subprocess.run(cli, env=env, check=True, capture_output=True, timeout=300)
    index = KnowledgeIndex(data_dir / "index")
    version, rows = index.version, index.count_rows()

    for i in range(150):  # enough new text that embedding takes seconds
        (folder / f"bulk{i}.md").write_text(
            f"# Bulk {i}\n" + f"Paragraph {i} on ledger reconciliation. " * 30, encoding="utf-8"
        )
    process = subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    lock = data_dir / "index" / "refresh.lock"
    while time.time() < deadline:  # wait until the refresh holds its lock, then a little longer
        if lock.exists():
            with open(lock) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                except BlockingIOError:
                    break
        time.sleep(0.05)
    time.sleep(2.0)
    assert process.poll() is None, "refresh finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    reopened = KnowledgeIndex(data_dir / "index")
    assert (reopened.version, reopened.count_rows()) == (version, rows)
    assert Searcher(reopened).search("SAML identity provider", 1).hits[0].doc_id == "sso.md"
