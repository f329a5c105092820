"""The offline pipeline end to end on the sample knowledge: edge cases, escalation, citations."""

from __future__ import annotations

import json

import pytest

from bot.engine.normalise import normalise_slack
from bot.engine.pipeline import EMPTY_REPLY, HUMAN_REPLY, Pipeline
from bot.engine.types import Decision, Question, Turn
from tests.conftest import SAMPLE_EVALS

CASES = {case["id"]: case for case in map(json.loads, SAMPLE_EVALS.read_text().splitlines())}


@pytest.fixture
def pipeline(sample_settings, sample_searcher):
    return Pipeline(sample_settings, sample_searcher)


async def ask(pipeline: Pipeline, text: str, **fields):
    return await pipeline.answer(Question(text=text, **fields))


@pytest.mark.parametrize("text", ["", "   \n ", ":wave:", "👋🎉", ":thumbsup: :tada:!!", "@user", "@here"])
async def test_empty_or_emoji_only_gets_a_polite_non_answer(pipeline, text):
    answer = await ask(pipeline, text)
    assert answer.decision is Decision.CLARIFY and not answer.escalated
    assert answer.reasons == ["empty question"] and answer.text == EMPTY_REPLY
    assert answer.citations == [] and answer.generator == "none"


async def test_a_40000_character_question_is_truncated_and_still_answered(pipeline, sample_settings):
    text = "How long after a payment can we still refund it to the customer's card? " + "Please advise. " * 2700
    assert len(text) > 40_000
    answer = await ask(pipeline, text)
    assert len(answer.search_query) <= sample_settings.max_question_chars
    assert f"question truncated from {len(text):,} to {len(answer.search_query):,} characters" in answer.reasons
    assert answer.citations and answer.generator == "extractive"


async def test_slack_formatting_decoded_at_the_edge_reaches_retrieval_as_is(pipeline):
    """The Slack edge decodes markup once (`normalise_slack`); the pipeline reads that text as it is."""
    answer = await ask(
        pipeline,
        normalise_slack(
            "<@U0BOT123> what&apos;s the API rate limit on the Pro plan &amp; is it per key? "
            "cc <@U999|maria> in <#C42|billing-help>, see <https://help.tallybook.example/api|the API docs>"
        ),
    )
    query = answer.search_query
    assert "<@" not in query and "<#" not in query and "&amp;" not in query
    assert query.startswith("what's the API rate limit on the Pro plan & is it per key?")
    assert "@maria" in query and "#billing-help" in query
    assert "the API docs (https://help.tallybook.example/api)" in query
    assert any(c.doc_url.endswith("/api/rate-limits") for c in answer.citations)


async def test_the_pipeline_does_not_decode_slack_text_a_second_time(pipeline):
    """Already decoded text that merely looks like Slack markup is the asker's own words."""
    answer = await ask(pipeline, "How do I create an API key? The doc shows <!here> and &amp;")
    assert "<!here>" in answer.search_query and "&amp;" in answer.search_query
    assert "@here" not in answer.search_query


@pytest.mark.parametrize("text", ["talk to a human", "agent please", "escalate", "Can I speak to a real person?"])
async def test_asking_for_a_human_escalates_at_once(pipeline, text):
    answer = await ask(pipeline, text)
    assert answer.decision is Decision.ESCALATE
    assert answer.reasons == ["asked for a human"] and answer.text == HUMAN_REPLY
    assert answer.retrieved == [] and "retrieve" not in answer.latency_ms


async def test_follow_up_uses_the_previous_turn_for_retrieval(pipeline):
    history = [
        Turn(role="user", text="How long after a payment can we still refund a card payment?"),
        Turn(role="assistant", text="Card payments can be refunded within 180 days of the payment.[1]"),
    ]
    answer = await ask(pipeline, "and for ACH?", history=history)
    assert answer.search_query.endswith("and for ACH?") and "refund" in answer.search_query.lower()
    assert "90 days" in answer.text  # ACH refunds: 90 days, found only with the earlier question's terms
    alone = await ask(pipeline, "and for ACH?")
    assert alone.search_query == "and for ACH?"


async def test_unanswerable_question_escalates_with_reasons(pipeline):
    answer = await ask(pipeline, CASES["s044"]["question"])  # a HubSpot integration: not in the knowledge
    assert answer.decision is Decision.ESCALATE
    assert any("don't mention 'HubSpot'" in reason for reason in answer.reasons)
    assert any("below the escalation threshold" in reason for reason in answer.reasons)
    assert answer.confidence < pipeline.settings.caveat_threshold


@pytest.mark.parametrize("case_id", ["s008", "s010", "s019", "s036"])
async def test_answerable_questions_answer_with_citations_to_their_documents(pipeline, case_id):
    case = CASES[case_id]
    answer = await ask(pipeline, case["question"])
    assert answer.decision is not Decision.ESCALATE, answer.reasons
    assert answer.citations
    documents = {c.doc_url for c in answer.citations}
    assert documents & set(case["gold_sources"])
    for citation in answer.citations:
        assert citation.url.startswith(citation.doc_url) and citation.doc_url.startswith(
            "https://help.tallybook.example/"
        )
        assert f"[{citation.number}]" in answer.text


async def test_every_answer_carries_timings_version_and_signals(pipeline):
    answer = await ask(pipeline, CASES["s018"]["question"])
    assert {"retrieve", "generate", "judge", "total"} <= set(answer.latency_ms)
    assert answer.latency_ms["total"] >= answer.latency_ms["retrieve"] > 0
    assert answer.index_version > 0 and answer.search_query == CASES["s018"]["question"]
    assert {"top_similarity", "margin", "rank_agreement", "term_coverage", "phrase_match", "citation_coverage"} <= set(
        answer.signals
    )
    assert 0.0 <= answer.confidence <= 1.0 and answer.usage.cost_usd == 0.0
    assert json.loads(answer.model_dump_json())["decision"] == answer.decision.value


async def test_retrieval_failure_is_an_honest_escalation_not_an_exception(sample_settings):
    class BrokenSearcher:
        async def asearch(self, *args, **kwargs):
            raise RuntimeError("index is being rebuilt")

    answer = await Pipeline(sample_settings, BrokenSearcher()).answer(Question(text="How do I refund a payment?"))
    assert answer.decision is Decision.ESCALATE
    assert any("knowledge search unavailable: index is being rebuilt" in r for r in answer.reasons)
    assert answer.text and answer.generator == "none"
