"""Claude's own verdict end to end: the real pipeline and `anthropic` SDK against the emulator.

Every combination of verdict {full, partial, none, missing, malformed} x retrieval confidence
{high, low, none} x citations {verified, unverifiable, absent}, streamed and not, must end in the
decision of the table below, with a first reason naming the signal that decided, and the verdict
tag must never show in the answer or in any streamed delta. "high"/"low" force the lexical
judgement with the thresholds (answer everything / escalate everything), so the table holds
whatever the confidence score becomes; "none" is an off-topic question: retrieval finds nothing
about it (best similarity under `RETRIEVAL_FLOOR`).
"""

from __future__ import annotations

import pytest

from bot.engine.claude import NO_ANSWER, NOT_IN_SOURCES, SYSTEM_PROMPT
from bot.engine.pipeline import Pipeline
from bot.engine.types import Decision, Question
from bot.engine.verdict import RETRIEVAL_FLOOR
from knowledge.text import strip_markers
from tests.emulators.anthropic_api import INVENTED_CITATION, AnthropicEmulator, Reply
from tests.test_engine_claude import claude_settings as claude_test_settings

QUESTION = "How long after a payment can we still refund it to the customer's card?"
OFF_TOPIC = "What's a good recipe for banana bread?"

RETRIEVAL = {  # question, (answer_threshold, caveat_threshold); None: the defaults
    "high": (QUESTION, (0.0, 0.0)),
    "low": (QUESTION, (1.01, 1.01)),
    "none": (OFF_TOPIC, None),
}
CITE = {"verified": "source", "unverifiable": "invented", "absent": "none"}
VERDICT_REPLY = {
    "full": {"verdict": "full"},
    "partial": {"verdict": "partial"},
    "none": {"verdict": "none"},
    "missing": {},
    "malformed": {"tail": "\n\n<verdict>mostly</verdict>"},
}

A, C, E = Decision.ANSWER, Decision.ANSWER_WITH_CAVEAT, Decision.ESCALATE
# verdict -> citations -> (high, low, none) retrieval: (decision, the signal that decided)
NO_VERDICT = {
    "verified": [(A, "retrieval"), (E, "retrieval"), (E, "retrieval")],
    "unverifiable": [(C, "retrieval"), (E, "retrieval"), (E, "retrieval")],
    "absent": [(A, "retrieval"), (E, "retrieval"), (E, "retrieval")],
}
TABLE = {
    "full": {
        "verified": [(A, "claude"), (A, "claude"), (E, "floor")],
        "unverifiable": [(C, "retrieval"), (E, "retrieval"), (E, "floor")],
        "absent": [(A, "retrieval"), (E, "retrieval"), (E, "floor")],
    },
    "partial": {
        "verified": [(C, "claude"), (C, "claude"), (E, "floor")],
        "unverifiable": [(E, "retrieval"), (E, "retrieval"), (E, "floor")],
        "absent": [(C, "retrieval"), (E, "retrieval"), (E, "floor")],
    },
    "none": {cite: [(E, "claude")] * 3 for cite in CITE},
    "missing": NO_VERDICT,
    "malformed": NO_VERDICT,
}
LEADS = {
    "claude": "Claude: ",
    "floor": "retrieval found essentially nothing",
    "retrieval": "retrieval confidence ",
}


@pytest.fixture
async def emu():
    async with AnthropicEmulator() as emulator:
        yield emulator


def claude_settings(sample_settings, emu, **overrides):
    """The Claude settings of test_engine_claude, without retries (every reply here is scripted)."""
    return claude_test_settings(sample_settings, emu, **{"anthropic_max_retries": 0, **overrides})


async def ask(settings, searcher, question: str, *, stream: bool):
    pieces: list[str] = []

    async def on_delta(piece: str) -> None:
        pieces.append(piece)

    pipeline = Pipeline.from_settings(settings, searcher=searcher)
    try:
        answer = await pipeline.answer(Question(text=question), on_delta=on_delta if stream else None)
    finally:
        await pipeline.aclose()
    return answer, pieces


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("citations", list(CITE))
@pytest.mark.parametrize("retrieval", list(RETRIEVAL))
@pytest.mark.parametrize("verdict", list(VERDICT_REPLY))
async def test_every_combination_decides_per_the_table(
    sample_settings, sample_searcher, emu, verdict, retrieval, citations, stream
):
    question, thresholds = RETRIEVAL[retrieval]
    overrides = {} if thresholds is None else {"answer_threshold": thresholds[0], "caveat_threshold": thresholds[1]}
    emu.script(Reply(cite=CITE[citations], delta_chars=3, **VERDICT_REPLY[verdict]))
    answer, pieces = await ask(
        claude_settings(sample_settings, emu, **overrides), sample_searcher, question, stream=stream
    )

    assert emu.last.stream is stream and answer.generator == "claude"
    signals = answer.signals
    # the retrieval class really is what the row says
    assert signals["retrieval_decision"] == {"high": "answer", "low": "escalate", "none": "escalate"}[retrieval]
    assert (signals["retrieval_top_similarity"] < RETRIEVAL_FLOOR) is (retrieval == "none")
    # the citations were checked
    assert signals["claude_verdict"] == verdict
    total, verified = signals["citations_total"], signals["citations_verified"]
    assert {"verified": total == verified > 0, "unverifiable": total > 0 == verified, "absent": total == 0}[citations]
    assert all(c.cited_text != INVENTED_CITATION for c in answer.citations) or citations == "unverifiable"

    decision, decider = TABLE[verdict][citations][list(RETRIEVAL).index(retrieval)]
    lead = answer.reasons[0]
    assert answer.decision is decision, lead
    assert lead.startswith(LEADS[decider]), lead
    if decider == "retrieval":
        assert "decided" in lead
    if citations == "unverifiable" and verdict != "none":
        assert "not found in" in lead
        if retrieval == "high":  # it lowered what retrieval (and Claude) would have allowed
            assert "an unverifiable citation lowered the decision" in lead
    if verdict == "partial" and decider == "claude":
        assert "only partly answer" in lead

    # the tag never shows: not in the answer, not in any delta
    assert "verdict" not in answer.text.lower()
    if stream:
        streamed = "".join(pieces)
        assert pieces and all("<" not in piece and "verdict" not in piece.lower() for piece in pieces)
        assert streamed.strip() == strip_markers(answer.text)
    else:
        assert pieces == []


