"""The interaction log and the feedback log: two LanceDB tables in `data_dir/logs`.

They live in their own database folder beside the index (`data_dir/index`), so rebuilding or
rolling back the knowledge index never touches what users asked and how they rated it.

Writes are group-committed: concurrent calls queue their rows, one writer at a time (an asyncio
lock) merges everything queued so far in a single `merge_insert` in a worker thread, and every
caller returns only after the version holding its row is committed. Rows are keyed, so a
repeated write updates in place instead of adding a row.

Field names are a contract (the weekly eval export reads them); add fields, never rename.

`interactions()` rows, one per answered question (key `interaction_id`):
    interaction_id, created_at (UTC datetime), question, history [{role, text}], asker, channel,
    thread_ts, team_id, slack {message_ts, permalink, surface, ...: whatever the bot passed},
    retrieved [{chunk_id, doc_id, title, url, heading, text, score, vector_similarity, fts_score,
    vector_rank, fts_rank}], answer (Markdown), citations [{number, doc_id, chunk_id, url, title,
    cited_text}], confidence, decision ("answer" | "answer_with_caveat" | "escalate"), reasons [str],
    generator, model, fallback_reason, index_version, search_query, latency_ms {stage: ms, "total"},
    input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_usd,
    signals {name: value; also raw_score, calibration (the calibrated index version or None), and
    answer_threshold / caveat_threshold in force when it was decided}

`feedback()` rows, one per vote and one per escalation (key `key`):
    key, interaction_id, kind ("vote" | "escalation"), user (voter, or the last human who acted),
    rating ("up" | "down" | None), comment, status ("pending" | "failed" | "open" | "claimed" |
    "resolved" | None; one-way, see `record_escalation`),
    claimed_by, resolved_by, human_answer (the reference answer a human gave), trigger (why it was
    escalated: "low confidence", "asked for a human", "thumbs down"), escalation_channel and
    escalation_ts (where the escalation post is), permalink (the asker's message),
    created_at, updated_at (UTC datetimes)

`received()` rows, one per question the bot accepted, written before any work on it (key `key`,
"channel:message_ts"): key, channel, message_ts, thread_ts, user, team_id, surface, ask (JSON: what
is needed to answer it again, and `reply_ts`, the bot's streamed reply once one started), status ("received" | "done" | "unfinished" | "apologised"),
created_at, updated_at. A row that is not "done" or "apologised" after a restart is a question
the bot owes an answer; a row of any status means an event for that message was already taken,
so dedupe survives restarts.

Across processes (two bots on one data dir, or the CLI beside the bot), every read-modify-write
of a table holds an exclusive `fcntl` lock on `<table>.lock` beside it, so the compare-and-set
patches (`record_escalation`, `receive`, `take_*`) are atomic between processes as well as
between tasks: of two processes taking the same row, exactly one sees it untaken. Why a lock file
and not a conditional `merge_insert`: LanceDB's optimistic commits rebase a concurrent
`merge_insert` of the same key instead of refusing it, so both writers would "win"; a flock is
released by the kernel when its holder dies (even by `kill -9`), so a crash cannot wedge it.

`since` filters interactions on `created_at` and feedback on `updated_at` (a changed vote is new).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from bot.engine.types import Answer, Question, utc_now
from knowledge.text import sql_string

if TYPE_CHECKING:  # lancedb is imported on first use
    from lancedb.db import DBConnection
    from lancedb.table import Table

    from bot.settings import Settings

log = logging.getLogger(__name__)

INTERACTIONS = "interactions"
FEEDBACK = "feedback"
COMPACT_AFTER_FRAGMENTS = 64
LOCK_WAIT_SECONDS = 30.0  # longest wait for another writer (this process's or another's) of a log table
VOTE_RATINGS = ("up", "down")
ESCALATION_STATUSES = ("pending", "failed", "open", "claimed", "resolved")
# One-way: a status may only move up this ranking ("resolved" is final), except that a post that
# failed ("failed") may be tried again ("pending").
ESCALATION_RANK = {"pending": 0, "failed": 0, "open": 1, "claimed": 2, "resolved": 3}


def escalation_transition_allowed(old: str | None, new: str) -> bool:
    """Whether an escalation in status `old` may move to `new` (pure; the store enforces it)."""
    if old is None:
        return True
    if (old, new) in (("pending", "failed"), ("failed", "pending")):
        return True
    return ESCALATION_RANK[new] > ESCALATION_RANK.get(old, -1)


class EscalationConflict(Exception):
    """A refused escalation transition (e.g. claim after resolve); `current` is the stored row."""

    def __init__(self, current: dict[str, Any], wanted: str):
        super().__init__(
            f"escalation of {current.get('interaction_id')} is {current.get('status')}; cannot become {wanted}"
        )
        self.current = current
        self.wanted = wanted


TIMESTAMP = pa.timestamp("us", tz="UTC")
INTERACTION_SCHEMA = pa.schema(
    [
        pa.field("interaction_id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP),
        pa.field("question", pa.string()),
        pa.field("history", pa.string()),
        pa.field("asker", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("thread_ts", pa.string()),
        pa.field("team_id", pa.string()),
        pa.field("slack", pa.string()),
        pa.field("retrieved", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("citations", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("decision", pa.string()),
        pa.field("reasons", pa.string()),
        pa.field("generator", pa.string()),
        pa.field("model", pa.string()),
        pa.field("fallback_reason", pa.string()),
        pa.field("index_version", pa.int64()),
        pa.field("search_query", pa.string()),
        pa.field("latency_ms", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("cache_creation_input_tokens", pa.int64()),
        pa.field("cache_read_input_tokens", pa.int64()),
        pa.field("cost_usd", pa.float64()),
        pa.field("signals", pa.string()),
    ]
)
INTERACTION_JSON_FIELDS = ("history", "slack", "retrieved", "citations", "reasons", "latency_ms", "signals")

FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("interaction_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("user", pa.string()),
        pa.field("rating", pa.string()),
        pa.field("comment", pa.string()),
        pa.field("status", pa.string()),
        pa.field("claimed_by", pa.string()),
        pa.field("resolved_by", pa.string()),
        pa.field("human_answer", pa.string()),
        pa.field("trigger", pa.string()),
        pa.field("escalation_channel", pa.string()),
        pa.field("escalation_ts", pa.string()),
        pa.field("permalink", pa.string()),
        pa.field("created_at", TIMESTAMP),
        pa.field("updated_at", TIMESTAMP),
    ]
)

RECEIVED = "received"
RECEIVED_STATUSES = ("received", "done", "unfinished", "apologised")
RECEIVED_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("channel", pa.string()),
        pa.field("message_ts", pa.string()),
        pa.field("thread_ts", pa.string()),
        pa.field("user", pa.string()),
        pa.field("team_id", pa.string()),
        pa.field("surface", pa.string()),
        pa.field("ask", pa.string()),
        pa.field("status", pa.string()),
        pa.field("created_at", TIMESTAMP),
        pa.field("updated_at", TIMESTAMP),
    ]
)


class Store(Protocol):
    """What the bot needs of its logs, whichever engine keeps them: `InteractionStore` (LanceDB
    tables in the data directory, one process) or `bot.postgres.store.PostgresStore` (replicas).

    Rows are plain dicts with the field names above. The synchronous readers (`interactions`,
    `feedback`, `unfinished`) are for the CLI, exports and worker threads, never the event loop.
    """

    async def log_answer(self, question: Question, answer: Answer, *, slack: dict | None = None) -> None: ...

    async def record_feedback(
        self, interaction_id: str, *, user: str, rating: str, comment: str | None = None
    ) -> dict[str, Any]: ...

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
    ) -> dict[str, Any]: ...

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
    ) -> bool: ...

    async def mark_received(self, channel: str, message_ts: str, status: str) -> None: ...

    async def note_reply(self, channel: str, message_ts: str, reply_ts: str) -> None:
        """Remember the bot's reply message in progress (a started stream) in the question's `ask`,
        so whoever answers it after a crash rewrites that message instead of leaving it cut."""
        ...

    def unfinished(self) -> list[dict[str, Any]]: ...

    async def take_received(self, channel: str, message_ts: str, *, stale_before: datetime) -> bool:
        """Claim an unfinished question for answering it; of two processes exactly one wins."""
        ...

    async def prune_received(self, *, finished_before: datetime) -> int: ...

    def stale_escalations(self, *, stale_before: datetime) -> list[dict[str, Any]]: ...

    async def take_escalation(self, interaction_id: str, *, stale_before: datetime) -> dict[str, Any] | None:
        """Take over a stale pending escalation; of two sweepers exactly one gets the row."""
        ...

    async def get_interaction(self, interaction_id: str) -> dict[str, Any] | None: ...

    async def get_escalation(self, interaction_id: str) -> dict[str, Any] | None: ...

    async def interactions_in(self, channel: str) -> list[dict[str, Any]]: ...

    def interactions(self, since: datetime | None = None) -> list[dict[str, Any]]: ...

    def feedback(self, since: datetime | None = None) -> list[dict[str, Any]]: ...

    async def aclose(self) -> None:
        """Release connections (a no-op for the embedded logs)."""
        ...

    async def problem(self) -> str | None:
        """None when the store takes reads and writes; else why not (for `/readyz`)."""
        ...


def open_store(settings: Settings) -> Store:
    """PostgreSQL when `SUPPORTBOT_DATABASE_URL` is set (replicas share it), else the embedded
    LanceDB logs in `data_dir/logs` (one process, no service to run)."""
    if settings.database_url is not None and settings.database_url.get_secret_value():
        from bot.postgres.store import PostgresStore

        return PostgresStore.from_settings(settings)
    return InteractionStore.from_settings(settings)


def received_key(channel: str, message_ts: str) -> str:
    return f"{channel}:{message_ts}"


# A queued change: the row's key and a function from the stored row (or None) to the new row.
Patch = Callable[[dict[str, Any] | None], dict[str, Any] | None]


def vote_key(interaction_id: str, user: str) -> str:
    return f"{interaction_id}:{user}:vote"


def escalation_key(interaction_id: str) -> str:
    return f"{interaction_id}:escalation"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def interaction_row(question: Question, answer: Answer, slack: dict | None) -> dict[str, Any]:
    """Flatten a Question and its Answer into one log row (nested parts as JSON strings)."""
    usage = answer.usage
    return {
        "interaction_id": answer.interaction_id or question.interaction_id,
        "created_at": answer.created_at,
        "question": question.text,
        "history": dumps([turn.model_dump() for turn in question.history]),
        "asker": question.asker,
        "channel": question.channel,
        "thread_ts": question.thread_ts,
        "team_id": question.team_id,
        "slack": dumps(slack or {}),
        "retrieved": dumps([chunk.model_dump() for chunk in answer.retrieved]),
        "answer": answer.text,
        "citations": dumps([citation.model_dump() for citation in answer.citations]),
        "confidence": float(answer.confidence),
        "decision": answer.decision.value,
        "reasons": dumps(answer.reasons),
        "generator": answer.generator,
        "model": answer.model,
        "fallback_reason": answer.fallback_reason,
        "index_version": int(answer.index_version),
        "search_query": answer.search_query,
        "latency_ms": dumps(answer.latency_ms),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cost_usd": float(usage.cost_usd),
        "signals": dumps(answer.signals),
    }


def decode_interaction(row: dict[str, Any]) -> dict[str, Any]:
    for name in INTERACTION_JSON_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = json.loads(row[name])
    return row


@dataclass
class _Pending:
    key: str
    patch: Patch
    done: asyncio.Future = field(repr=False)


class _KeyedTable:
    """One LanceDB table written by group commit: queued patches, one merge per batch."""

    def __init__(self, store: InteractionStore, name: str, schema: pa.Schema, key: str) -> None:
        self.store = store
        self.name = name
        self.schema = schema
        self.key = key
        self._table: Table | None = None
        self._queue: list[_Pending] = []
        self._lock = asyncio.Lock()
        self._commits = 0

    @property
    def table(self) -> Table:
        if self._table is None:
            self._table = self.store.db.create_table(self.name, schema=self.schema, exist_ok=True)
        return self._table

    async def write(self, key: str, patch: Patch) -> dict[str, Any] | None:
        """Queue a change and return the row as committed; concurrent writes share one commit.
        A patch returning None for a missing row writes nothing (and None is returned)."""
        pending = _Pending(key, patch, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        async with self._lock:
            if not pending.done.done():
                batch, self._queue = self._queue, []
                try:
                    rows = await asyncio.to_thread(self._commit, batch)
                except Exception as exc:
                    for item in batch:
                        if not item.done.done():
                            item.done.set_exception(exc)
                else:
                    for item in batch:
                        if not item.done.done():
                            item.done.set_result(rows.get(item.key))
        return await pending.done

    def _commit(self, batch: list[_Pending]) -> dict[str, dict[str, Any]]:
        """Apply the patches in order onto the stored rows, then merge them in one version, holding
        the table's lock file so no other process reads or writes these rows in between."""
        with self.process_lock():
            return self._commit_locked(batch)

    @contextmanager
    def process_lock(self) -> Iterator[None]:
        """The cross-process lock of this table (taken in a worker thread). The lock file is held
        open read-only, so a held lock never keeps the filesystem busy (an operator's remount
        read-only must still work), and the wait is bounded: a holder stuck on a sick disk fails
        the other writers after `LOCK_WAIT_SECONDS` instead of wedging them for good."""
        path = self.store.logs_dir / f"{self.name}.lock"
        if not path.exists():
            self.store.logs_dir.mkdir(parents=True, exist_ok=True)
            path.touch()
        with open(path, "rb") as handle:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the {self.name} log stayed locked for {LOCK_WAIT_SECONDS:g} s") from None
                    time.sleep(0.005)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _commit_locked(self, batch: list[_Pending]) -> dict[str, dict[str, Any]]:
        keys = sorted({item.key for item in batch})
        where = f"{self.key} IN ({', '.join(sql_string(key) for key in keys)})"
        rows = {row[self.key]: row for row in self.select(where)}
        for item in batch:
            patched = item.patch(rows.get(item.key))
            if patched is not None:
                rows[item.key] = patched
        changed = [rows[key] for key in keys if key in rows]
        data = pa.Table.from_pylist(changed, schema=self.schema)
        if changed:
            self.table.merge_insert(self.key).when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._commits += 1
        if self._commits % 16 == 0:
            self._maybe_compact()
        return rows

    def _maybe_compact(self) -> None:
        """Each commit adds a small fragment; fold them together now and then."""
        try:
            if len(self.table.to_lance().get_fragments()) > COMPACT_AFTER_FRAGMENTS:
                self.table.optimize(cleanup_older_than=timedelta(days=7))
        except Exception:  # compaction is housekeeping; never fail a write over it
            log.warning("compacting the %s log failed", self.name, exc_info=True)

    def delete(self, where: str) -> int:
        """Delete the rows matching `where` (under the process lock); how many went. Nothing is
        written when nothing matches (a periodic prune must not add a version every time)."""
        if not self.exists():
            return 0
        with self.process_lock():
            self.table.checkout_latest()
            doomed = self.table.count_rows(where)
            if doomed:
                self.table.delete(where)
            return doomed

    def exists(self) -> bool:
        """Whether the table is on disk yet (reading must not create it: a sweep only reads)."""
        return self._table is not None or self.name in self.store.db.table_names()

    def select(self, where: str | None = None) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        self.table.checkout_latest()  # see commits made by other processes (the CLI, an export)
        return self.table.to_lance().to_table(filter=where).to_pylist()


