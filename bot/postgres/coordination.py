"""Leases, once-per-period jobs and fair use for replicas, in the database the logs live in.

- A lease is a session advisory lock (`pg_try_advisory_lock`) on a connection of its own, held
  for the block: a second replica is told at once that someone holds it, and a replica killed
  mid-refresh loses its connection, so the lease is free again without anyone cleaning up.
- `claim_run` inserts (job, period) with `ON CONFLICT DO NOTHING` under the job's lease, so one
  replica runs the weekly eval and posts its digest, even if another leads next week.
- `index_writer_lock` is the shared index's writer lock (a separate advisory lock, taken
  synchronously because the index's writes are): whoever holds it is the one process writing the
  index on object storage, be it `/kb-refresh`, a scheduled sync or `supportbot refresh`.
- Per-user answer starts are booked in `rate_bookings` under a transaction advisory lock per
  user (the same arithmetic as the in-memory limiter); answers in flight take a row of
  `answer_slots`, and a slot whose replica stopped beating is free again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import psycopg

from bot.postgres.store import CONNECT_OPTIONS, OWNER_DEAD, PostgresStore
from knowledge.index import RefreshInProgress, WriterLock

INDEX_WRITER = "lease:index-writer"


def index_writer_lock(url: str) -> WriterLock:
    """The shared index's writer lock: a session advisory lock on a connection of its own, so a
    writer killed mid-refresh frees it with its connection."""

    @contextmanager
    def held() -> Iterator[None]:
        with psycopg.connect(url, autocommit=True, options=CONNECT_OPTIONS) as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (INDEX_WRITER,)).fetchone()
            if not (row and row[0]):
                raise RefreshInProgress("another replica is writing the shared index")
            yield  # closing the connection ends the session, and its lock with it

    return held


class PostgresCoordination:
    def __init__(self, store: PostgresStore) -> None:
        self.store = store  # its pool, and its replica identity and heartbeat

    @property
    def shared_limits(self) -> PostgresCoordination:
        return self

    async def aclose(self) -> None:
        return None  # the store owns the connections

    @asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[bool]:
        conn = await psycopg.AsyncConnection.connect(self.store.url, autocommit=True, options=CONNECT_OPTIONS)
        try:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"lease:{name}",))
            row = await cursor.fetchone()
            yield bool(row and row[0])
        finally:
            await conn.close()  # the session ends, and its advisory lock with it

    async def claim_run(self, job: str, period: str) -> bool:
        async with self.lease(f"job:{job}") as held:
            if not held:
                return False
            rows = await self.store.fetch(
                """INSERT INTO job_runs (job, period, replica_id) VALUES (%(job)s, %(period)s, %(me)s)
                   ON CONFLICT DO NOTHING RETURNING job""",
                {"job": job, "period": period, "me": self.store.replica_id},
            )
            return bool(rows)

    async def reserve(self, user: str, per_window: int, window_seconds: float) -> float:
        pool = await self.store.pool()
        window = timedelta(seconds=window_seconds)
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"rate:{user}",))
            clock = await (await conn.execute("SELECT clock_timestamp() AS now")).fetchone()
            assert clock is not None
            now = clock["now"]
            await conn.execute('DELETE FROM rate_bookings WHERE "user" = %s AND starts_at <= %s', (user, now - window))
            cursor = await conn.execute(
                'SELECT starts_at FROM rate_bookings WHERE "user" = %s ORDER BY starts_at DESC LIMIT %s',
                (user, per_window),
            )
            recent = [row["starts_at"] for row in await cursor.fetchall()]
            at = now if len(recent) < per_window else recent[-1] + window
            await conn.execute('INSERT INTO rate_bookings ("user", starts_at) VALUES (%s, %s)', (user, at))
        return max(0.0, (at - now).total_seconds())

    async def try_slot(self, capacity: int) -> int | None:
        await self.store.start_heartbeat()  # a slot is held by a live replica
        await self.store.fetch(
            "INSERT INTO answer_slots (slot) SELECT generate_series(0, %(n)s - 1) ON CONFLICT DO NOTHING",
            {"n": capacity},
        )
        rows = await self.store.fetch(
            f"""UPDATE answer_slots SET owner = %(me)s, taken_at = clock_timestamp()
                WHERE slot = (SELECT slot FROM answer_slots
                              WHERE slot < %(n)s AND (owner IS NULL OR {OWNER_DEAD.format(table="answer_slots")})
                              ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING slot""",
            {"me": self.store.replica_id, "n": capacity, "timeout": self.store.replica_timeout},
        )
        return int(rows[0]["slot"]) if rows else None

    async def release_slot(self, slot: int) -> None:
        await self.store.fetch(
            "UPDATE answer_slots SET owner = NULL, taken_at = NULL WHERE slot = %(slot)s AND owner = %(me)s",
            {"slot": slot, "me": self.store.replica_id},
        )
