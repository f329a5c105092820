"""Scoring rows and rendering the report: pure functions on hand-made answers, then a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bot.engine.types import Answer, Citation, Decision, RetrievedChunk, Usage
from evals.cases import EvalCase
from evals.compare import compare_reports
from evals.report import knowledge_gaps, reason_label, render_html, render_markdown, render_plots, write_report
from evals.runner import score_case, summarise

ROOT = Path(__file__).resolve().parents[1]
REFUND = "https://help.tallybook.example/payments/refund-a-payment"
TEXT = "Open the payment and click Refund. Card payments can be refunded within 180 days of the payment."


def chunk(doc="payments/refund-a-payment.md", url=REFUND + "#full-refunds", text=TEXT, score=0.9, sim=0.7):
    return RetrievedChunk(
        chunk_id=doc + "#0",
        doc_id=doc,
        title=doc.split("/")[-1],
        url=url,
        text=text,
        score=score,
        vector_similarity=sim,
    )


def answer(text, citations=(), retrieved=(), confidence=0.8, decision=Decision.ANSWER, reasons=(), total=40.0):
    return Answer(
        interaction_id="i",
        question="q",
        text=text,
        citations=list(citations),
        retrieved=list(retrieved),
        confidence=confidence,
        decision=decision,
        reasons=list(reasons),
        generator="extractive",
        latency_ms={"retrieve": total / 2, "total": total},
        usage=Usage(input_tokens=10, cost_usd=0.001),
    )


def cite(number, cited_text, doc="payments/refund-a-payment.md"):
    return Citation(number=number, doc_id=doc, chunk_id=doc + "#0", url=REFUND, title="Refund", cited_text=cited_text)


def test_score_case_uses_the_answers_own_retrieval_and_citations():
    case = EvalCase(
        id="c1",
        question="How long can I refund a card payment?",
        reference_answer="Within 180 days.",
        gold_sources=[REFUND],
    )
    retrieved = [chunk("payments/disputes.md", "https://help.tallybook.example/payments/disputes"), chunk(), chunk()]
    a = answer(
        "Click Refund.[1] Card payments can be refunded within 180 days [2]. Invented sentence [3].",
        citations=[
            cite(1, "click Refund"),
            cite(2, "refunded within 180 days of the payment"),
            cite(3, "never said this"),
        ],
        retrieved=retrieved,
    )
    row = score_case(case, a, k=5)
    assert row["retrieval"] == {"hit@k": 1.0, "recall@k": 1.0, "mrr@k": 0.5, "ndcg@k": pytest.approx(0.6309, abs=1e-3)}
    assert [d["gold"] for d in row["retrieved"]] == [False, True]  # documents, not chunks
    assert row["faithfulness"] == pytest.approx(2 / 3)
    assert [c["supported"] for c in row["citations"]] == [True, True, False]
    assert 0 < row["token_f1"] < 1 and row["latency_ms"]["total"] == 40.0


def sample_report() -> dict:
    cases = [
        (
            EvalCase(
                id=f"a{n}",
                question=f"How do refunds work, case {n}?",
                reference_answer="Click Refund within 180 days.",
                gold_sources=[REFUND],
            ),
            answer("Click Refund [1].", [cite(1, "click Refund")], [chunk()], confidence=0.55 + n * 0.05, total=30 + n),
        )
        for n in range(8)
    ] + [
        (
            EvalCase(
                id="miss",
                question="Where is the payout report?",
                reference_answer="Reports, Payouts.",
                gold_sources=["https://help.tallybook.example/reports/payouts"],
                topic=None,
            ),
            answer(
                "I could not find it.",
                [],
                [chunk()],
                confidence=0.3,
                decision=Decision.ESCALATE,
                reasons=["weak retrieval: top similarity 0.31 < 0.40"],
                total=90,
            ),
        ),
        (
            EvalCase(id="gap1", question="Can customers pay with PayPal?", answerable=False, topic="payments"),
            answer("Open the payment [1].", [cite(1, "Open the payment")], [chunk()], confidence=0.7, total=35),
        ),
        (
            EvalCase(id="gap2", question="Do you support crypto payouts?", answerable=False),
            answer(
                "Not found.",
                [],
                [chunk("api/webhooks.md", "https://help.tallybook.example/api/webhooks")],
                confidence=0.2,
                decision=Decision.ESCALATE,
                reasons=["weak retrieval: top similarity 0.22 < 0.40"],
            ),
        ),
    ]
    report = summarise([score_case(case, a, 5) for case, a in cases], k=5)
    report["per_case"] = [score_case(case, a, 5) for case, a in cases]
    report["config"] = {
        "dataset": "evals/datasets/sample.jsonl",
        "mode": "hybrid",
        "generator": "extractive",
        "kb": "examples/knowledge",
        "answer_threshold": 0.6,
        "caveat_threshold": 0.45,
    }
    report["timestamp"] = "2025-06-02T09:00:00+00:00"
    report["git_commit"] = "abc123"
    return report


def test_summary_has_every_contract_metric():
    report = sample_report()
    assert set(report["retrieval"]) == {"hit@k", "mrr@k", "recall@k", "ndcg@k"}
    assert {"auroc", "precision", "recall", "escalation_rate"} <= set(report["escalation"])
    assert {"faithfulness", "correctness"} <= set(report["answer"]) and {"p50", "p95"} <= set(report["latency_ms"])
    assert report["cases"] == 11 and report["k"] == 5
    assert report["escalation"]["precision"] == 0.5 and report["escalation"]["recall"] == 0.5
    assert report["retrieval"]["hit@k"] == pytest.approx(8 / 9, abs=1e-3)


def test_gaps_reasons_and_markdown():
    report = sample_report()
    gaps = dict(knowledge_gaps(report["per_case"]))
    assert {row["id"] for row in gaps["payments"]} == {"miss", "gap1"} and [r["id"] for r in gaps["api"]] == ["gap2"]
    assert reason_label("weak retrieval: top similarity 0.31 < 0.40") == "weak retrieval: top similarity"
    markdown = render_markdown(report, plots=["calibration"])
    assert "| Retrieval hit@5 |" in markdown and "![calibration](calibration.png)" in markdown
    assert (
        "## Answered, but the knowledge does not cover it" in markdown and "Can customers pay with PayPal?" in markdown
    )


def test_html_is_self_contained_with_plots(tmp_path):
    report = sample_report()
    older = {**report, "timestamp": "2025-05-26T09:00:00+00:00", "retrieval": {**report["retrieval"], "hit@k": 0.95}}
    plots = render_plots(report, [older, report])
    assert set(plots) == {"calibration", "confidence", "trend", "escalation-reasons", "knowledge-gaps"}
    changes = compare_reports(report, older)
    html = render_html(report, plots, changes)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 5 and all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert "http://" not in html and "https://" not in html.split("<main>")[0]  # no external assets
    assert "regressed" in html and "<h2>Knowledge gaps</h2>" in html and "<h2>Why the bot escalated</h2>" in html
    assert "Calibration in force: not calibrated" in html  # this report has no calibration
    calibrated = {
        **report,
        "self_calibration": {"index_version": 7, "pairs": 150, "separation_auroc": 0.79, "escalate_below_raw": 0.391},
    }
    assert (
        "Calibration in force: calibrated on index v7: 150 probe pairs, separation AUROC 0.79, escalates below raw "
        "0.391"
    ) in render_html(calibrated, plots, changes)
    assert "calibrated on index v7" in render_markdown(calibrated, plots=[])

    paths = write_report(report, tmp_path / "r", changes)
    second = write_report({**report, "timestamp": "2025-06-09T09:00:00+00:00"}, tmp_path / "r")
    assert len(list((tmp_path / "r" / "history").glob("*.json"))) == 2
    assert (tmp_path / "r" / "trend.png").exists() and paths["markdown"].read_text().startswith("# Eval report")
    assert second["html"].read_text().count("data:image/png;base64,") == 5


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    report = sample_report()
    paths = write_report(report, tmp_path / "r")
    shot = tmp_path / "shot.png"
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "report_screenshot.sh"), str(paths["html"]), str(shot)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 50_000  # a blank page compresses to a few KB


def test_html_escapes_everything_users_wrote():
    """Questions, answers and source titles come from users and pages: Jinja2's autoescape must neutralise them."""
    report = sample_report()
    row = next(row for row in report["per_case"] if row["id"] == "gap1")
    row["question"] = "<script>alert(1)</script> & more"
    row["retrieved"][0]["title"] = '<img src=x onerror="alert(2)">'
    row["retrieved"][0]["url"] = 'https://x.example/" onmouseover="alert(3)'
    html = render_html(report, {})
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<img src=x" not in html and 'onmouseover="' not in html
    assert "The trend appears from the second run on" in html and "<p>No escalations.</p>" in html
