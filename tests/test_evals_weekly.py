"""The weekly scheduler: slots, catch-up after downtime, persistence across restarts, digest posting."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

from evals.weekly import WeeklyResult, WeeklyScheduler, digest_text, latest_slot, next_run_at

UTC = timezone.utc
MONDAY_9 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)  # a Monday


def test_slots():
    assert latest_slot(MONDAY_9 + timedelta(minutes=1), 0, 9) == MONDAY_9
    assert latest_slot(MONDAY_9 - timedelta(minutes=1), 0, 9) == MONDAY_9 - timedelta(days=7)
    assert latest_slot(datetime(2025, 6, 5, 12, tzinfo=UTC), 2, 8) == datetime(2025, 6, 4, 8, tzinfo=UTC)
    now = MONDAY_9 + timedelta(days=2)
    assert next_run_at(now, now, 0, 9) == MONDAY_9 + timedelta(days=7)  # armed just now: wait for the next slot
    assert next_run_at(MONDAY_9 - timedelta(days=3), now, 0, 9) == MONDAY_9  # missed while down: catch up now
    assert next_run_at(MONDAY_9 + timedelta(seconds=5), now, 0, 9) == MONDAY_9 + timedelta(days=7)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make(settings, clock, calls, posted, **options):
    async def job(settings_, **_):
        calls.append(clock())
        return WeeklyResult(digest=f"digest {len(calls)}", report={}, paths={}, export_summary="")

    async def post(text):
        posted.append(text)

    return WeeklyScheduler(
        settings.model_copy(update={"weekly_eval": True}), post_digest=post, job=job, clock=clock, **options
    )


async def test_runs_once_per_week_and_survives_restarts(settings):
    clock, calls, posted = Clock(MONDAY_9 - timedelta(hours=1)), [], []
    scheduler = make(settings, clock, calls, posted)
    assert await scheduler.run_if_due() is None  # first start: waits for the slot
    clock.now = MONDAY_9 + timedelta(minutes=5)
    assert await scheduler.run_if_due() == "digest 1" and posted == ["digest 1"]
    assert await scheduler.run_if_due() is None

    restarted = make(settings, clock, calls, posted)  # same data dir: the last run is remembered
    assert restarted.last_run() == MONDAY_9 + timedelta(minutes=5)
    assert await restarted.run_if_due() is None
    clock.now = MONDAY_9 + timedelta(days=9)  # down over the next slot: catches up once
    assert await restarted.run_if_due() == "digest 2" and await restarted.run_if_due() is None
    assert len(calls) == 2


async def test_replicas_post_the_weekly_digest_once(tmp_path, settings, postgres_url):
    """Three replicas, each with its own data dir and scheduler, one PostgreSQL: one digest a week."""
    from bot.postgres.coordination import PostgresCoordination
    from bot.postgres.store import PostgresStore

    stores = [PostgresStore(postgres_url, replica_id=f"r{n}") for n in range(3)]
    clock, calls, posted = Clock(MONDAY_9 - timedelta(hours=1)), [], []
    schedulers = [
        make(
            settings.model_copy(update={"data_dir": tmp_path / f"replica-{n}"}),
            clock,
            calls,
            posted,
            claim_run=PostgresCoordination(store).claim_run,
        )
        for n, store in enumerate(stores)
    ]
    assert [await s.run_if_due() for s in schedulers] == [None] * 3  # armed before the slot
    clock.now = MONDAY_9 + timedelta(minutes=5)
    await asyncio.gather(*(s.run_if_due() for s in schedulers))
    assert posted == ["digest 1"] and len(calls) == 1
    clock.now = MONDAY_9 + timedelta(days=7, minutes=1)
    await asyncio.gather(*(s.run_if_due() for s in schedulers))
    assert posted == ["digest 1", "digest 2"]
    for store in stores:
        await store.aclose()


async def test_failures_are_posted_not_raised_and_the_task_starts_and_stops(settings):
    clock, posted = Clock(MONDAY_9 + timedelta(minutes=1)), []

    async def broken(settings_, **_):
        raise RuntimeError("index missing")

    async def post(text):
        posted.append(text)

    scheduler = WeeklyScheduler(
        settings.model_copy(update={"weekly_eval": True}),
        post_digest=post,
        job=broken,
        clock=clock,
        max_sleep_seconds=0.01,
    )
    scheduler._save_state(last_run=MONDAY_9 - timedelta(days=1))
    task = scheduler.start()
    for _ in range(100):
        if posted:
            break
        await asyncio.sleep(0.01)
    await scheduler.stop()
    assert task.done() and posted == ["*Weekly eval failed*: RuntimeError: index missing"]
    assert WeeklyScheduler(settings, job=broken).start() is None  # weekly_eval off: no task


def test_digest_text():
    report = {
        "k": 5,
        "cases": 55,
        "config": {"dataset": "evals/datasets/sample.jsonl", "generator": "extractive"},
        "retrieval": {"hit@k": 0.9, "mrr@k": 0.8},
        "answer": {"faithfulness": 1.0, "correctness": 0.4},
        "escalation": {"auroc": 0.85, "escalation_rate": 0.3},
        "latency_ms": {"p50": 40, "p95": 90},
        "usage": {"cost_usd": 0.0},
    }
    previous = {"retrieval": {"hit@k": 0.85}}
    text = digest_text(report, previous, "2 new candidate(s)", Path("/tmp/r/report.html"))
    assert "sample.jsonl (55 cases, extractive)" in text and "hit@5 0.90 (+0.05)" in text and "MRR@5 0.80 ·" in text
    assert "p95 90 ms" in text and "2 new candidate(s)" in text and "/tmp/r/report.html" in text
    assert "threshold" not in text  # no advice in the report: nothing to say

    fits = {
        "current": 0.35,
        "escalated": 0.86,
        "answered": 0.87,
        "targets": [0.8, 0.85],
        "meeting": [0.3, 0.4],
        "suggested": 0.35,
        "suggested_rates": [0.86, 0.87],
    }
    assert "threshold" not in digest_text({**report, "threshold_advice": fits}, None, "", Path("r.html"))
    misses = {
        **fits,
        "escalated": 0.93,
        "answered": 0.72,
        "meeting": [0.2, 0.2],
        "suggested": 0.2,
        "suggested_rates": [0.8, 0.85],
    }
    text = digest_text({**report, "threshold_advice": misses}, None, "", Path("r.html"))
    assert "At the escalation threshold 0.35, 93% of unanswerable" in text and "Only 0.20 meets both" in text


async def test_run_weekly_end_to_end(tmp_path, sample_data_dir, embedder):
    """Real pipeline, real store: a thumbs-up becomes a candidate, the set is scored, the digest says so."""
    from bot.engine.pipeline import Pipeline
    from bot.engine.types import Question
    from bot.settings import Settings
    from bot.store import InteractionStore
    from evals.cases import load_cases, write_cases
    from evals.weekly import run_weekly
    from tests.conftest import SAMPLE_EVALS

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "index").symlink_to(sample_data_dir / "index")  # read-only use of the shared sample index
    dataset = tmp_path / "frozen.jsonl"
    write_cases(dataset, load_cases(SAMPLE_EVALS)[:6])
    settings = Settings(data_dir=data_dir, eval_dataset=dataset, _env_file=None)

    store = InteractionStore.from_settings(settings)
    question = Question(text="What is the API rate limit per key?", asker="U1", channel="C1")
    answer = await Pipeline.from_settings(settings, embedder=embedder).answer(question)
    await store.log_answer(question, answer)
    await store.record_feedback(answer.interaction_id, user="U2", rating="up")

    result = await run_weekly(settings, store=store, embedder=embedder)
    assert "*Weekly eval* on frozen.jsonl (6 cases" in result.digest and "hit@5" in result.digest
    assert "1 new candidate(s)" in result.digest and str(result.paths["html"]) in result.digest
    assert result.paths["html"].exists() and len(list((data_dir / "evals" / "reports" / "history").glob("*.json"))) == 1
    [candidate] = load_cases(data_dir / "evals" / "candidates.jsonl")
    assert candidate.interaction_id == answer.interaction_id and candidate.origin == "thumbs-up"
    again = await run_weekly(settings, store=store, embedder=embedder)
    assert "0 new candidate(s)" in again.digest and "(+0.00)" in again.digest  # compared with last week
