"""The engine's pure functions: Slack text, the query rewrite, citations, confidence, pricing."""

from __future__ import annotations

import math

import pytest

from bot.engine import confidence
from bot.engine.citations import Segment, Span, assemble, cited_share, numbered_sources
from bot.engine.normalise import has_question, normalise_slack
from bot.engine.pricing import cost_usd, price_for
from bot.engine.query import search_query, wants_human
from bot.engine.terms import TermStats
from bot.engine.types import Decision, RetrievedChunk, Turn, Usage
from bot.settings import DEFAULT_PRICES
from knowledge.text import truncate


def chunk(
    n: int, text: str, *, similarity: float = 0.7, title: str = "Refund a payment", heading: str = ""
) -> RetrievedChunk:
    return RetrievedChunk(
        chunk_id=f"c{n}",
        doc_id=f"d{n}",
        title=title,
        heading=heading,
        url=f"https://kb.example/d{n}#s",
        doc_url=f"https://kb.example/d{n}",
        text=text,
        score=1.0,
        vector_similarity=similarity,
        vector_rank=n + 1,
        fts_rank=n + 1,
    )


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<@U123ABC> how do I refund?", "how do I refund?"),
        ("ask <@U123ABC|maria> about it", "ask @maria about it"),
        ("ask <@U123ABC> about it", "ask @user about it"),
        ("posted in <#C024BE7LR|general>", "posted in #general"),
        (
            "see <https://x.example/a|the guide> and <https://x.example/b>",
            "see the guide (https://x.example/a) and https://x.example/b",
        ),
        ("mail <mailto:help@x.example|help@x.example>", "mail help@x.example"),
        ("<!here> Q &amp; A &lt;3 &gt; 2", "@here Q & A <3 > 2"),
        # typed markup is escaped by Slack: decoded once, it stays the literal text typed
        ("is &lt;!here&gt; a ping?", "is <!here> a ping?"),
        ("tag &lt;@U0123ABC&gt; or &amp;lt;", "tag <@U0123ABC> or &lt;"),
        ("<!subteam^S123|@support> help", "@support help"),
        ("<@U123ABC> :wave:", ":wave:"),  # an emoji right after the mention is not a "@bot:" separator
        ("<@U123ABC>: how do refunds work", "how do refunds work"),
    ],
)
def test_normalise_slack(raw, expected):
    assert normalise_slack(raw) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", False),
        (":wave: :smile:", False),
        ("👋 🎉", False),
        ("?!", False),
        ("@here", False),
        ("ok?", True),
        ("ACH", True),
        ("¿Cómo?", True),
    ],
)
def test_has_question(text, expected):
    assert has_question(text) is expected


def test_truncate_cuts_at_a_word_boundary():
    text = truncate("word " * 100, 42, ellipsis="", at_word=True)
    assert len(text) <= 42 and text.endswith("word")
    assert truncate("short", 42, ellipsis="", at_word=True) == "short"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("talk to a human", True),
        ("can I speak with someone?", True),
        ("agent please", True),
        ("escalate", True),
        ("please escalate this", True),
        ("I want a real person", True),
        ("human", True),
        ("How do I escalate a ticket in the app?", False),
        ("what does the agent field do?", False),
        ("Do humans review disputes?", False),
    ],
)
def test_wants_human(text, expected):
    assert wants_human(text) is expected


def test_short_or_pronoun_led_follow_ups_borrow_the_previous_question():
    history = [Turn(role="user", text="How do I refund an ACH payment?"), Turn(role="assistant", text="Use Refund.[1]")]
    assert search_query("and SEPA?", history) == "refund ACH payment and SEPA?"
    assert search_query("does it work for partial amounts on old invoices", history).startswith("refund ACH payment")
    assert search_query("what about SEPA direct debit payments from German customers?", history).startswith("refund")
    for standalone in (
        "Which identity providers work with single sign-on on the Enterprise plan?",
        "How do I change the base currency of my account?",
    ):
        assert search_query(standalone, history) == standalone
    assert search_query("and SEPA?", []) == "and SEPA?"


def test_assemble_numbers_sources_by_first_appearance_and_places_markers():
    chunks = [chunk(0, "A. B."), chunk(1, "C.")]
    segments = [
        Segment("Intro "),
        Segment("first fact. ", [Span(1, "C.")]),
        Segment("second fact.", [Span(0, "A."), Span(1, "C.")]),
        Segment(" ghost", [Span(7, "not sent")]),
    ]
    text, citations = assemble(segments, chunks)
    assert text == "Intro first fact.[1] second fact.[2][1] ghost"
    assert [(c.number, c.chunk_id, c.cited_text) for c in citations] == [(1, "c1", "C."), (2, "c0", "A.")]
    assert [c.number for c in numbered_sources(citations)] == [1, 2]
    assert cited_share(segments, len(chunks)) == pytest.approx(
        len("firstfact.secondfact.") / len("Introfirstfact.secondfact.ghost")
    )


