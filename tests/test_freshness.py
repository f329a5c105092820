"""Freshness: a cited source shows its last-updated date, and an old one is flagged, from the
source's own date (front matter here, the connectors' updated_at elsewhere) through the index,
the pipeline and the Slack sources block."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.engine.freshness import freshness_label, is_stale, mark_stale
from bot.engine.pipeline import Pipeline
from bot.engine.types import Citation, Question
from bot.settings import Settings
from bot.slack.blocks import sources_block
from knowledge.index import KnowledgeIndex

NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


def citation(updated_at: str | None, stale: bool = False) -> Citation:
    return Citation(
        number=1, doc_id="d", url="https://kb/d", title="D", cited_text="x", updated_at=updated_at, stale=stale
    )


def test_labels_and_staleness():
    assert is_stale("2024-06-01T10:00:00Z", NOW, 365) and not is_stale("2026-06-01T10:00:00.000Z", NOW, 365)
    assert not is_stale("2020-01-01", NOW, 0)  # 0 days: never stale
    assert not is_stale(None, NOW, 365) and not is_stale("not a date", NOW, 365)
    assert freshness_label(citation("2026-01-05T09:00:00+01:00")) == "updated 5 Jan 2026"
    assert freshness_label(citation("2024-03-02", stale=True)) == "updated 2 Mar 2024, may be out of date"
    assert freshness_label(citation(None)) == ""
    assert [c.stale for c in mark_stale([citation("2024-03-02"), citation("2026-11-01")], NOW, 365)] == [True, False]


async def test_an_old_cited_source_is_flagged_in_the_answer_and_its_sources_block(tmp_path, embedder):
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "export.md").write_text(
        "---\ntitle: Export your data\nurl: https://help.example/export\nupdated_at: 2021-04-09\n---\n"
        "Use Settings, Data, Export to download a ZIP of CSV files. Exports are kept for 7 days.",
        encoding="utf-8",
    )
    (folder / "sso.md").write_text(
        f"---\ntitle: Single sign-on\nurl: https://help.example/sso\nupdated_at: {datetime.now(timezone.utc):%Y-%m-%d}\n---\n"
        "SAML single sign-on is available on the Enterprise plan. Upload the IdP metadata under Settings, Security.",
        encoding="utf-8",
    )
    settings = Settings(data_dir=tmp_path / "data", self_calibration=False, stale_after_days=180, _env_file=None)
    index = KnowledgeIndex.from_settings(settings, embedder)
    await index.refresh([str(folder)])
    pipeline = Pipeline.from_settings(settings, index=index)

    old = await pipeline.answer(Question(text="How do I export my data as CSV?"))
    cited = next(c for c in old.citations if c.url == "https://help.example/export")
    assert cited.updated_at == "2021-04-09" and cited.stale
    block = sources_block(old.citations)
    assert block is not None and "updated 9 Apr 2021, may be out of date" in str(block)

    fresh = await pipeline.answer(Question(text="Is SAML single sign-on on the Enterprise plan?"))
    cited = next(c for c in fresh.citations if c.url == "https://help.example/sso")
    assert not cited.stale and "may be out of date" not in str(sources_block(fresh.citations))
