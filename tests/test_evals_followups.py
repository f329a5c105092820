"""Eval cases with thread history: the contract, the runner's replay and follow-up section, the
export of votes in threads (PII scrubbed, kept apart from look-alikes in other threads), the review."""

from __future__ import annotations

import json

import pytest

from bot.engine.pipeline import Pipeline
from bot.engine.types import Answer, Citation, Decision, Question, RetrievedChunk, Turn
from bot.store import InteractionStore
from evals.cases import EvalCase, load_cases, parse_cases
from evals.export import export_feedback, parse_since
from evals.review import history_lines, show
from evals.runner import followup_summary, replay_thread, run_eval
from tests.conftest import ROOT

ACH_URL = "https://help.tallybook.example/payments/ach-direct-debit"
FOLLOWUPS = ROOT / "evals" / "datasets" / "followups-sample.jsonl"


def test_history_is_part_of_the_contract_and_single_turn_lines_keep_their_shape():
    line = json.dumps(
        {
            "id": "f1",
            "question": "and for ACH?",
            "gold_sources": [ACH_URL],
            "followup_kind": "ellipsis",
            "history": [
                {"role": "user", "text": "refund window for cards?"},
                {"role": "assistant", "text": "180 days.", "sources": [ACH_URL + "#refunds"]},
            ],
        }
    )
    [case], errors = parse_cases([line])
    assert not errors and case.is_followup and case.history[1].sources == [ACH_URL + "#refunds"]
    assert json.loads(case.to_json_line())["history"][0] == {"role": "user", "text": "refund window for cards?"}
    single = EvalCase(id="s1", question="How do refunds work?")
    assert "history" not in json.loads(single.to_json_line()) and not single.is_followup
    bad = json.dumps({"id": "f2", "question": "and?", "history": [{"role": "bot", "text": "hi"}]})
    blank = json.dumps({"id": "f3", "question": "and?", "history": [{"role": "user", "text": "  "}]})
    _, errors = parse_cases([bad, blank])
    assert [error.line for error in errors] == [1, 2] and "history.0.role" in errors[0].message


def test_the_committed_follow_up_sets_cover_every_kind():
    kinds = {"pronoun", "ellipsis", "topic_shift", "clarification", "same_article", "unanswerable"}
    for path in (FOLLOWUPS, ROOT / "benchmarks" / "conversations" / "followups-anthropic-docs.jsonl"):
        cases = load_cases(path)
        assert len(cases) >= 30 and all(case.is_followup for case in cases)
        assert {case.followup_kind for case in cases} == kinds
        assert all(case.answerable == (case.followup_kind != "unanswerable") for case in cases)


def test_followup_summary_puts_single_turn_and_follow_ups_side_by_side():
    def row(kind, hit, escalated, answerable=True):
        return {
            "history": [{"role": "user", "text": "q"}] if kind else [],
            "followup_kind": kind,
            "retrieval": {"hit@k": hit, "mrr@k": hit, "recall@k": hit} if answerable else {},
            "escalated": escalated,
            "answerable": answerable,
            "token_f1": None,
        }

    rows = [
        row(None, 1.0, False),
        row("pronoun", 1.0, False),
        row("pronoun", 0.0, True),
        row("unanswerable", 0.0, True, answerable=False),
    ]
    summary = followup_summary(rows)
    assert summary["single_turn"]["cases"] == 1 and summary["single_turn"]["hit@k"] == 1.0
    assert summary["followup"]["cases"] == 3 and summary["followup"]["hit@k"] == 0.5
    assert summary["by_kind"]["pronoun"]["answered_when_answerable"] == 0.5
    assert summary["by_kind"]["unanswerable"]["escalated_when_unanswerable"] == 1.0
    assert summary["by_kind"]["unanswerable"]["answered_when_answerable"] is None
    assert followup_summary([row(None, 1.0, False)]) is None


class CountingPipeline(Pipeline):
    """The real pipeline, counting the questions it answers."""

    calls = 0

    async def answer(self, question, **kwargs):
        type(self).calls += 1
        return await super().answer(question, **kwargs)


async def test_replay_answers_missing_bot_turns_once_per_thread(sample_settings, sample_searcher):
    pipeline = CountingPipeline(sample_settings, sample_searcher)
    history = EvalCase(
        id="x", question="and for ACH?", history=[{"role": "user", "text": "How long can we refund a card payment?"}]
    ).history
    replies: dict = {}
    thread = await replay_thread(pipeline, history, replies)
    assert [turn.role for turn in thread] == ["user", "assistant"] and CountingPipeline.calls == 1
    assert thread[1].sources and all(
        source.startswith("https://help.tallybook.example/") for source in thread[1].sources
    )
    assert await replay_thread(pipeline, history, replies) == thread and CountingPipeline.calls == 1
    given = EvalCase(
        id="y",
        question="and for ACH?",
        history=[
            {"role": "user", "text": "How long can we refund a card payment?"},
            {"role": "assistant", "text": "180 days.", "sources": [ACH_URL]},
        ],
    ).history
    assert (await replay_thread(pipeline, given, replies))[1].sources == [ACH_URL] and CountingPipeline.calls == 1


@pytest.mark.slow
async def test_run_scores_follow_ups_with_their_thread(sample_settings, embedder):
    cases = [case for case in load_cases(FOLLOWUPS) if case.followup_kind in ("ellipsis", "unanswerable")][:5]
    report = await run_eval(sample_settings, cases, embedder=embedder, progress=False)
    rows = report["per_case"]
    assert all(row["history"] and row["followup_kind"] for row in rows)
    assert report["followups"]["followup"]["cases"] == len(cases)
    assert set(report["followups"]["by_kind"]) == {case.followup_kind for case in cases}
    assert report["followups"]["followup"]["hit@k"] >= 0.75  # "and for ACH?" and co. find their article


