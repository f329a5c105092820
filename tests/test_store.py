"""The interaction and feedback logs: round trips, idempotent votes, concurrency, reopening."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from bot.engine.types import Answer, Citation, Decision, Question, RetrievedChunk, Turn, Usage
from bot.store import InteractionStore


def make_pair(n: int = 0, decision: Decision = Decision.ANSWER) -> tuple[Question, Answer]:
    question = Question(
        text=f"How do I reset my password? ({n})",
        asker="U1",
        channel="C1",
        thread_ts="1.0",
        history=[Turn(role="user", text="hi")],
    )
    answer = Answer(
        interaction_id=question.interaction_id,
        question=question.text,
        text="Use the reset link [1].",
        citations=[Citation(number=1, doc_id="d1", url="https://kb/d1", title="Reset", cited_text="reset link")],
        retrieved=[RetrievedChunk(chunk_id="c1", doc_id="d1", title="Reset", url="https://kb/d1", text="t", score=0.9)],
        confidence=0.8,
        decision=decision,
        reasons=["strong retrieval"],
        generator="extractive",
        index_version=3,
        latency_ms={"retrieve": 12.5, "total": 40.0},
        usage=Usage(input_tokens=10, cost_usd=0.01),
    )
    return question, answer


@pytest.fixture
def store(tmp_path):
    return InteractionStore(tmp_path / "logs")


async def test_log_answer_round_trip(store):
    question, answer = make_pair()
    await store.log_answer(question, answer, slack={"message_ts": "2.0", "surface": "mention"})
    row = await store.get_interaction(answer.interaction_id)
    assert row["question"] == question.text and row["asker"] == "U1" and row["thread_ts"] == "1.0"
    assert row["decision"] == "answer" and row["confidence"] == pytest.approx(0.8)
    assert row["citations"][0]["url"] == "https://kb/d1"
    assert row["retrieved"][0]["score"] == pytest.approx(0.9)
    assert row["latency_ms"]["retrieve"] == pytest.approx(12.5)
    assert row["slack"]["message_ts"] == "2.0" and row["history"] == [{"role": "user", "text": "hi"}]
    assert row["input_tokens"] == 10 and row["cost_usd"] == pytest.approx(0.01) and row["index_version"] == 3
    assert await store.get_interaction("missing") is None
    await store.log_answer(question, answer)  # logging again replaces, never duplicates
    assert len(store.interactions()) == 1


async def test_votes_are_idempotent_and_last_wins(store):
    ratings = ["up" if i % 2 else "down" for i in range(50)]
    rows = await asyncio.gather(*(store.record_feedback("i1", user="U1", rating=r) for r in ratings))
    assert {row["key"] for row in rows} == {"i1:U1:vote"}
    votes = store.feedback()
    assert len(votes) == 1 and votes[0]["rating"] == ratings[-1] and votes[0]["kind"] == "vote"
    await store.record_feedback("i1", user="U1", rating="down", comment="wrong page")
    await store.record_feedback("i1", user="U2", rating="up")
    by_user = {row["user"]: row for row in store.feedback()}
    assert by_user["U1"]["rating"] == "down" and by_user["U1"]["comment"] == "wrong page"
    assert by_user["U1"]["created_at"] <= by_user["U1"]["updated_at"]
    with pytest.raises(ValueError):
        await store.record_feedback("i1", user="U1", rating="meh")


async def test_200_concurrent_clicks_on_200_interactions(store):
    await asyncio.gather(*(store.record_feedback(f"i{n}", user=f"U{n}", rating="up") for n in range(200)))
    rows = store.feedback()
    assert len(rows) == 200 and len({row["interaction_id"] for row in rows}) == 200


async def test_escalation_is_one_row_updated_in_place(store):
    question, answer = make_pair(decision=Decision.ESCALATE)
    await store.log_answer(question, answer)
    iid = answer.interaction_id
    assert await store.get_escalation(iid) is None
    await store.record_escalation(
        iid,
        status="open",
        escalation_ts="9.9",
        escalation_channel="CESC",
        trigger="low confidence",
        permalink="https://x/p1",
    )
    await store.record_escalation(iid, status="claimed", user="UH")
    row = await store.record_escalation(iid, status="resolved", user="UH2", human_answer="Ask IT.")
    assert row["status"] == "resolved" and row["claimed_by"] == "UH" and row["resolved_by"] == "UH2"
    assert row["human_answer"] == "Ask IT." and row["escalation_ts"] == "9.9"
    assert (row["escalation_channel"], row["trigger"], row["permalink"]) == ("CESC", "low confidence", "https://x/p1")
    assert (await store.get_escalation(iid))["status"] == "resolved"
    rows = store.feedback()
    assert [r["kind"] for r in rows] == ["escalation"] and rows[0]["human_answer"] == "Ask IT."
    with pytest.raises(ValueError):
        await store.record_escalation(iid, status="lost")


async def test_reopened_store_keeps_everything_and_since_filters(tmp_path):
    first = InteractionStore(tmp_path / "logs")
    pairs = [make_pair(n) for n in range(3)]
    for question, answer in pairs:
        await first.log_answer(question, answer)
    await first.record_feedback(pairs[0][1].interaction_id, user="U1", rating="up")
    await first.record_escalation(pairs[1][1].interaction_id, status="resolved", human_answer="x")

    reopened = InteractionStore(tmp_path / "logs")
    assert [row["interaction_id"] for row in reopened.interactions()] == [a.interaction_id for _, a in pairs]
    assert {row["kind"] for row in reopened.feedback()} == {"vote", "escalation"}
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert reopened.interactions(since=future) == [] and reopened.feedback(since=future) == []
    past = datetime.now() - timedelta(days=1)  # naive: taken as UTC
    assert len(reopened.interactions(since=past)) == 3 and len(reopened.feedback(since=past)) == 2


def test_empty_store_reads_nothing(tmp_path):
    store = InteractionStore(tmp_path / "logs")
    assert store.interactions() == [] and store.feedback() == []


def now() -> datetime:
    return datetime.now(timezone.utc)


async def test_take_received_is_won_by_exactly_one_of_two_processes(tmp_path):
    """Two stores on one directory (two processes) race to take each unfinished question: the
    flock around the read-modify-write lets exactly one win each, and a live process's fresh
    "received" row is not taken at all."""
    logs = tmp_path / "logs"
    first, second = InteractionStore(logs), InteractionStore(logs)
    for n in range(5):
        assert await first.receive("C1", f"1.{n}", ask={"n": n})
        await first.mark_received("C1", f"1.{n}", "unfinished")  # a clean shutdown left them
    assert await first.receive("C1", "2.0")  # being answered right now by a live process
    stale_before = now() - timedelta(seconds=60)
    wins = await asyncio.gather(
        *(store.take_received("C1", f"1.{n}", stale_before=stale_before) for n in range(5) for store in (first, second))
    )
    assert sum(wins) == 5 and all(wins[2 * n] != wins[2 * n + 1] for n in range(5))
    assert not await second.take_received("C1", "2.0", stale_before=stale_before)
    assert not await second.take_received("C1", "1.0", stale_before=stale_before)  # taken: its lease is fresh
    assert await second.take_received("C1", "2.0", stale_before=now() + timedelta(seconds=1))  # its process died
    assert not await second.take_received("C1", "9.9", stale_before=now())  # never received: nothing to take


async def test_prune_received_forgets_only_old_finished_questions(tmp_path):
    store = InteractionStore(tmp_path / "logs")
    for ts, status in [("1.0", "done"), ("2.0", "apologised"), ("3.0", "unfinished"), ("4.0", "received")]:
        await store.receive("C1", ts)
        if status != "received":
            await store.mark_received("C1", ts, status)
    assert await store.prune_received(finished_before=now() - timedelta(days=1)) == 0  # all recent
    assert await store.prune_received(finished_before=now() + timedelta(seconds=1)) == 2
    left = {row["message_ts"]: row["status"] for row in store._received.select()}
    assert left == {"3.0": "unfinished", "4.0": "received"}  # owed answers are never pruned
    assert not await store.receive("C1", "3.0")  # still deduped
    assert await store.receive("C1", "1.0")  # a pruned one is new again (Slack stopped retrying long ago)