def test_signals_find_the_missing_rare_term_and_the_matching_phrase():
    chunks = [chunk(0, "Card payments can be refunded within 180 days of the payment.", heading="Time limits")]
    stats = TermStats.from_texts(["refund card payment days", "invoice customer", "payment card", "webhook retry"])
    values = confidence.signals("Can we refund card payments to HubSpot?", chunks, stats=stats)
    assert values["missing_terms"] == ["HubSpot"]
    assert 0 < values["term_coverage"] < 1 and values["phrase_match"] > 0
    assert values["heading_match"] == 0.5 and values["top_similarity"] == 0.7  # 'refund', 'payment' of 4


def test_question_length_is_a_signal_and_is_derived_for_signals_stored_without_it():
    chunks = [chunk(0, "Card payments can be refunded within 180 days of the payment.")]
    values = confidence.signals("Can we refund card payments to HubSpot?", chunks)
    assert values["question_terms"] == 4 and values["question_length"] == pytest.approx(math.log(5), abs=1e-4)
    stored = {k: v for k, v in values.items() if k != "question_length"}  # a probe kept by an older release
    assert confidence.signal(stored, "question_length") == values["question_length"]
    assert confidence.score(stored) == confidence.score(values)
    assert confidence.score({**values, "question_terms": 40, "question_length": math.log(41)}) != confidence.score(
        values
    )


def test_score_is_monotonic_in_the_evidence_and_capped_by_cannot_answer():
    weak = {
        "sources": 3,
        "top_similarity": 0.4,
        "margin": 0.0,
        "term_coverage": 0.3,
        "phrase_match": 0.05,
        "heading_match": 0.2,
        "citation_coverage": 1.0,
        "cannot_answer": False,
    }
    strong = {**weak, "top_similarity": 0.8, "term_coverage": 0.9, "phrase_match": 0.6, "heading_match": 1.0}
    assert 0 <= confidence.score(weak) < confidence.score(strong) <= 1
    vetoed = confidence.judge({**strong, "cannot_answer": True}, answer_threshold=0.6, caveat_threshold=0.35)
    assert vetoed.confidence <= confidence.CANNOT_ANSWER_CAP and vetoed.decision is Decision.ESCALATE
    assert confidence.score({**strong, "citation_coverage": 0.0}) == pytest.approx(
        confidence.score(strong) / 2, abs=1e-3
    )
    assert confidence.score({**strong, "sources": 0}) == 0.0


def test_decide_uses_both_thresholds_and_reasons_say_why():
    assert confidence.decide(0.7, 0.6, 0.35) is Decision.ANSWER
    assert confidence.decide(0.5, 0.6, 0.35) is Decision.ANSWER_WITH_CAVEAT
    assert confidence.decide(0.2, 0.6, 0.35) is Decision.ESCALATE
    values = {
        "sources": 2,
        "top_similarity": 0.41,
        "phrase_match": 0.0,
        "term_coverage": 0.2,
        "citation_coverage": 1.0,
        "cannot_answer": True,
        "missing_terms": ["HubSpot"],
    }
    verdict = confidence.judge(values, answer_threshold=0.6, caveat_threshold=0.35)
    assert verdict.decision is Decision.ESCALATE
    assert "top source similarity 0.41 is low" in verdict.reasons
    assert "the sources don't mention 'HubSpot'" in verdict.reasons
    assert any("said the sources don't contain the answer" in r for r in verdict.reasons)


def test_cost_uses_the_model_price_list_including_cache_tokens():
    price = price_for("claude-haiku-4-5-20251001", DEFAULT_PRICES)
    assert price == DEFAULT_PRICES["claude-haiku-4-5"]
    usage = Usage(input_tokens=1000, output_tokens=200, cache_creation_input_tokens=2000, cache_read_input_tokens=4000)
    expected = (1000 * 1.0 + 200 * 5.0 + 2000 * 1.25 + 4000 * 0.10) / 1_000_000
    assert cost_usd(usage, price) == pytest.approx(expected)
    assert price_for("some-other-model", DEFAULT_PRICES) is None and cost_usd(usage, None) == 0.0
