"""The interaction, feedback and received-question logs in PostgreSQL, shared by every replica.

The same contract as the embedded `bot.store.InteractionStore` (the field names of its docstring,
the same `Store` protocol), with the races settled by the database instead of one process's lock:
- a vote is one `INSERT … ON CONFLICT DO UPDATE`: the last vote wins, one row per voter;
- an escalation moves one way inside a conditional `ON CONFLICT … DO UPDATE … WHERE
  escalation_transition_allowed(old, new)`: of two replicas racing, exactly one moves it;
- a received question is an `INSERT … ON CONFLICT DO NOTHING`: the first replica to take a
  message owns it. A Slack retry reaching another replica is dropped while the owner is alive
  (it beats every few seconds in `replicas`) and claimed when the owner died mid-answer;
- `unfinished()` claims what dead replicas left with `FOR UPDATE SKIP LOCKED`, so two replicas
  recovering at once never take the same question.

Why psycopg 3 rather than asyncpg: the bot's hot path is async, but the exports, the CLI and
`unfinished()` read synchronously (the protocol's readers run in worker threads); psycopg has
both an async and a sync connection over the same SQL, type adapters and row factories, so one
module serves both, and `psycopg[binary]` ships libpq, so nothing is compiled on install.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from bot.engine.types import Answer, Question
from bot.store import (
    ESCALATION_STATUSES,
    INTERACTION_JSON_FIELDS,
    RECEIVED_STATUSES,
    VOTE_RATINGS,
    EscalationConflict,
    decode_interaction,
    escalation_key,
    interaction_row,
    received_key,
    vote_key,
)

log = logging.getLogger(__name__)

POOL_MAX = 10
PROBE_SECONDS = 3.0  # /readyz must answer even when the database hangs
CONNECT_OPTIONS = "-c TimeZone=UTC"  # timestamps come back in UTC, as from the LanceDB logs

OWNER_DEAD = """NOT EXISTS (SELECT 1 FROM replicas r WHERE r.replica_id = {table}.owner
                  AND r.seen_at > now() - make_interval(secs => %(timeout)s))"""


def replica_name() -> str:
    """Unique per process and per start: a restarted replica must not inherit a dead one's claims."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, options=CONNECT_OPTIONS)