class InteractionStore:
    """The bot's memory of what it answered and what people thought of it."""

    def __init__(self, logs_dir: Path) -> None:
        self.logs_dir = Path(logs_dir)
        self._db: DBConnection | None = None
        self._interactions = _KeyedTable(self, INTERACTIONS, INTERACTION_SCHEMA, "interaction_id")
        self._feedback = _KeyedTable(self, FEEDBACK, FEEDBACK_SCHEMA, "key")
        self._received = _KeyedTable(self, RECEIVED, RECEIVED_SCHEMA, "key")

    @classmethod
    def from_settings(cls, settings: Settings) -> InteractionStore:
        return cls(settings.data_dir / "logs")

    @property
    def db(self) -> DBConnection:
        if self._db is None:
            import lancedb

            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(str(self.logs_dir))
        return self._db

    async def aclose(self) -> None:
        return None  # every commit is already on disk; nothing held open

    async def problem(self) -> str | None:
        return None  # the data directory's own check (`/readyz` data_dir) covers these files

    # ------------------------------------------------------------------ writing

    async def log_answer(self, question: Question, answer: Answer, *, slack: dict | None = None) -> None:
        """Record one answered question; logging the same interaction again replaces the row."""
        row = interaction_row(question, answer, slack)
        await self._interactions.write(row["interaction_id"], lambda _stored: row)

    async def record_feedback(
        self, interaction_id: str, *, user: str, rating: str, comment: str | None = None
    ) -> dict[str, Any]:
        """A thumbs-up or -down; one row per (interaction, user), the last vote wins."""
        if rating not in VOTE_RATINGS:
            raise ValueError(f"rating must be one of {VOTE_RATINGS}, not {rating!r}")
        key = vote_key(interaction_id, user)

        def patch(stored: dict[str, Any] | None) -> dict[str, Any]:
            now = utc_now()
            row = dict(stored or {"key": key, "interaction_id": interaction_id, "kind": "vote", "created_at": now})
            row.update(user=user, rating=rating, updated_at=now)
            if comment is not None:
                row["comment"] = comment
            return row

        row = await self._feedback.write(key, patch)
        assert row is not None  # this patch always returns a row
        return row

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
        """Open, claim or resolve the escalation of an interaction; one row, updated in place.

        Fields not given keep their stored value, so "resolve" keeps who claimed it and where the
        escalation post is; `human_answer` becomes the interaction's reference answer.
        Transitions are one-way (pending -> open -> claimed -> resolved, resolved is final), checked
        against the stored row inside the serialised write, so of two racing writers exactly one
        wins; the loser gets `EscalationConflict`. Writing "pending" first is how a poster
        reserves the one post an interaction may have.
        """
        if status not in ESCALATION_STATUSES:
            raise ValueError(f"status must be one of {ESCALATION_STATUSES}, not {status!r}")
        key = escalation_key(interaction_id)
        refused: list[dict[str, Any]] = []

        def patch(stored: dict[str, Any] | None) -> dict[str, Any]:
            if stored is not None and not escalation_transition_allowed(stored.get("status"), status):
                refused.append(stored)
                return stored
            now = utc_now()
            row = dict(
                stored or {"key": key, "interaction_id": interaction_id, "kind": "escalation", "created_at": now}
            )
            row.update(status=status, updated_at=now)
            if user is not None:
                row["user"] = user
                if status == "claimed":
                    row["claimed_by"] = user
                elif status == "resolved":
                    row["resolved_by"] = user
            given = {
                "human_answer": human_answer,
                "escalation_ts": escalation_ts,
                "escalation_channel": escalation_channel,
                "trigger": trigger,
                "permalink": permalink,
            }
            row.update({name: value for name, value in given.items() if value is not None})
            return row

        row = await self._feedback.write(key, patch)
        if refused:
            raise EscalationConflict(refused[0], status)
        assert row is not None  # this patch always returns a row
        return row

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
        """Record a question as received, before any work on it; False if this message was already
        received (by this process or one before a restart): then it must not be answered again."""
        key = received_key(channel, message_ts)
        fresh: list[bool] = []

        def patch(stored: dict[str, Any] | None) -> dict[str, Any]:
            if stored is not None:
                return stored
            fresh.append(True)
            now = utc_now()
            return {
                "key": key,
                "channel": channel,
                "message_ts": message_ts,
                "thread_ts": thread_ts,
                "user": user,
                "team_id": team_id,
                "surface": surface,
                "ask": dumps(ask or {}),
                "status": "received",
                "created_at": now,
                "updated_at": now,
            }

        await self._received.write(key, patch)
        return bool(fresh)

    async def mark_received(self, channel: str, message_ts: str, status: str) -> None:
        """Move a received question on ("done", "unfinished", "apologised")."""
        if status not in RECEIVED_STATUSES:
            raise ValueError(f"status must be one of {RECEIVED_STATUSES}, not {status!r}")
        key = received_key(channel, message_ts)

        def patch(stored: dict[str, Any] | None) -> dict[str, Any]:
            row = dict(stored or {"key": key, "channel": channel, "message_ts": message_ts, "created_at": utc_now()})
            row.update(status=status, updated_at=utc_now())
            return row

        await self._received.write(key, patch)

    async def note_reply(self, channel: str, message_ts: str, reply_ts: str) -> None:
        """Remember the bot's reply in progress (a started stream) in the question's `ask`."""
        key = received_key(channel, message_ts)

        def patch(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            if stored is None:
                return None
            ask = json.loads(stored["ask"]) if stored.get("ask") else {}
            return {**stored, "ask": dumps({**ask, "reply_ts": reply_ts})}

        await self._received.write(key, patch)

    async def take_received(self, channel: str, message_ts: str, *, stale_before: datetime) -> bool:
        """Claim an unfinished question for answering it, atomically across processes: a row left
        "unfinished" by a clean shutdown is taken at once; one still "received" only when untouched
        since `stale_before` (the process answering it died). Taking renews `updated_at`, so a
        second taker (another process's recovery) finds it fresh and backs off."""
        key = received_key(channel, message_ts)
        taken: list[bool] = []

        def patch(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            if stored is None or stored.get("status") not in ("received", "unfinished"):
                return stored
            if stored.get("status") == "received" and not _before(stored.get("updated_at"), stale_before):
                return stored
            taken.append(True)
            return {**stored, "status": "received", "updated_at": utc_now()}

        await self._received.write(key, patch)
        return bool(taken)

    async def prune_received(self, *, finished_before: datetime) -> int:
        """Forget questions answered or apologised for before `finished_before`. Slack retries an
        event for minutes, not days, so older rows only make the table (and every dedupe lookup)
        grow. Returns how many rows went."""
        where = f"(status = 'done' OR status = 'apologised') AND updated_at < {timestamp_sql(finished_before)}"
        return await asyncio.to_thread(self._received.delete, where)

    def unfinished(self) -> list[dict[str, Any]]:
        """Questions received but neither answered nor apologised for, oldest first (`ask` decoded)."""
        rows = self._received.select("status = 'received' OR status = 'unfinished'")
        for row in rows:
            row["ask"] = json.loads(row["ask"]) if row.get("ask") else {}
        return sorted(rows, key=lambda row: row["created_at"])

    def stale_escalations(self, *, stale_before: datetime) -> list[dict[str, Any]]:
        """Escalations still "pending" (reserved, post not confirmed) and untouched since
        `stale_before`: their poster died between the reservation and the "open" record."""
        where = f"kind = 'escalation' AND status = 'pending' AND updated_at < {timestamp_sql(stale_before)}"
        return sorted(self._feedback.select(where), key=lambda row: row["updated_at"])

    async def take_escalation(self, interaction_id: str, *, stale_before: datetime) -> dict[str, Any] | None:
        """Take over a stale pending escalation, atomically across processes (renewing its lease,
        `updated_at`); None if it moved on, or another taker renewed it first."""
        taken: list[bool] = []

        def patch(stored: dict[str, Any] | None) -> dict[str, Any] | None:
            if (
                stored is None
                or stored.get("status") != "pending"
                or not _before(stored.get("updated_at"), stale_before)
            ):
                return stored
            taken.append(True)
            return {**stored, "updated_at": utc_now()}

        row = await self._feedback.write(escalation_key(interaction_id), patch)
        return row if taken else None

    # ------------------------------------------------------------------ reading

    async def get_interaction(self, interaction_id: str) -> dict[str, Any] | None:
        rows = await asyncio.to_thread(self._interactions.select, f"interaction_id = {sql_string(interaction_id)}")
        return decode_interaction(rows[0]) if rows else None

    async def get_escalation(self, interaction_id: str) -> dict[str, Any] | None:
        rows = await asyncio.to_thread(self._feedback.select, f"key = {sql_string(escalation_key(interaction_id))}")
        return rows[0] if rows else None

    async def interactions_in(self, channel: str) -> list[dict[str, Any]]:
        """The interactions asked in one channel, oldest first (a message link names a channel)."""
        rows = await asyncio.to_thread(self._interactions.select, f"channel = {sql_string(channel)}")
        return sorted((decode_interaction(row) for row in rows), key=lambda row: row["created_at"])

    def interactions(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every logged interaction (JSON fields decoded), oldest first."""
        rows = self._interactions.select(self._since("created_at", since))
        return sorted((decode_interaction(row) for row in rows), key=lambda row: row["created_at"])

    def feedback(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every vote and escalation, oldest change first."""
        rows = self._feedback.select(self._since("updated_at", since))
        return sorted(rows, key=lambda row: row["updated_at"])

    @staticmethod
    def _since(column: str, since: datetime | None) -> str | None:
        return None if since is None else f"{column} >= {timestamp_sql(since)}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def timestamp_sql(moment: datetime) -> str:
    """A UTC timestamp literal for a LanceDB filter."""
    return f"TIMESTAMP '{_utc(moment).strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def _before(value: Any, moment: datetime) -> bool:
    """Whether a stored timestamp is older than `moment` (a missing one counts as old)."""
    return not isinstance(value, datetime) or _utc(value) < _utc(moment)
