"""Replicas agreeing through PostgreSQL (a real server): the refresh lease, once-per-period jobs,
and fair use counted across replicas. The embedded default agrees with nobody and always may."""

from __future__ import annotations

import asyncio

import pytest

from bot.coordination import LocalCoordination
from bot.slack.ratelimit import AnswerLimiter


@pytest.fixture
async def replicas(postgres_url):
    from bot.postgres.coordination import PostgresCoordination
    from bot.postgres.store import PostgresStore

    stores = [PostgresStore(postgres_url, replica_timeout_seconds=1.0, replica_id=f"r{n}") for n in range(3)]
    yield [PostgresCoordination(store) for store in stores]
    for store in stores:
        await store.aclose()


async def test_local_coordination_always_may():
    local = LocalCoordination()
    async with local.lease("refresh") as held, local.lease("refresh") as again:
        assert held and again  # one process: the index's file lock is what refuses a second refresh
    assert await local.claim_run("weekly-eval", "2026-W1") and local.shared_limits is None


async def test_one_replica_holds_the_lease_and_a_killed_holder_frees_it(replicas):
    first, second, _ = replicas
    async with first.lease("refresh") as held:
        assert held
        async with second.lease("refresh") as other:
            assert not other  # told at once, not queued
        async with second.lease("something else") as unrelated:
            assert unrelated
    async with second.lease("refresh") as after:
        assert after  # released with the holder's session


async def test_a_job_runs_once_per_period_whichever_replica_asks(replicas):
    claims = await asyncio.gather(*(c.claim_run("weekly-eval", "2026-11-30") for c in replicas for _ in range(3)))
    assert sum(claims) == 1
    assert await replicas[2].claim_run("weekly-eval", "2026-12-07")  # next week is a new period


async def test_a_users_rate_is_counted_across_replicas(replicas):
    delays = [await replicas[n % 3].reserve("U1", 2, 60.0) for n in range(4)]
    assert delays[:2] == [0.0, 0.0] and 59 < delays[2] <= 60 and 59 < delays[3] <= 60
    assert await replicas[1].reserve("U2", 2, 60.0) == 0.0  # another user is not affected


async def test_the_global_cap_holds_across_replicas_and_frees_a_dead_replicas_slots(replicas):
    first, second, third = replicas
    taken = [await first.try_slot(2), await second.try_slot(2)]
    assert sorted(taken) == [0, 1] and await third.try_slot(2) is None
    await second.release_slot(taken[1])
    assert await third.try_slot(2) == taken[1]
    first.store.heartbeat.stop()  # the first replica dies holding slot 0
    await asyncio.sleep(1.5)
    assert await second.try_slot(2) == taken[0]


async def test_the_limiter_queues_on_shared_limits_and_says_so(replicas):
    limiters = [AnswerLimiter(100, 1, shared=c) for c in replicas[:2]]
    told: list[float] = []
    order: list[str] = []

    async def answer(limiter: AnswerLimiter, name: str) -> None:
        async def on_queued(seconds: float) -> None:
            told.append(seconds)

        async with limiter.slot(name, on_queued):
            order.append(f"start {name}")
            await asyncio.sleep(0.3)
            order.append(f"end {name}")

    await asyncio.gather(answer(limiters[0], "U1"), answer(limiters[1], "U2"))
    assert len(told) == 1  # the second replica's asker waited for the one global slot, and was told
    assert order[1].startswith("end")  # never two answers at once with a cap of one
