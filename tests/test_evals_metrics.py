"""Pure metric, scrubbing, topic and baseline-comparison functions."""

from __future__ import annotations

import pytest

from evals.compare import compare_reports
from evals.metrics import (
    citation_supported,
    expected_calibration_error,
    faithfulness,
    operating_point,
    reliability_bins,
    retrieval_scores,
    source_keys,
    threshold_advice,
    unique_documents,
)
from evals.pii import scrub
from evals.report import threshold_summary
from evals.topics import topic_of_document
from knowledge.text import split_answer_sentences as split_sentences


def test_sentences_keep_their_citation_markers():
    text = "Refunds take 5 days.[1] Partial refunds are allowed [2]. Fees are kept. [1][3]\n- Bullet point here"
    assert split_sentences(text) == [
        "Refunds take 5 days.[1]",
        "Partial refunds are allowed [2].",
        "Fees are kept. [1][3]",
        "- Bullet point here",
    ]
    # Abbreviations, code and bracketed words do not end a sentence; a capital after a full stop does.
    assert split_sentences(
        "Invalid (e.g. missing params) or vs. speed with np . dot.[1] Assistant [Claude] Then [2]"
    ) == [
        "Invalid (e.g. missing params) or vs. speed with np . dot.[1]",
        "Assistant [Claude] Then [2]",
    ]


def test_faithfulness_counts_sentences_backed_by_a_verified_citation():
    text = "Refunds take 5 days [1]. Fees are kept [2]. Contact us."
    assert faithfulness(text, {1: ["refunds take 5 days"]}) == pytest.approx(1 / 3)
    assert faithfulness(text, {1: ["x"], 2: ["y"]}) == pytest.approx(2 / 3)
    assert faithfulness("", {1: ["x"]}) is None
    # One marker after a quoted list backs every quoted line; an uncited filler sentence is not backed.
    block = "Requirements:\n* The invoice is in **USD**.\n* ACH is on.[1] Great question! Then refund it.[2]"
    verified = {1: ["Requirements:\n* The invoice is in USD.\n* ACH is on."], 2: ["Then refund it."]}
    assert faithfulness(block, verified) == pytest.approx(4 / 5)
    assert citation_supported("Refunds  take 5 days", "Full refunds. refunds take 5\ndays to arrive.")
    assert not citation_supported("Refunds take 6 days", "Refunds take 5 days")
    assert not citation_supported("", "anything")


def test_document_level_keys_match_pages_and_sections():
    keys = source_keys("payments/refund.md", "https://help.example/refund#partial")
    assert keys == ["payments/refund.md", "https://help.example/refund#partial", "https://help.example/refund"]
    hits = unique_documents([["a", "u1"], ["a", "u1#x"], ["b", "u2"]])
    assert [h[0] for h in hits] == ["a", "b"]
    assert retrieval_scores([keys], ["https://help.example/refund"], 5)["hit@5"] == 1.0
    assert retrieval_scores([keys], ["https://help.example/refund#partial"], 5)["hit@5"] == 1.0


def test_reliability_bins_and_calibration_error():
    bins = reliability_bins([0.05, 0.15, 0.95, 0.92, 1.0], [False, False, True, True, False], bins=10)
    assert [(b["lower"], b["count"]) for b in bins] == [(0.0, 1), (0.1, 1), (0.9, 3)]
    assert bins[-1]["observed"] == pytest.approx(2 / 3, abs=1e-3)
    assert 0 < expected_calibration_error(bins) < 0.5


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mail jane.doe@acme.com now", "mail <EMAIL> now"),
        ("call +1 (415) 555-0100 or 07700 900123", "call <PHONE> or <PHONE>"),
        ("ask <@U024BE7LH> in <#C0123ABC|support>", "ask <USER> in <CHANNEL>"),
        ("token xoxb-1234-5678-abcdefgh and sk-ant-api03-abcdefghijk", "token <SLACK_TOKEN> and <API_KEY>"),
        ("hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "hash <SECRET>"),
        ("secret dGhpcyBpcyBhIHNlY3JldCBrZXkgMTIzNDU2Nzg5MA==", "secret <SECRET>"),
        (
            "see https://docs.claude.com/en/docs/about-claude/models/claude-3-5-sonnet-20241022-overview",
            "see https://docs.claude.com/en/docs/about-claude/models/claude-3-5-sonnet-20241022-overview",
        ),
        ("invoice INV-2024-0042 due 2024-03-15 for $1,250.00", "invoice INV-2024-0042 due 2024-03-15 for $1,250.00"),
    ],
)
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_operating_point_counts_both_kinds_of_question():
    confidences = [0.1, 0.3, 0.5, 0.2, 0.6, 0.9, 0.4]
    answerable = [False, False, False, True, True, True, True]
    assert operating_point(confidences, answerable, 0.35) == (pytest.approx(2 / 3), 0.75)
    assert operating_point(confidences, answerable, 0.0) == (0.0, 1.0)


def test_threshold_advice_finds_the_range_that_meets_both_targets():
    # 10 unanswerable at 0.05..0.50, 20 answerable at 0.40..0.99: only a cut at 0.45 escalates >= 80%
    # of the first (8 of 10) and answers >= 85% of the second (18 of 20); 0.50 answers 16 of 20.
    unanswerable = [0.05 * i for i in range(1, 11)]
    answerable = [0.40 + 0.031 * i for i in range(20)]
    confidences, labels = unanswerable + answerable, [False] * 10 + [True] * 20
    advice = threshold_advice(confidences, labels, 0.35)
    assert (advice["escalated"], advice["answered"]) == (0.6, 1.0)
    assert advice["meeting"] == [0.45, 0.45]
    assert (advice["suggested"], advice["suggested_rates"]) == (0.45, [0.8, 0.9])
    assert "Only 0.45 meets both (80% / 90%)" in threshold_summary(advice)

    hopeless = threshold_advice([0.9, 0.1], [False, True], 0.35)  # inverted: nothing works
    assert hopeless["meeting"] is None and "No threshold meets both" in threshold_summary(hopeless)
    assert threshold_advice([0.5, 0.6], [True, True], 0.35)["suggested"] is None  # undefined, not a guess
    assert threshold_summary(None) is None


def test_topics():
    assert topic_of_document("payments/refund.md", "https://help.example/payments/refund") == "payments"
    assert topic_of_document("https://docs.claude.com/en/docs/build-with-claude/embeddings#x") == "build-with-claude"
    assert topic_of_document("faq", "https://x.example/faq", "FAQ") == "FAQ"


def report(hit, p95, auroc=None):
    return {
        "retrieval": {"hit@k": hit, "mrr@k": 0.8},
        "escalation": {"auroc": auroc},
        "latency_ms": {"p50": 20.0, "p95": p95},
    }


def test_compare_names_the_metrics_that_fell():
    changes = compare_reports(report(0.80, 500.0), report(0.90, 100.0, auroc=0.9), tolerance=0.02)
    fell = {c.metric for c in changes if c.regressed}
    assert fell == {"retrieval.hit@k", "latency_ms.p95"}
    assert "escalation.auroc" not in {c.metric for c in changes}  # missing on one side: not compared
    ok = compare_reports(report(0.885, 160.0), report(0.90, 100.0), tolerance=0.02, latency_floor_ms=20)
    assert not [c for c in ok if c.regressed]