def test_the_table_covers_every_combination():
    assert {(v, c) for v in TABLE for c in TABLE[v]} == {(v, c) for v in VERDICT_REPLY for c in CITE}
    assert all(len(row) == len(RETRIEVAL) for v in TABLE for row in TABLE[v].values())


@pytest.mark.parametrize("size", [1, 2, 4, 5, 7, 9, 11, 23])
async def test_a_tag_split_anywhere_in_the_stream_never_reaches_a_delta(sample_settings, sample_searcher, emu, size):
    emu.script(Reply(verdict="full", delta_chars=size))
    answer, pieces = await ask(claude_settings(sample_settings, emu), sample_searcher, QUESTION, stream=True)
    streamed = "".join(pieces)
    assert answer.signals["claude_verdict"] == "full"
    assert "<" not in streamed and "verdict" not in streamed.lower()
    assert streamed.strip() == strip_markers(answer.text) and answer.decision is Decision.ANSWER


async def test_the_contract_asks_for_the_verdict_and_the_request_stays_valid(sample_settings, sample_searcher, emu):
    await ask(claude_settings(sample_settings, emu), sample_searcher, QUESTION, stream=False)
    body = emu.last.body
    assert body["system"] == [{"type": "text", "text": SYSTEM_PROMPT}]  # ~350 tokens: too short to cache
    for tag in ("<verdict>full</verdict>", "<verdict>partial</verdict>", "<verdict>none</verdict>"):
        assert tag in SYSTEM_PROMPT
    assert "output_format" not in body and "tools" not in body  # citations only: no structured outputs
    results = [b for b in body["messages"][-1]["content"] if b["type"] == "search_result"]
    assert results and all(b["citations"] == {"enabled": True} for b in results)


async def test_no_answer_sentinel_with_its_verdict_streams_nothing_and_escalates(sample_settings, sample_searcher, emu):
    emu.script(Reply(text=NO_ANSWER, verdict="none", delta_chars=2))
    answer, pieces = await ask(
        claude_settings(sample_settings, emu, answer_threshold=0.0, caveat_threshold=0.0),
        sample_searcher,
        QUESTION,
        stream=True,
    )
    assert pieces == [] and answer.text == NOT_IN_SOURCES
    assert answer.decision is Decision.ESCALATE and answer.signals["claude_verdict"] == "none"
    assert answer.reasons[0].startswith("Claude: the sources don't answer it")


async def test_a_reply_that_is_only_a_none_verdict_escalates(sample_settings, sample_searcher, emu):
    emu.script(Reply(text="", verdict="none"))
    answer, pieces = await ask(claude_settings(sample_settings, emu), sample_searcher, QUESTION, stream=True)
    assert pieces == [] and answer.text == NOT_IN_SOURCES and answer.decision is Decision.ESCALATE


async def test_citation_verification_normalises_whitespace(sample_settings, sample_searcher, emu):
    """A cited_text that differs from the chunk only in whitespace is verified; the same words
    pointing at another search result are not."""
    plain = await ask(claude_settings(sample_settings, emu), sample_searcher, QUESTION, stream=False)
    first = plain[0].retrieved[0].text
    spaced = "\n  ".join(first.split())
    citation = {
        "type": "search_result_location",
        "cited_text": spaced,
        "source": "s",
        "title": "t",
        "start_block_index": 0,
        "end_block_index": 1,
    }
    emu.script(
        Reply(text="Cards can be refunded.", citations=[{**citation, "search_result_index": 0}], verdict="full"),
        Reply(text="Cards can be refunded.", citations=[{**citation, "search_result_index": 1}], verdict="full"),
    )
    settings = claude_settings(sample_settings, emu, answer_threshold=1.01, caveat_threshold=1.01)
    good, _ = await ask(settings, sample_searcher, QUESTION, stream=False)
    assert (good.signals["citations_total"], good.signals["citations_verified"]) == (1, 1)
    assert good.decision is Decision.ANSWER and good.reasons[0].startswith("Claude: the sources fully answer it")
    wrong, _ = await ask(settings, sample_searcher, QUESTION, stream=False)
    assert (wrong.signals["citations_total"], wrong.signals["citations_verified"]) == (1, 0)
    assert wrong.decision is Decision.ESCALATE


async def test_the_extractive_answerer_has_no_verdict(sample_settings, sample_searcher):
    pipeline = Pipeline.from_settings(sample_settings, searcher=sample_searcher)
    answer = await pipeline.answer(Question(text=QUESTION))
    assert answer.generator == "extractive" and "claude_verdict" not in answer.signals
    assert not any(reason.startswith(("Claude:", "retrieval confidence")) for reason in answer.reasons)


async def test_the_extractive_fallback_has_no_verdict(sample_settings, sample_searcher, emu):
    emu.always_fail(529)
    answer, _ = await ask(claude_settings(sample_settings, emu), sample_searcher, QUESTION, stream=False)
    assert answer.generator == "extractive-fallback" and "claude_verdict" not in answer.signals