class Heartbeat:
    """This replica's row in `replicas`, refreshed every `interval` seconds by a daemon thread on a
    connection of its own: a busy event loop (embedding, a burst of events on a loaded machine)
    must never make a live replica look dead, while a killed process stops beating at once."""

    def __init__(self, url: str, replica_id: str, interval: float) -> None:
        self.url, self.replica_id, self.interval = url, replica_id, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        conn.execute(
            "INSERT INTO replicas (replica_id) VALUES (%(id)s) ON CONFLICT (replica_id) DO UPDATE SET seen_at = now()",
            {"id": self.replica_id},
        )

    def start(self) -> None:
        """Beat once (raising if the database is unreachable), then keep beating in the background."""
        conn = connect(self.url)
        try:
            self.beat(conn)
        except BaseException:
            conn.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(conn,), name="replica heartbeat", daemon=True)
        self._thread.start()

    def _run(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if conn.closed:
                        conn = connect(self.url)
                    self.beat(conn)
                except psycopg.Error:  # a blip: the next beat tries again, well within the timeout
                    log.warning("replica heartbeat failed", exc_info=True)
                    conn.close()
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop beating (as a killed replica would); the row stays until the replica deregisters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def since_clause(column: str, since: datetime | None) -> tuple[str, dict[str, Any]]:
    if since is None:
        return "", {}
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return f" WHERE {column} >= %(since)s", {"since": since}


class PostgresStore:
    """The bot's memory of what it answered and what people thought of it, shared by replicas."""

    def __init__(self, url: str, *, replica_timeout_seconds: float = 15.0, replica_id: str | None = None) -> None:
        self.url = url
        self.replica_id = replica_id or replica_name()
        self.replica_timeout = float(replica_timeout_seconds)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] | None = None
        self._pool_lock: asyncio.Lock | None = None
        self.heartbeat = Heartbeat(url, self.replica_id, self.replica_timeout / 4)
        self._beating: asyncio.Task[None] | None = None
        self._row_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @classmethod
    def from_settings(cls, settings: Any) -> PostgresStore:
        return cls(settings.database_url.get_secret_value(), replica_timeout_seconds=settings.replica_timeout_seconds)

    # ------------------------------------------------------------------ connections

    async def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]:
        if self._pool is None:
            self._pool_lock = self._pool_lock or asyncio.Lock()
            async with self._pool_lock:
                if self._pool is None:
                    pool = AsyncConnectionPool(
                        self.url,
                        connection_class=psycopg.AsyncConnection[dict[str, Any]],
                        min_size=1,
                        max_size=POOL_MAX,
                        open=False,
                        kwargs={"autocommit": True, "row_factory": dict_row, "options": CONNECT_OPTIONS},
                    )
                    try:
                        await pool.open(wait=True, timeout=PROBE_SECONDS * 5)
                    except BaseException:  # unreachable (or cancelled): no pool left retrying behind us
                        await asyncio.shield(pool.close())
                        raise
                    self._pool = pool
        return self._pool

    @asynccontextmanager
    async def in_call_order(self, key: str) -> AsyncIterator[None]:
        """Writes to one row from this process reach the database in the order they were made (as
        the embedded store's queue keeps them), so "the last vote wins" means the last click."""
        lock = self._row_locks.get(key)
        if lock is None:
            lock = self._row_locks[key] = asyncio.Lock()
        async with lock:
            yield

    async def fetch(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        pool = await self.pool()
        async with pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []

    def fetch_sync(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with connect(self.url) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    async def start_heartbeat(self) -> None:
        """Register this replica and keep it alive (idempotent; every caller waits for the first beat)."""
        if self._beating is None or (self._beating.done() and self._beating.exception() is not None):
            self._beating = asyncio.get_running_loop().create_task(asyncio.to_thread(self.heartbeat.start))
        await asyncio.shield(self._beating)

    async def aclose(self) -> None:
        """Stop beating and forget this replica (what it owned is claimable at once), close the pool."""
        if self._beating is not None:
            await asyncio.to_thread(self.heartbeat.stop)
            self._beating = None
            try:
                await self.fetch("DELETE FROM replicas WHERE replica_id = %(id)s", {"id": self.replica_id})
            except Exception:  # noqa: BLE001
                log.warning("could not deregister replica %s", self.replica_id, exc_info=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def problem(self) -> str | None:
        """None while the database answers; else why not (a replica without it must not take events)."""
        try:
            await asyncio.wait_for(self.fetch("SELECT 1 FROM received LIMIT 1"), PROBE_SECONDS)
        except Exception as exc:  # noqa: BLE001 (unreachable, timed out, not migrated: all mean not ready)
            return f"database: {type(exc).__name__}: {str(exc).strip()[:200] or 'no answer'}"
        return None

    # ------------------------------------------------------------------ writing

    async def log_answer(self, question: Question, answer: Answer, *, slack: dict | None = None) -> None:
        """Record one answered question; logging the same interaction again replaces the row."""
        row = interaction_row(question, answer, slack)
        for name in INTERACTION_JSON_FIELDS:
            row[name] = Jsonb(json.loads(row[name]))
        columns = list(row)
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in columns if name != "interaction_id")
        await self.fetch(
            f"INSERT INTO interactions ({', '.join(columns)}) VALUES ({', '.join(f'%({c})s' for c in columns)})"
            f" ON CONFLICT (interaction_id) DO UPDATE SET {updates}",
            row,
        )

    async def record_feedback(
        self, interaction_id: str, *, user: str, rating: str, comment: str | None = None
    ) -> dict[str, Any]:
        """A thumbs-up or -down; one row per (interaction, user), the last vote wins."""
        if rating not in VOTE_RATINGS:
            raise ValueError(f"rating must be one of {VOTE_RATINGS}, not {rating!r}")
        key = vote_key(interaction_id, user)
        async with self.in_call_order(key):
            rows = await self.fetch(
                """INSERT INTO feedback (key, interaction_id, kind, "user", rating, comment, created_at, updated_at)
               VALUES (%(key)s, %(iid)s, 'vote', %(user)s, %(rating)s, %(comment)s, clock_timestamp(), clock_timestamp())
               ON CONFLICT (key) DO UPDATE SET "user" = EXCLUDED."user", rating = EXCLUDED.rating,
                   comment = COALESCE(EXCLUDED.comment, feedback.comment), updated_at = EXCLUDED.updated_at
               RETURNING *""",
                {"key": key, "iid": interaction_id, "user": user, "rating": rating, "comment": comment},
            )
        return rows[0]

    async def record_escalation(
        self,
        interaction_id: str,
        *,
        status: str,
        user: str | None = None,
        human_answer: str | None = None,
        escalation_ts: str | None = None,
        escalation_channel: str | None = None,
        trigger: str | None = None,
        permalink: str | None = None,
    ) -> dict[str, Any]:
        """Open, claim or resolve; the one-way rule is checked by the database in the same statement."""
        if status not in ESCALATION_STATUSES:
            raise ValueError(f"status must be one of {ESCALATION_STATUSES}, not {status!r}")
        key = escalation_key(interaction_id)
        params = {
            "key": key,
            "iid": interaction_id,
            "status": status,
            "user": user,
            "claimed_by": user if status == "claimed" else None,
            "resolved_by": user if status == "resolved" else None,
            "human_answer": human_answer,
            "escalation_ts": escalation_ts,
            "escalation_channel": escalation_channel,
            "trigger": trigger,
            "permalink": permalink,
        }
        kept = ["user", "claimed_by", "resolved_by", "human_answer", "escalation_ts", "escalation_channel"]
        kept += ["trigger", "permalink"]
        updates = ", ".join(f'"{name}" = COALESCE(EXCLUDED."{name}", feedback."{name}")' for name in kept)
        async with self.in_call_order(key):
            rows = await self.fetch(
                f"""INSERT INTO feedback (key, interaction_id, kind, status, {", ".join(f'"{n}"' for n in kept)},
                                      created_at, updated_at)
                VALUES (%(key)s, %(iid)s, 'escalation', %(status)s, {", ".join(f"%({n})s" for n in kept)},
                        clock_timestamp(), clock_timestamp())
                ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, {updates}
                WHERE escalation_transition_allowed(feedback.status, EXCLUDED.status)
                RETURNING *""",
                params,
            )
        if rows:
            return rows[0]
        current = await self.get_escalation(interaction_id)
        raise EscalationConflict(current or {"interaction_id": interaction_id}, status)

    async def receive(
        self,
        channel: str,
        message_ts: str,
        *,
        thread_ts: str | None = None,
        user: str | None = None,
        team_id: str | None = None,
        surface: str | None = None,
        ask: dict[str, Any] | None = None,
    ) -> bool:
        """Take a question for this replica; False when another live replica (or this one) has it."""
        await self.start_heartbeat()
        key = received_key(channel, message_ts)
        taken = await self.fetch(
            """INSERT INTO received (key, channel, message_ts, thread_ts, "user", team_id, surface, ask, status,
                                     owner, created_at, updated_at)
               VALUES (%(key)s, %(channel)s, %(ts)s, %(thread)s, %(user)s, %(team)s, %(surface)s, %(ask)s,
                       'received', %(me)s, clock_timestamp(), clock_timestamp())
               ON CONFLICT (key) DO NOTHING RETURNING key""",
            {
                "key": key,
                "channel": channel,
                "ts": message_ts,
                "thread": thread_ts,
                "user": user,
                "team": team_id,
                "surface": surface,
                "ask": Jsonb(ask or {}),
                "me": self.replica_id,
            },
        )
        if taken:
            return True
        claimed = await self.fetch(
            f"""UPDATE received SET owner = %(me)s, updated_at = clock_timestamp()
                WHERE key = %(key)s AND status IN ('received', 'unfinished') AND owner <> %(me)s
                  AND {OWNER_DEAD.format(table="received")}
                RETURNING key""",
            {"key": key, "me": self.replica_id, "timeout": self.replica_timeout},
        )
        if claimed:
            log.warning("took over %s from a replica that stopped", key)
        return bool(claimed)

    async def mark_received(self, channel: str, message_ts: str, status: str) -> None:
        """Move a received question on ("done", "unfinished", "apologised")."""
        if status not in RECEIVED_STATUSES:
            raise ValueError(f"status must be one of {RECEIVED_STATUSES}, not {status!r}")
        await self.fetch(
            """INSERT INTO received (key, channel, message_ts, status, owner, created_at, updated_at)
               VALUES (%(key)s, %(channel)s, %(ts)s, %(status)s, %(me)s, clock_timestamp(), clock_timestamp())
               ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at""",
            {
                "key": received_key(channel, message_ts),
                "channel": channel,
                "ts": message_ts,
                "status": status,
                "me": self.replica_id,
            },
        )

    async def note_reply(self, channel: str, message_ts: str, reply_ts: str) -> None:
        """Remember the bot's reply in progress (a started stream) in the question's `ask`."""
        await self.fetch(
            """UPDATE received SET ask = coalesce(ask, '{}'::jsonb) || jsonb_build_object('reply_ts', %(reply)s::text)
               WHERE key = %(key)s RETURNING key""",
            {"key": received_key(channel, message_ts), "reply": reply_ts},
        )

    async def take_received(self, channel: str, message_ts: str, *, stale_before: datetime) -> bool:
        """Claim an unfinished question for answering it. Ownership here is the replica heartbeat,
        not `stale_before` (kept for the protocol): a row this replica claimed in `unfinished()`, or
        one whose owner stopped beating, is taken; one a live replica holds is not."""
        taken = await self.fetch(
            f"""UPDATE received SET status = 'received', owner = %(me)s, updated_at = clock_timestamp()
                WHERE key = %(key)s AND status IN ('received', 'unfinished')
                  AND (owner IS NULL OR owner = %(me)s OR {OWNER_DEAD.format(table="received")})
                RETURNING key""",
            {"key": received_key(channel, message_ts), "me": self.replica_id, "timeout": self.replica_timeout},
        )
        return bool(taken)

    async def prune_received(self, *, finished_before: datetime) -> int:
        """Forget questions answered or apologised for before `finished_before` (Slack retries for
        minutes, not days). Returns how many rows went."""
        gone = await self.fetch(
            """DELETE FROM received WHERE status IN ('done', 'apologised') AND updated_at < %(before)s
               RETURNING key""",
            {"before": finished_before},
        )
        return len(gone)

    def stale_escalations(self, *, stale_before: datetime) -> list[dict[str, Any]]:
        """Escalations still "pending" and untouched since `stale_before`: their poster died
        between the reservation and the "open" record."""
        return self.fetch_sync(
            """SELECT * FROM feedback WHERE kind = 'escalation' AND status = 'pending'
                 AND updated_at < %(before)s ORDER BY updated_at""",
            {"before": stale_before},
        )

    async def take_escalation(self, interaction_id: str, *, stale_before: datetime) -> dict[str, Any] | None:
        """Take over a stale pending escalation (renewing its lease, `updated_at`), atomically across
        replicas: one conditional UPDATE, so of two sweepers exactly one gets the row."""
        rows = await self.fetch(
            """UPDATE feedback SET updated_at = clock_timestamp()
               WHERE key = %(key)s AND status = 'pending' AND updated_at < %(before)s
               RETURNING *""",
            {"key": escalation_key(interaction_id), "before": stale_before},
        )
        return rows[0] if rows else None

    def unfinished(self) -> list[dict[str, Any]]:
        """Claim the questions no live replica is answering (left by a crash or a shutdown), oldest
        first; rows locked by another replica claiming at the same moment are skipped, not shared."""
        rows = self.fetch_sync(
            f"""UPDATE received SET owner = %(me)s, updated_at = clock_timestamp()
                WHERE key IN (SELECT key FROM received
                              WHERE status IN ('received', 'unfinished')
                                AND (owner IS NULL OR {OWNER_DEAD.format(table="received")})
                              FOR UPDATE SKIP LOCKED)
                RETURNING *""",
            {"me": self.replica_id, "timeout": self.replica_timeout},
        )
        for row in rows:
            row.pop("owner", None)
            row["ask"] = row.get("ask") or {}
        return sorted(rows, key=lambda row: row["created_at"])

    # ------------------------------------------------------------------ reading

    async def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        rows = await self.fetch("SELECT * FROM interactions WHERE interaction_id = %(id)s", {"id": interaction_id})
        return decode_interaction(rows[0]) if rows else None

    async def get_escalation(self, interaction_id: str) -> dict[str, Any] | None:
        rows = await self.fetch("SELECT * FROM feedback WHERE key = %(key)s", {"key": escalation_key(interaction_id)})
        return rows[0] if rows else None

    async def interactions_in(self, channel: str) -> list[dict[str, Any]]:
        """The interactions asked in one channel, oldest first (a message link names a channel)."""
        rows = await self.fetch(
            "SELECT * FROM interactions WHERE channel = %(channel)s ORDER BY created_at", {"channel": channel}
        )
        return [decode_interaction(row) for row in rows]

    def interactions(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every logged interaction (JSON fields decoded), oldest first."""
        where, params = since_clause("created_at", since)
        rows = self.fetch_sync(f"SELECT * FROM interactions{where} ORDER BY created_at", params)
        return [decode_interaction(row) for row in rows]

    def feedback(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every vote and escalation, oldest change first."""
        where, params = since_clause("updated_at", since)
        return self.fetch_sync(f"SELECT * FROM feedback{where} ORDER BY updated_at", params)
