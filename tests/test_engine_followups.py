"""Follow-ups in a thread: the pure parts of the context-aware retrieval, then the real pipeline
on the sample knowledge (context mode against the message searched alone)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bot.engine.pipeline import Pipeline
from bot.engine.query import (
    cited_pages,
    context_poor,
    contextual_query,
    declares_new_topic,
    dependence,
    followup_new_terms,
    fuse_results,
    is_clarification,
    judged_query,
    new_terms,
)
from bot.engine.types import Decision, Question, Turn
from knowledge.search import page_filter

BASE = "https://help.tallybook.example/"


@dataclass
class Hit:
    doc_id: str
    chunk_id: str
    score: float = 0.0
    source: str = "s"


def test_new_topic_markers_are_read_near_the_start_only():
    assert declares_new_topic("Unrelated: what does HHH stand for?")
    assert declares_new_topic("ok, different question - how do I reset my password")
    assert declares_new_topic("separately, which IPs should we allowlist")
    assert not declares_new_topic("and for ACH?")
    assert not declares_new_topic("how do we export data for a customer in a separate region unrelated to ours")


def test_clarifications_and_context_poor_messages():
    assert is_clarification("sorry i mean they're in france") and is_clarification("for vertex ai specifically")
    assert not is_clarification("how do I refund a payment?")
    assert context_poor("enterprise?") and context_poor("and for ACH direct debit payments in the US?")
    assert context_poor("does it work with stripe if we connected it last year?")  # a pronoun up front
    assert not context_poor("how do I export all invoice PDFs for the auditors")


def test_dependence_from_markers_and_thread_fit():
    assert dependence("Unrelated: how do I reset my password?", top_alone=0.5, top_thread=0.5) == 0.0
    assert dependence("and v6", top_alone=0.3, top_thread=0.0) == 1.0  # context-poor beats a poor fit
    long = "how do I export all invoice PDFs for the auditors"
    assert dependence(long, top_alone=0.7, top_thread=0.7) == 1.0  # fits the cited pages as well as anything
    assert dependence(long, top_alone=0.7, top_thread=0.3) == 0.0  # finds far better matches elsewhere
    assert 0.0 < dependence(long, top_alone=0.7, top_thread=0.5) < 1.0
    assert dependence(long, top_alone=0.7, top_thread=None) == pytest.approx(0.7)  # nothing cited to compare


def test_contextual_and_judged_queries_carry_the_thread():
    history = [
        Turn(role="user", text="how do I turn on reminders"),
        Turn(role="assistant", text="Go to Settings."),
        Turn(role="user", text="can i change the schedule"),
        Turn(role="assistant", text="Yes."),
    ]
    assert contextual_query("do they stop when paid?", history) == (
        "how do I turn on reminders can i change the schedule do they stop when paid?"
    )
    assert contextual_query("x", []) == "x"
    assert judged_query("do they stop when paid?", history, 1.0).endswith("do they stop when paid?")
    assert "schedule" in judged_query("do they stop when paid?", history, 1.0)
    assert judged_query("do they stop when paid?", history, 0.2) == "do they stop when paid?"


def test_new_terms_are_what_the_follow_up_adds_to_the_threads_questions():
    history = [Turn(role="user", text="how do I connect quickbooks"), Turn(role="assistant", text="Settings.")]
    assert new_terms("ok thanks, can we sync with NetSuite too?", history) == ["sync", "NetSuite"]
    assert new_terms("does QuickBooks connect again?", history) == []  # stems of the thread, chit-chat
    assert new_terms("does it work with stripe instead?", history) == ["stripe"]  # framing words left out
    assert followup_new_terms("can we sync with netsuite", history) == ["sync", "netsuite"]
    assert followup_new_terms("can we sync with netsuite", []) is None  # a first question
    assert followup_new_terms("Unrelated: what does HHH stand for?", history) is None  # judged as a first one


def test_a_follow_ups_unknown_words_count_by_rarity_and_cap_the_confidence():
    from bot.engine.confidence import followup_novelty, judge
    from bot.engine.terms import TermStats

    stats = TermStats({"refund": 30, "send": 40, "account": 60, "bank": 50}, 100)
    novel = followup_novelty(["send", "Venmo"], {"refund", "send"}, stats)
    assert novel["new_terms_unknown"] == ["Venmo"] and novel["new_terms_unknown_share"] > 0.5
    common = followup_novelty(["account", "bank"], {"refund"}, stats)  # missing here, but common everywhere
    assert common["new_terms_unknown"] == [] and common["new_terms_unknown_share"] == 0.0
    strong = {"sources": 3, "top_similarity": 0.8, "margin": 0.2, "term_coverage": 1.0, "phrase_match": 1.0}
    strong.update(heading_match=1.0, question_terms=4, citation_coverage=1.0, missing_terms=["Venmo"])
    lines = {"answer_threshold": 0.6, "caveat_threshold": 0.35}
    assert judge(dict(strong), **lines).decision is Decision.ANSWER  # a first question: no check
    assert judge({**strong, **common}, **lines).decision is Decision.ANSWER
    capped = judge({**strong, **novel}, **lines)
    assert capped.decision is Decision.ESCALATE and capped.confidence < 0.35
    assert capped.reasons[0] == "follow-up asks about 'Venmo', which the sources never mention"
    assert not any("don't mention" in reason for reason in capped.reasons)  # said once


def test_cited_pages_come_from_the_latest_answer_that_cited():
    history = [
        Turn(role="user", text="q1"),
        Turn(role="assistant", text="a1", sources=[BASE + "a#x", BASE + "a#y"]),
        Turn(role="user", text="q2"),
        Turn(role="assistant", text="handed over"),
    ]
    assert cited_pages(history) == [BASE + "a"]
    assert cited_pages([Turn(role="user", text="q")]) == []


def test_fusion_ranks_by_weighted_reciprocal_rank_and_keeps_the_winning_lists_chunks():
    alone = [Hit("a", "a1"), Hit("b", "b1"), Hit("c", "c1")]
    context = [Hit("c", "c9"), Hit("d", "d1"), Hit("b", "b2")]
    fused = fuse_results([(1.0, alone), (1.0, context)], k=3, rrf_k=5)
    assert [hit.doc_id for hit in fused] == ["c", "b", "a"]  # in both lists beats first in one
    assert fused[0].chunk_id == "c9"  # c ranked higher in the context list: its chunk is shown
    assert all(0.0 < hit.score <= 1.0 for hit in fused) and fused[0].score > fused[-1].score
    preferred = fuse_results([(1.0, alone), (1.0, context)], k=3, rrf_k=5, prefer=(1, 0))
    assert [hit.chunk_id for hit in preferred] == ["c9", "b2", "a1"]  # the contextual list picks the chunks
    only_alone = fuse_results([(1.0, alone), (0.0, context)], k=3)
    assert [hit.doc_id for hit in only_alone] == ["a", "b", "c"] and only_alone[0].score == 1.0


def test_page_filter_matches_the_page_and_its_sections_and_quotes():
    where = page_filter(["https://x/p", "https://x/it's"])
    assert "doc_url = 'https://x/p'" in where and "url LIKE 'https://x/p#%'" in where
    assert "it''s" in where and page_filter([]) is None


# ------------------------------------------------------------------------------ the real pipeline


@pytest.fixture
def pipelines(sample_settings, sample_searcher):
    return {mode: Pipeline(sample_settings, sample_searcher, followup_mode=mode) for mode in ("context", "alone")}


def docs(answer) -> list[str]:
    return list(dict.fromkeys(chunk.doc_url or chunk.url for chunk in answer.retrieved))


async def test_a_long_pronoun_follow_up_finds_the_threads_article(pipelines):
    history = [
        Turn(role="user", text="how do I set up sepa direct debit for a customer in germany"),
        Turn(
            role="assistant",
            text="Switch SEPA on under Payment methods.[1]",
            sources=[BASE + "payments/sepa-direct-debit#requirements"],
        ),
    ]
    question = "does it work if we connected stripe instead?"
    context = await pipelines["context"].answer(Question(text=question, history=history))
    alone = await pipelines["alone"].answer(Question(text=question, history=history))
    assert BASE + "payments/sepa-direct-debit" in docs(context)[:3]
    assert BASE + "payments/sepa-direct-debit" not in docs(alone)
    assert "sepa" in context.search_query.lower()  # the judge reads the message with the thread's terms


async def test_a_declared_new_topic_is_searched_exactly_like_a_first_question(pipelines):
    history = [
        Turn(role="user", text="how do i void an invoice"),
        Turn(role="assistant", text="More -> Void.[1]", sources=[BASE + "invoices/create-and-send-an-invoice"]),
    ]
    question = "Separate question - how do I reset my password, reset email never arrived"
    shifted = await pipelines["context"].answer(Question(text=question, history=history))
    first = await pipelines["context"].answer(Question(text=question))
    assert shifted.search_query == question
    assert [c.chunk_id for c in shifted.retrieved] == [c.chunk_id for c in first.retrieved]


async def test_a_question_without_a_thread_is_searched_as_before(pipelines, sample_searcher, sample_settings):
    question = "How long after a payment can we still refund it to the customer's card?"
    answer = await pipelines["context"].answer(Question(text=question))
    plain = await sample_searcher.asearch(
        question, sample_settings.answer_k, per_doc=sample_settings.answer_chunks_per_doc
    )
    assert [c.chunk_id for c in answer.retrieved] == [hit.chunk_id for hit in plain.hits]


def test_unknown_follow_up_mode_is_refused(sample_settings, sample_searcher):
    with pytest.raises(ValueError):
        Pipeline(sample_settings, sample_searcher, followup_mode="magic")


def test_slack_thread_history_keeps_the_pages_an_answer_cited():
    from bot.engine.types import Answer, Citation, Decision
    from bot.slack.blocks import answer_blocks
    from bot.slack.conversation import thread_history

    answer = Answer(
        interaction_id="iid",
        question="q",
        text="Within 90 days [1].",
        decision=Decision.ANSWER,
        citations=[
            Citation(
                number=1,
                doc_id="d",
                url=BASE + "payments/refund-a-payment#time-limits",
                title="Refund a payment",
                cited_text="90 days",
            )
        ],
    )
    messages = [
        {"ts": "1.0", "user": "U1", "text": "refund window?"},
        {"ts": "2.0", "bot_id": "B1", "user": "UBOT", "text": "Within 90 days", "blocks": answer_blocks(answer)},
        {
            "ts": "2.5",
            "user": "U1",
            "text": "see <https://example.com|this>",
            "blocks": [
                {"type": "context", "elements": [{"type": "mrkdwn", "text": "*Sources*\n<https://x.example/y|y>"}]}
            ],
        },
    ]
    turns = thread_history(messages, before_ts="3.0", bot_user_id="UBOT", bot_id="B1")
    assert turns[1].sources == [BASE + "payments/refund-a-payment#time-limits"]
    assert turns[0].sources == [] and turns[2].sources == []  # only the bot's own answers carry sources


async def test_an_unanswerable_follow_up_about_a_new_name_escalates_and_says_which(pipelines):
    history = [Turn(role="user", text="how do I refund a card payment to a customer")]
    question = "can we send the refund to their venmo account instead?"
    answer = await pipelines["context"].answer(Question(text=question, history=history))
    assert answer.decision is Decision.ESCALATE
    assert "follow-up asks about 'venmo', which the sources never mention" in answer.reasons
    assert answer.signals["new_terms_unknown"] == ["venmo"]  # 'send' and 'account' are in the refund article
    assert answer.signals["new_terms_unknown_share"] >= 0.5
    first = await pipelines["context"].answer(Question(text=history[0].text))  # the thread's question answers
    assert first.decision is not Decision.ESCALATE and "new_terms" not in first.signals


async def test_an_answerable_pronoun_follow_up_still_answers(pipelines):
    history = [Turn(role="user", text="customer wants to pay an invoice by ACH, how does that work on their side")]
    answer = await pipelines["context"].answer(Question(text="how long until it clears?", history=history))
    assert answer.decision is not Decision.ESCALATE, answer.reasons
    assert not any(reason.startswith("follow-up asks about") for reason in answer.reasons)
