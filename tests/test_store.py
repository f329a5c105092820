"""The interaction and feedback logs: round trips, idempotent votes, concurrency, reopening.

Every behaviour test runs against both engines: the embedded LanceDB logs and PostgreSQL (a real
server the `postgres_url` fixture starts), through the same `Store` protocol.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from bot.engine.types import Answer, Citation, Decision, Question, RetrievedChunk, Turn, Usage
from bot.store import EscalationConflict, InteractionStore


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


ENGINES = ["lancedb", "postgres"]


@pytest.fixture(params=ENGINES)
async def open_logs(request, tmp_path):
    """A function opening the logs (again: a reopened store must see everything), on each engine."""
    if request.param == "lancedb":
        yield lambda: InteractionStore(tmp_path / "logs")
        return
    from bot.postgres.store import PostgresStore

    url = request.getfixturevalue("postgres_url")
    opened: list[PostgresStore] = []

    def open_postgres() -> PostgresStore:
        opened.append(PostgresStore(url))
        return opened[-1]

    yield open_postgres
    for store in opened:
        await store.aclose()


@pytest.fixture
def store(open_logs):
    return open_logs()


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
    assert [row["interaction_id"] for row in await store.interactions_in(row["channel"])] == [answer.interaction_id]
    assert await store.interactions_in("C-elsewhere") == []
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


async def test_reopened_store_keeps_everything_and_since_filters(open_logs):
    first = open_logs()
    pairs = [make_pair(n) for n in range(3)]
    for question, answer in pairs:
        await first.log_answer(question, answer)
    await first.record_feedback(pairs[0][1].interaction_id, user="U1", rating="up")
    await first.record_escalation(pairs[1][1].interaction_id, status="resolved", human_answer="x")

    reopened = open_logs()
    assert [row["interaction_id"] for row in reopened.interactions()] == [a.interaction_id for _, a in pairs]
    assert {row["kind"] for row in reopened.feedback()} == {"vote", "escalation"}
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert reopened.interactions(since=future) == [] and reopened.feedback(since=future) == []
    past = datetime.now() - timedelta(days=1)  # naive: taken as UTC
    assert len(reopened.interactions(since=past)) == 3 and len(reopened.feedback(since=past)) == 2


def test_empty_store_reads_nothing(store):
    assert store.interactions() == [] and store.feedback() == []


async def test_a_message_is_received_once_and_unfinished_until_done(open_logs):
    store = open_logs()
    assert await store.receive("C1", "1.1", user="U1", ask={"text": "hi"})
    assert not await store.receive("C1", "1.1", user="U1")  # the retry: already taken
    await store.note_reply("C1", "1.1", "1.5")  # its streamed reply started: a restart rewrites that message
    assert await store.receive("C1", "2.2", user="U2")
    await store.mark_received("C1", "2.2", "done")
    await store.aclose()  # a restart: what the last run did not finish is owed
    store = open_logs()
    assert not await store.receive("C1", "2.2", user="U2")  # dedupe survives the restart
    owed = [(row["key"], row["ask"]) for row in store.unfinished()]
    assert owed == [("C1:1.1", {"text": "hi", "reply_ts": "1.5"})]
    await store.mark_received("C1", "1.1", "apologised")
    assert store.unfinished() == []
    with pytest.raises(ValueError):
        await store.mark_received("C1", "1.1", "forgotten")


async def test_escalation_conflict_names_the_stored_row(store):
    await store.record_escalation("i-9", status="open", escalation_ts="1.1", escalation_channel="C0ESC")
    await store.record_escalation("i-9", status="resolved", user="UA", human_answer="First answer.")
    for status in ("resolved", "claimed", "open"):
        with pytest.raises(EscalationConflict) as refused:
            await store.record_escalation("i-9", status=status, user="UB", human_answer="Second answer.")
        assert refused.value.current["status"] == "resolved"
    row = await store.get_escalation("i-9")
    assert (row["human_answer"], row["resolved_by"], row["escalation_ts"]) == ("First answer.", "UA", "1.1")
    await store.record_escalation("i-8", status="pending")
    await store.record_escalation("i-8", status="failed")
    assert (await store.record_escalation("i-8", status="pending"))["status"] == "pending"  # a failed post may retry


# ---------------------------------------------------------------- replicas sharing PostgreSQL


@pytest.fixture
async def replicas(postgres_url):
    """Three stores on one database, as three `supportbot serve` processes would hold."""
    from bot.postgres.store import PostgresStore

    stores = [PostgresStore(postgres_url, replica_timeout_seconds=1.0, replica_id=f"r{n}") for n in range(3)]
    yield stores
    for store in stores:
        await store.aclose()


async def test_racing_replicas_move_an_escalation_exactly_once(replicas):
    await replicas[0].record_escalation("i1", status="open")
    outcomes = await asyncio.gather(
        *(store.record_escalation("i1", status="claimed", user=f"U{n}") for n, store in enumerate(replicas)),
        return_exceptions=True,
    )
    winners = [row for row in outcomes if isinstance(row, dict)]
    assert len(winners) == 1 and sum(isinstance(o, EscalationConflict) for o in outcomes) == 2
    assert (await replicas[1].get_escalation("i1"))["claimed_by"] == winners[0]["claimed_by"]


async def test_a_message_retried_to_every_replica_is_taken_once(replicas):
    taken = await asyncio.gather(*(store.receive("C1", f"{n}.0") for n in range(50) for store in replicas))
    assert sum(taken) == 50


async def test_a_dead_replicas_question_is_taken_over_and_recovered_once(replicas):
    first, second, third = replicas
    assert await first.receive("C1", "1.0", ask={"text": "q1"})
    assert await first.receive("C1", "2.0", ask={"text": "q2"})
    assert not await second.receive("C1", "1.0")  # the owner is alive: a retry is a duplicate
    assert second.unfinished() == []  # and recovery leaves its questions alone
    first.heartbeat.stop()  # kill -9: the beats stop
    await asyncio.sleep(1.5)
    assert await second.receive("C1", "1.0")  # Slack's retry reaches a live replica: taken over
    assert not await third.receive("C1", "1.0")  # ... once
    recovered = await asyncio.gather(asyncio.to_thread(second.unfinished), asyncio.to_thread(third.unfinished))
    keys = [row["key"] for rows in recovered for row in rows]
    assert sorted(keys) == ["C1:1.0", "C1:2.0"] or keys == ["C1:2.0"]
    assert keys.count("C1:2.0") == 1  # of two replicas recovering at once, one takes it


def test_db_upgrade_applies_each_migration_once(postgres_server, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from bot.cli import main
    from bot.postgres.migrations import pending

    url = postgres_server.create_database()
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.delenv("SUPPORTBOT_DATABASE_URL", raising=False)
    refused = CliRunner().invoke(main, ["db", "upgrade"])
    assert refused.exit_code == 2 and "SUPPORTBOT_DATABASE_URL is not set" in refused.output
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", url)
    assert pending(url) == ["0001_initial"]
    first = CliRunner().invoke(main, ["db", "upgrade"])
    assert first.exit_code == 0 and "applied 0001_initial" in first.output, first.output
    again = CliRunner().invoke(main, ["db", "upgrade", "--json"])
    assert again.exit_code == 0 and '"applied": []' in again.output and pending(url) == []


async def test_readiness_names_an_unreachable_or_unmigrated_database(store, postgres_server):
    from bot.postgres.store import PostgresStore
    from tests.engines.postgres import free_port

    assert await store.problem() is None  # either engine, when it works
    unmigrated = PostgresStore(postgres_server.create_database())
    down = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=1")
    try:
        assert "UndefinedTable" in (await unmigrated.problem() or "")
        assert (await down.problem() or "").startswith("database: ")
    finally:
        await unmigrated.aclose()
        await down.aclose()


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


async def test_prune_received_forgets_only_old_finished_questions(store):
    for ts, status in [("1.0", "done"), ("2.0", "apologised"), ("3.0", "unfinished"), ("4.0", "received")]:
        await store.receive("C1", ts)
        if status != "received":
            await store.mark_received("C1", ts, status)
    assert await store.prune_received(finished_before=now() - timedelta(days=1)) == 0  # all recent
    assert await store.prune_received(finished_before=now() + timedelta(seconds=1)) == 2
    assert not await store.receive("C1", "3.0")  # owed answers are never pruned: still deduped
    assert not await store.receive("C1", "4.0")
    assert await store.receive("C1", "1.0")  # a pruned one is new again (Slack stopped retrying long ago)


async def test_a_stale_pending_escalation_is_taken_by_exactly_one_sweeper(store):
    await store.record_escalation("i-1", status="pending")
    await store.record_escalation("i-2", status="open")
    assert store.stale_escalations(stale_before=now() - timedelta(seconds=60)) == []  # its poster may be alive
    assert await store.take_escalation("i-1", stale_before=now() - timedelta(seconds=60)) is None
    await asyncio.sleep(0.05)
    stale_before = now()  # the lease ran out: the poster died
    assert [row["interaction_id"] for row in store.stale_escalations(stale_before=stale_before)] == ["i-1"]
    taken = await asyncio.gather(*(store.take_escalation("i-1", stale_before=stale_before) for _ in range(2)))
    assert sum(row is not None for row in taken) == 1  # the winner renewed the lease
    assert await store.take_escalation("i-2", stale_before=stale_before) is None  # posted: nothing to take