def answered(question: str, text: str, history: list[Turn]):
    q = Question(text=question, asker="U0ASKER", channel="C0SUPPORT", thread_ts="1.0", history=history)
    citation = Citation(
        number=1,
        doc_id="payments/ach-direct-debit.html",
        chunk_id="ach#0",
        url=ACH_URL + "#refunds",
        title="ACH",
        cited_text="90 days",
    )
    chunk = RetrievedChunk(
        chunk_id="ach#0",
        doc_id="payments/ach-direct-debit.html",
        title="ACH",
        url=ACH_URL + "#refunds",
        text="ACH payments can be refunded within 90 days.",
        score=0.9,
        vector_similarity=0.7,
    )
    return q, Answer(
        interaction_id=q.interaction_id,
        question=question,
        text=text,
        citations=[citation],
        retrieved=[chunk],
        confidence=0.8,
        decision=Decision.ANSWER,
    )


async def test_a_vote_in_a_thread_exports_a_scrubbed_follow_up_case(tmp_path, embedder):
    store = InteractionStore(tmp_path / "logs")
    refunds = [
        Turn(role="user", text="<@U0BOT> how long can we refund a card payment? I'm jane@acme.com"),
        Turn(
            role="assistant",
            text="Within 180 days [1].",
            sources=[ACH_URL.replace("ach-direct-debit", "refund-a-payment") + "#time-limits"],
        ),
    ]
    limits = [
        Turn(role="user", text="what is the max for a single card payment? call +1 415 555 0100"),
        Turn(role="assistant", text="There is no fixed limit [1]."),
    ]
    first = answered("and for ACH?", "Within 90 days [1].", refunds)
    second = answered("and for ACH?", "At most $50,000 [1].", limits)
    for q, a in (first, second):
        await store.log_answer(q, a, slack={"surface": "thread"})
        await store.record_feedback(a.interaction_id, user="U1", rating="up")
    candidates = tmp_path / "candidates.jsonl"
    await export_feedback(
        store,
        embedder,
        since=parse_since("7d"),
        candidates_path=candidates,
        review_path=tmp_path / "review.jsonl",
        frozen_paths=[],
    )
    cases = {case.interaction_id: case for case in load_cases(candidates)}
    assert len(cases) == 2  # the same words in two threads are two different questions
    case = cases[first[1].interaction_id]
    assert case.question == "and for ACH?" and case.gold_sources == [ACH_URL]
    assert [turn.role for turn in case.history] == ["user", "assistant"]
    assert case.history[0].text == "how long can we refund a card payment? I'm <EMAIL>"
    assert case.history[1].text == "Within 180 days." and case.history[1].sources == [
        "https://help.tallybook.example/payments/refund-a-payment"
    ]
    assert "<PHONE>" in cases[second[1].interaction_id].history[0].text


def test_review_shows_the_thread_before_the_follow_up(capsys):
    case = EvalCase(
        id="f1",
        question="and for ACH?",
        history=[
            {"role": "user", "text": "refund window for cards?"},
            {"role": "assistant", "text": "180 days. " * 60, "sources": [ACH_URL]},
        ],
    )
    lines = history_lines(case)
    assert lines[0] == "  thread 1 user: refund window for cards?"
    assert lines[1].startswith("  thread 2 assistant: 180 days.") and lines[1].endswith("…")
    assert ACH_URL in lines[2]
    show(case, 1, 1)
    out = capsys.readouterr().out
    assert out.index("thread 1 user") < out.index("follow-up: and for ACH?")


def test_report_puts_single_turn_and_follow_ups_side_by_side_and_shows_threads():
    from bot.engine.types import Decision as D
    from evals.report import render_html, render_markdown
    from evals.runner import score_case, summarise

    def reply(decision, url):
        chunk = RetrievedChunk(
            chunk_id="c#0", doc_id="c", title="ACH", url=url, text="ACH refunds: 90 days.", score=0.9
        )
        return Answer(
            interaction_id="i",
            question="q",
            text="90 days.",
            retrieved=[chunk],
            confidence=0.7,
            decision=decision,
            latency_ms={"total": 10.0},
        )

    single = EvalCase(id="s1", question="How long for ACH refunds?", gold_sources=[ACH_URL])
    followup = EvalCase(
        id="f1",
        question="and for ACH?",
        gold_sources=[ACH_URL],
        followup_kind="ellipsis",
        history=[{"role": "user", "text": "refund window for cards?"}],
    )
    rows = [score_case(single, reply(D.ANSWER, ACH_URL), 5), score_case(followup, reply(D.ESCALATE, "https://x/y"), 5)]
    report = summarise(rows, 5) | {"per_case": rows, "config": {}, "threshold_advice": None}
    markdown = render_markdown(report)
    assert "## Single-turn and follow-up questions" in markdown
    assert "| single-turn questions | 1 | 1.000 |" in markdown and "| follow-ups in a thread | 1 | 0.000 |" in markdown
    assert "| follow-up: ellipsis | 1 |" in markdown
    assert "- thread: user: refund window for cards?" in markdown  # the failed follow-up is shown with its thread
    html = render_html(report, {})
    assert "Single-turn and follow-up questions" in html and "thread: user: refund window for cards?" in html
    plain = summarise(rows[:1], 5) | {"per_case": rows[:1], "config": {}, "threshold_advice": None}
    assert plain["followups"] is None and "follow-up" not in render_markdown(plain)
