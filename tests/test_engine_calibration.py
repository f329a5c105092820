"""Self-calibration: probes from the index, twins with their section masked, a stored per-version scale."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bot.engine import calibration
from bot.engine.calibration import Calibration, ScoredProbe, fit, quantile
from bot.engine.probes import Section, make_probes, sections_from_chunks
from bot.engine.types import Decision
from knowledge.storage import LocalSidecar

STRONG = {
    "sources": 3,
    "top_similarity": 0.8,
    "margin": 0.2,
    "term_coverage": 0.9,
    "phrase_match": 0.6,
    "heading_match": 1.0,
    "citation_coverage": 1.0,
}
WEAK = {**STRONG, "top_similarity": 0.4, "margin": 0.0, "term_coverage": 0.2, "phrase_match": 0.0, "heading_match": 0.0}


def section(n: int, text: str, heading: str = "Refund a payment") -> Section:
    return Section(doc_id=f"doc-{n}", title=f"Article {n}", heading=heading, text=text, chunk_ids=(f"c{n}",))


def test_quantile_matches_linear_interpolation():
    assert quantile([0.0, 1.0], 0.5) == 0.5
    assert quantile([3.0, 1.0, 2.0, 4.0], 0.75) == pytest.approx(3.25)
    assert quantile([], 0.8) == 0.0


def test_scale_maps_the_lines_onto_the_configured_thresholds_and_keeps_the_order():
    cal = Calibration(index_version=3, raw_escalate=0.2, raw_answer=0.5, separation_auroc=0.8, probes=[])
    assert cal.to_scale(0.2, caveat_at=0.35, answer_at=0.6) == pytest.approx(0.35)
    assert cal.to_scale(0.5, caveat_at=0.35, answer_at=0.6) == pytest.approx(0.6)
    assert (
        cal.to_scale(0.0, caveat_at=0.35, answer_at=0.6) == 0.0
        and cal.to_scale(1.0, caveat_at=0.35, answer_at=0.6) == 1.0
    )
    grid = [i / 100 for i in range(101)]
    mapped = [cal.to_scale(x, caveat_at=0.35, answer_at=0.6) for x in grid]
    assert mapped == sorted(mapped)


def test_fit_puts_the_escalation_line_at_the_twin_quantile():
    probes = [
        ScoredProbe(
            section_key=str(i),
            kind="sentence",
            question="q",
            found=True,
            answerable=STRONG,
            masked={**WEAK, "top_similarity": 0.3 + i / 100},
        )
        for i in range(40)
    ]
    cal = fit(7, probes)
    twins = sorted(calibration.confidence.score(p.masked) for p in probes)
    assert cal.raw_escalate == pytest.approx(quantile(twins, calibration.ESCALATE_QUANTILE), abs=1e-4)
    assert cal.raw_answer > cal.raw_escalate
    assert cal.separation_auroc == 1.0  # every answerable probe outscores every twin here
    assert cal.summary()["pairs"] == 40


def test_judge_uses_the_calibrated_scale_and_the_generator_veto_still_wins():
    cal = Calibration(index_version=1, raw_escalate=0.05, raw_answer=0.2, separation_auroc=0.8, probes=[])
    raw = calibration.confidence.score(WEAK)
    plain = calibration.confidence.judge(dict(WEAK), answer_threshold=0.6, caveat_threshold=0.35)
    scaled = calibration.confidence.judge(
        {**WEAK, "calibration": 1}, answer_threshold=0.6, caveat_threshold=0.35, calibration=cal
    )
    assert plain.confidence == raw and scaled.confidence > plain.confidence
    assert any("calibrated on this index" in reason for reason in scaled.reasons)
    vetoed = calibration.confidence.judge(
        {**STRONG, "cannot_answer": True}, answer_threshold=0.6, caveat_threshold=0.35, calibration=cal
    )
    assert vetoed.decision is Decision.ESCALATE


def test_probes_are_deterministic_varied_and_never_copy_a_sentence_whole():
    sections = [
        section(
            n,
            f"Card payments number {n} can be refunded within 180 days of the payment from the invoice page. "
            f"Open the payment, choose Refund and enter the amount for customer {n}. "
            "```\nERROR RefundFailedException: processor declined the refund\n```",
        )
        for n in range(12)
    ]
    first, second = make_probes(sections, limit=9), make_probes(sections, limit=9)
    assert first == second and len(first) == 9
    assert {probe.kind for probe in first} == {"heading", "sentence", "long"}
    assert all(probe.question.endswith("?") for probe in first if probe.kind != "long")
    assert any("RefundFailedException" in probe.question for probe in first if probe.kind == "long")
    for probe in first:
        assert "can be refunded within 180 days of the payment" not in probe.question


def test_sections_group_chunks_by_document_and_heading():
    rows = [
        {"chunk_id": "a2", "doc_id": "d", "title": "T", "heading": "H", "text": "second", "position": 2},
        {"chunk_id": "a1", "doc_id": "d", "title": "T", "heading": "H", "text": "first", "position": 1},
        {"chunk_id": "b1", "doc_id": "d", "title": "T", "heading": "Other", "text": "x", "position": 3},
    ]
    grouped = {s.heading: s for s in sections_from_chunks(rows)}
    assert grouped["H"].text == "first\nsecond" and grouped["H"].chunk_ids == ("a1", "a2")


@pytest.mark.slow
def test_refresh_calibrates_each_version_reuses_probes_and_rollback_restores(tmp_path, embedder, settings):
    from bot.engine.pipeline import Pipeline
    from knowledge.index import KnowledgeIndex
    from tests.conftest import SAMPLE_KNOWLEDGE

    folder = tmp_path / "kb"
    shutil.copytree(SAMPLE_KNOWLEDGE, folder)
    settings = settings.model_copy(update={"sources": [str(folder)]})
    index = KnowledgeIndex.from_settings(settings, embedder)
    hook = calibration.calibrator_for(settings)

    first = asyncio.run(index.refresh([str(folder)], after_write=hook))
    assert first.calibration and first.calibration["pairs"] >= calibration.MIN_PROBES
    assert first.calibration["rescored"] == first.calibration["pairs"]
    assert 0.5 < first.calibration["separation_auroc"] <= 1.0
    v1 = index.serving_version()
    assert calibration.load(index.sidecar, v1).summary()["pairs"] == first.calibration["pairs"]

    nothing = asyncio.run(index.refresh([str(folder)], after_write=hook))
    assert nothing.calibration is None and nothing.version_after == nothing.version_before  # no-op: no work

    article = next(folder.rglob("refund*.md"))
    article.write_text(
        article.read_text(encoding="utf-8") + "\n\n## Refunds to gift cards\n\nGift card refunds "
        "go back to the same gift card within five business days of the request.\n",
        encoding="utf-8",
    )
    second = asyncio.run(index.refresh([str(folder)], after_write=hook))
    assert second.calibration is not None
    assert second.calibration["rescored"] < second.calibration["pairs"] // 3  # only the changed article's probes
    v2 = index.serving_version()
    assert v2 != v1 and calibration.load(index.sidecar, v2) is not None

    saved = Path(index.uri) / calibration.calibration_name(v2)
    saved.unlink()  # as an index from before calibration existed
    upgraded = asyncio.run(calibration.refresh_calibrated(index, [str(folder)], settings))
    assert upgraded.version_after == upgraded.version_before  # nothing to index...
    assert upgraded.calibration is not None and saved.exists()  # ...but the served version is calibrated

    pipeline = Pipeline.from_settings(settings, index=index)
    asyncio.run(pipeline.warm_up())
    assert asyncio.run(pipeline.calibration(index.version)).index_version == v2
    index.rollback()
    assert index.serving_version() == v1
    assert asyncio.run(pipeline.calibration(index.version)).index_version == v1


def test_status_and_refresh_texts_name_the_calibration_in_force():
    from bot.slack import blocks

    cal = Calibration(index_version=9, raw_escalate=0.21, raw_answer=0.5, separation_auroc=0.78, probes=[])
    summary = cal.summary()
    stats = {"exists": True, "documents": 3, "chunks": 40, "version": 11, "calibration": summary}
    status = blocks.status_text(stats)
    assert (
        "*Escalation*: calibrated on index v9: 0 probe pairs, separation AUROC 0.78, escalates below raw 0.210"
        in status
    )
    assert "calibrated on index v9" in blocks.refresh_text("added 1", "U1", summary)
    assert "not calibrated" in blocks.status_text({**stats, "calibration": None})


def test_a_calibration_made_under_other_constants_is_refitted_on_load(tmp_path, monkeypatch):
    probes = [
        ScoredProbe(
            section_key=str(i),
            kind="sentence",
            question="q",
            found=True,
            answerable=STRONG,
            masked={**WEAK, "top_similarity": 0.3 + i / 100},
        )
        for i in range(40)
    ]
    sidecar = LocalSidecar(tmp_path)
    calibration.save(sidecar, fit(4, probes))
    before = calibration.load(sidecar, 4)
    monkeypatch.setitem(calibration.confidence.COEFFICIENTS, "top_similarity", 9.0)  # a new release's constants
    after = calibration.load(sidecar, 4)
    assert after.fingerprint != before.fingerprint and after.raw_escalate > before.raw_escalate
    assert after.pairs == before.pairs and calibration.load(sidecar, 5) is None


async def test_a_version_served_before_its_calibration_is_written_picks_it_up_later(tmp_path, monkeypatch, settings):
    """A refresh commits its version, then calibrates it: a question in between must not pin the raw score."""
    from types import SimpleNamespace

    from bot.engine import pipeline as pipeline_module
    from bot.engine.pipeline import Pipeline

    index = SimpleNamespace(sidecar=LocalSidecar(tmp_path), serving_version=lambda: 6)
    pipeline = Pipeline(settings, SimpleNamespace(index=index))
    assert await pipeline.calibration(6) is None  # asked before the calibration exists
    calibration.save(
        index.sidecar, Calibration(index_version=6, raw_escalate=0.2, raw_answer=0.5, separation_auroc=0.8, probes=[])
    )
    assert await pipeline.calibration(6) is None  # a miss is not looked at again on every question...
    monkeypatch.setattr(pipeline_module, "CALIBRATION_RETRY_SECONDS", 0.0)
    found = await pipeline.calibration(6)  # ...but once the retry interval has passed
    assert found is not None and found.index_version == 6
