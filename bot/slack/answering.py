"""From a Slack message to an answer in its thread: question, history, engine, reply, log.

Every surface (mention, DM, assistant thread, thread follow-up, auto-answer channel) ends here,
so rate limiting, streaming, logging and escalation behave the same wherever a question is asked.

Never silent: every reply goes through `delivery.deliver_in_place` (richest blocks, then degraded, then
trimmed, then plain text, then a DM), a stream that fails falls back to a normal post or an
update of the streamed message, and every failure is alerted with Slack's error code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.normalise import normalise_slack
from bot.engine.types import Answer, Decision, Question, Turn, utc_now
from bot.observability import Metrics, record_answer
from bot.slack import blocks
from bot.slack.conversation import (
    feedback_interactions,
    is_answer,
    is_bot_message,
    is_cut_stream,
    replies_to_asker,
    thread_history,
)
from bot.slack.delivery import (
    CONTENT_ERRORS,
    Alerts,
    Delivery,
    deliver_in_place,
    error_code,
    report,
)
from bot.slack.escalation import TRIGGER_DECISION, Escalations
from bot.slack.ratelimit import AnswerLimiter
from bot.slack.ttlcache import TTLSet

if TYPE_CHECKING:
    from bot.engine.pipeline import Pipeline
    from bot.settings import Settings
    from bot.store import Store

log = logging.getLogger(__name__)

SORRY_TEXT = (
    "Sorry, something went wrong while I was looking that up, and the team has been alerted. "
    "Please try again in a minute."
)
WORKING_STATUS = "is searching the knowledge base…"
# chat.appendStream is rate-limited per workspace: ~600 characters per call keeps a 4,000-character
# answer to about 7 calls instead of ~33 at 120. The first words go out sooner (one extra call), so
# the asker sees text about as soon as Claude writes it, not after 600 characters.
STREAM_BUFFER_CHARS = 600
FIRST_FLUSH_CHARS = 40
# Status reactions on the asker's message (needs reactions:write; skipped for good if not granted).
REACTIONS = {"working": "eyes", "answered": "white_check_mark", "escalated": "raising_hand", "failed": "warning"}
RESTARTED_TEXT = (
    "Sorry, I was restarted before I could answer this, and it's been a while. "
    "Please ask again if you still need an answer."
)
INTERRUPTED_TEXT = "_This answer was interrupted (I was restarted). Answering again…_"
RECOVER_MAX_AGE_SECONDS = 3600  # older unfinished questions get an apology instead of a late answer
REACTIONS_PAUSE_SECONDS = 60.0
HISTORY_PAGE = 200
HISTORY_MAX_PAGES = 10


@dataclass
class Ask:
    """One Slack message the bot should answer, whatever surface it arrived on."""

    channel: str
    message_ts: str
    thread_ts: str  # where the reply goes; equals message_ts for a message that starts a thread
    user: str
    text: str  # Slack-formatted, as received
    surface: str  # "mention" | "dm" | "assistant" | "followup" | "auto"
    team_id: str | None = None
    bot_user_id: str | None = None
    bot_id: str | None = None
    files: list[str] = field(default_factory=list)
    thread_messages: list[dict[str, Any]] | None = None  # already fetched (conversations.replies)
    # The bot's message in this thread that the outcome rewrites (one visible outcome): a stream
    # closed early, or one a dead process left open (kept in the received record, see `note_reply`).
    reply_ts: str | None = None

    @property
    def in_thread(self) -> bool:
        return self.thread_ts != self.message_ts

    def to_record(self) -> dict[str, Any]:
        """What the received-questions log keeps to answer it again after a restart."""
        return {k: v for k, v in asdict(self).items() if k != "thread_messages"}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Ask:
        names = set(cls.__dataclass_fields__) - {"thread_messages"}
        return cls(**{k: v for k, v in record.items() if k in names})


SetStatus = Callable[[str], Awaitable[Any]]


class Responder:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        store: Store,
        escalations: Escalations,
        limiter: AnswerLimiter,
        metrics: Metrics,
        alerts: Alerts | None = None,
    ) -> None:
        self.settings = settings
        self.alerts = alerts or escalations.alerts
        self.metrics = metrics
        self.pipeline = pipeline
        self.store = store
        self.escalations = escalations
        self.limiter = limiter
        self.answered_messages = TTLSet(ttl_seconds=6 * 3600)  # one message, one answer
        self.answered_threads = TTLSet(ttl_seconds=7 * 24 * 3600)  # (channel, thread, asker) for follow-ups
        self.reactions_allowed = True
        self.reactions_paused_until = 0.0
        self.plain_feedback_only = False
        self.in_flight: dict[tuple[str, str], Ask] = {}  # received and not yet finished

    async def react(self, client: AsyncWebClient, ask: Ask, state: str, *, remove: str | None = None) -> None:
        """A status reaction on the asker's message; cosmetic, so failures are only logged, and a
        token without reactions:write stops trying after the first `missing_scope`."""
        if not self.reactions_allowed or time.monotonic() < self.reactions_paused_until:
            return
        # no retry handlers: a rate-limited reaction is skipped, never waited for (answers come first)
        client = AsyncWebClient(
            token=client.token,
            base_url=client.base_url,
            session=client.session,
            timeout=client.timeout,
            retry_handlers=[],
        )
        calls = [("remove", REACTIONS[remove])] if remove else []
        calls.append(("add", REACTIONS[state]))
        for verb, name in calls:
            try:
                if verb == "add":
                    await client.reactions_add(channel=ask.channel, timestamp=ask.message_ts, name=name)
                else:
                    await client.reactions_remove(channel=ask.channel, timestamp=ask.message_ts, name=name)
            except SlackApiError as exc:
                code = exc.response.get("error")
                if getattr(exc.response, "status_code", 200) == 429:
                    self.reactions_paused_until = time.monotonic() + REACTIONS_PAUSE_SECONDS
                    return
                if code in ("missing_scope", "not_allowed_token_type", "invalid_auth"):
                    self.reactions_allowed = False
                    log.warning("status reactions are off: %s", code)
                    return
                log.info("status reaction %s failed: %s", name, code)
            except Exception as exc:  # noqa: BLE001
                log.info("status reaction %s failed: %s", name, exc)

    async def respond(
        self, client: AsyncWebClient, ask: Ask, *, set_status: SetStatus | None = None, recovering: bool = False
    ) -> Answer | None:
        """Answer one message, once: the in-memory guard is taken before any await, then the
        question is recorded as received in the store (which also refuses a message already
        received before a restart), and marked done once its thread shows an outcome."""
        key = (ask.channel, ask.message_ts)
        if not self.answered_messages.first_time(key):
            return None
        if not recovering and not await self._receive(ask):
            # Taken by another replica (or before a restart): the store decides again for a later
            # retry, which may find that replica dead and take the question over.
            self.answered_messages.discard(key)
            return None
        self.in_flight[key] = ask
        try:
            answer = await self._respond(client, ask, set_status)
        except Exception as exc:  # anything before or around the pipeline: never silence, always an alert
            log.exception("answering %s/%s failed", ask.channel, ask.message_ts)
            await self.alerts.alert(client, f"answering {ask.channel}/{ask.message_ts} failed", [error_code(exc)])
            await self.post_notice(client, ask, SORRY_TEXT, update_ts=ask.reply_ts)
            answer = None
        finally:
            self.in_flight.pop(key, None)
        await self._mark(ask, "done")
        return answer

    async def _receive(self, ask: Ask) -> bool:
        try:
            return await self.store.receive(
                ask.channel,
                ask.message_ts,
                thread_ts=ask.thread_ts,
                user=ask.user,
                team_id=ask.team_id,
                surface=ask.surface,
                ask=ask.to_record(),
            )
        except Exception:  # noqa: BLE001 (a broken log must not cost the asker the answer)
            log.exception("could not record received question %s/%s", ask.channel, ask.message_ts)
            return True

    async def _mark(self, ask: Ask, status: str) -> None:
        try:
            await self.store.mark_received(ask.channel, ask.message_ts, status)
        except Exception:  # noqa: BLE001
            log.exception("could not mark %s/%s %s", ask.channel, ask.message_ts, status)

    async def record_unfinished(self) -> int:
        """On shutdown: every question still in flight is recorded as unfinished (for `recover`)."""
        asks = list(self.in_flight.values())
        for ask in asks:
            await self._mark(ask, "unfinished")
        return len(asks)

    async def recover(self, client: AsyncWebClient, spawn: Callable[[Any, str], Any]) -> int:
        """Answer the questions a process received but never finished, or, when they are too old
        for a late answer to help, apologise for them; then finish escalations left pending.

        Called on start and by every `sweep`. Each question is taken atomically in the store
        (`take_received`): one left "unfinished" by a clean shutdown at once, one still "received"
        only once its lease (`answer_lease_seconds`) ran out, i.e. the process answering it died.
        So of two processes on one data dir, exactly one answers it, and a live process's work
        in progress is never answered twice. Returns how many questions were taken."""
        try:
            rows = await asyncio.to_thread(self.store.unfinished)
        except Exception:  # noqa: BLE001
            log.exception("could not read unfinished questions")
            rows = []
        stale_before = utc_now() - timedelta(seconds=self.settings.answer_lease_seconds)
        taken = 0
        asks: list[tuple[dict[str, Any], Ask]] = []
        for row in rows:
            try:
                asks.append((row, Ask.from_record(row["ask"])))
            except (TypeError, KeyError):
                log.warning("unfinished question %s cannot be rebuilt", row["key"])
        others = [ask for _, ask in asks]  # what a reply left in a thread could belong to
        for row, ask in asks:
            if (ask.channel, ask.message_ts) in self.in_flight:  # this process is answering it
                continue
            try:
                if not await self.store.take_received(ask.channel, ask.message_ts, stale_before=stale_before):
                    continue  # another live process owns it, or took it first
            except Exception:  # noqa: BLE001
                log.exception("could not take unfinished question %s", row["key"])
                continue
            taken += 1
            age = time.time() - row["created_at"].timestamp()
            late = age > RECOVER_MAX_AGE_SECONDS
            work = self._recover(client, ask, late=late, others=others)
            spawn(work, f"{'apologise' if late else 'recover'} {row['key']}")
        await self.escalations.sweep(client)
        return taken

    async def sweep(self, client: AsyncWebClient, spawn: Callable[[Any, str], Any]) -> int:
        """One round of housekeeping (on start, then every `sweep_interval_seconds` in `serve`):
        recover what dead processes left, and prune received-question records that no Slack retry
        can still refer to."""
        taken = await self.recover(client, spawn)
        finished_before = utc_now() - timedelta(seconds=self.settings.received_retention_seconds)
        try:
            pruned = await self.store.prune_received(finished_before=finished_before)
        except Exception:  # noqa: BLE001
            log.exception("could not prune received questions")
        else:
            if pruned:
                log.info("pruned %d finished question record(s)", pruned)
        return taken

    async def _recover(self, client: AsyncWebClient, ask: Ask, *, late: bool, others: Sequence[Ask] = ()) -> None:
        """Answer (or, `late`, apologise for) a question a process left unfinished. A reply that
        process had started streaming is closed and shows it was interrupted at once (not its cut
        text), and the outcome is then written over it: one message, ending visibly. The thread is
        read first (`reply_left`): an answer it finished but did not record done is kept (never a
        second answer, never an apology over it), a stream cut before it was recorded is taken."""
        answered, ask.reply_ts = await self.reply_left(client, ask, others)
        if answered:
            log.info("%s/%s was answered before the restart: recorded done", ask.channel, ask.message_ts)
            await self._mark(ask, "done")
            return
        if ask.reply_ts:
            await best_effort(client.chat_stopStream(channel=ask.channel, ts=ask.reply_ts))  # may have ended
            if not late:
                await self.post_notice(client, ask, INTERRUPTED_TEXT, what="interrupted reply", update_ts=ask.reply_ts)
        if late:
            await self._apologise(client, ask)
        else:
            await self.respond(client, ask, recovering=True)

    async def reply_left(self, client: AsyncWebClient, ask: Ask, others: Sequence[Ask]) -> tuple[bool, str | None]:
        """What a dead process left in the thread for `ask`, as (answered, the reply to write over):
        answered when the thread shows its finished answer (its feedback names an interaction logged
        for this very message); else its recorded reply, or a stream it had started that no record
        points to. When the thread cannot be read: not answered, the recorded reply if any. Another
        question's reply is never taken for it: an answer logged for another message, any finished
        outcome (blocks), a reply recorded for another unfinished question; and when another
        unfinished question of the same asker in the thread has no recorded reply either, a cut
        stream could be either's, so none is taken (the question is answered again instead)."""
        try:
            messages = await read_thread(client, ask.channel, ask.thread_ts)
        except Exception as exc:  # noqa: BLE001 (without it the question is still answered)
            log.warning("could not read %s/%s for a reply left: %s", ask.channel, ask.thread_ts, error_code(exc))
            return False, ask.reply_ts
        ask.thread_messages = messages  # the answer's history reads the same thread: not fetched twice
        if ask.reply_ts:  # the dead process recorded its reply: only that message can be this answer
            recorded = next((m for m in messages if m.get("ts") == ask.reply_ts), None)
            return recorded is not None and is_answer(recorded) and await self._answers(ask, recorded), ask.reply_ts
        for message in messages:  # its answer, streamed or posted whole, names its interaction
            later = float(message.get("ts", 0)) > float(ask.message_ts)
            mine = later and is_bot_message(message, ask.bot_user_id, ask.bot_id) and is_answer(message)
            if mine and await self._answers(ask, message):
                return True, None
        to_asker = replies_to_asker(
            messages, after_ts=ask.message_ts, asker=ask.user, bot_user_id=ask.bot_user_id, bot_id=ask.bot_id
        )
        claimed = {other.reply_ts for other in others if other.reply_ts}
        unrecorded = any(
            other.user == ask.user
            and other.thread_ts == ask.thread_ts
            and other.message_ts != ask.message_ts
            and not other.reply_ts
            for other in others
        )
        for message in to_asker:
            if is_cut_stream(message) and message.get("ts") not in claimed:
                return False, None if unrecorded else str(message["ts"])
        return False, None

    async def _answers(self, ask: Ask, message: dict[str, Any]) -> bool:
        """Whether an answer's feedback names an interaction logged for `ask`'s message."""
        for interaction_id in feedback_interactions(message):
            try:
                row = await self.store.get_interaction(interaction_id)
            except Exception:  # noqa: BLE001 (unknown: answer again rather than risk silence)
                log.exception("could not read interaction %s", interaction_id)
                return False
            row = row or {}
            if (row.get("slack") or {}).get("message_ts") == ask.message_ts and row.get("channel") in (
                None,
                ask.channel,
            ):
                return True
        return False

    async def _apologise(self, client: AsyncWebClient, ask: Ask) -> None:
        notice = await self.post_notice(
            client, ask, RESTARTED_TEXT, what="apology after restart", update_ts=ask.reply_ts
        )
        if notice.ok:
            await self._mark(ask, "apologised")

    async def _note_reply(self, ask: Ask, reply_ts: str) -> None:
        """Record a started stream's message before any more of it is sent (see `_recover`)."""
        try:
            await self.store.note_reply(ask.channel, ask.message_ts, reply_ts)
        except Exception:  # noqa: BLE001 (a broken log must not cost the asker the answer)
            log.exception("could not record the reply of %s/%s", ask.channel, ask.message_ts)

    async def _respond(self, client: AsyncWebClient, ask: Ask, set_status: SetStatus | None) -> Answer | None:
        notes = [note for note in [blocks.attachments_note(ask.files)] if note]
        question = Question(
            text=normalise_slack(ask.text),
            history=await self.history(client, ask),
            asker=ask.user,
            channel=ask.channel,
            thread_ts=ask.thread_ts,
            team_id=ask.team_id,
        )

        async def tell_queued(seconds: float) -> None:
            await self.post_notice(client, ask, blocks.QUEUED_TEXT.format(seconds=max(5, round(seconds))))

        async with self.limiter.slot(ask.user, on_queued=tell_queued):
            if set_status is not None:
                await best_effort(set_status(WORKING_STATUS))
            await self.react(client, ask, "working")
            answer = await self._answer_and_reply(client, ask, question, notes)
        if answer is None:
            await self.react(client, ask, "failed", remove="working")
            return None
        if answer.decision is Decision.ESCALATE:
            posted = await self.escalations.escalate(
                client,
                question=question,
                answer=answer,
                question_ts=ask.message_ts,
                trigger=TRIGGER_DECISION,
                asker_notice=None if blocks.has_draft(answer) else answer.text,
                notice_ts=ask.reply_ts,
            )
            await self.react(client, ask, "escalated" if posted else "failed", remove="working")
        else:
            if answer.decision is not Decision.CLARIFY:
                self.answered_threads.add((ask.channel, ask.thread_ts, ask.user))
            await self.react(client, ask, "answered", remove="working")
        return answer

    async def _answer_and_reply(
        self, client: AsyncWebClient, ask: Ask, question: Question, notes: list[str]
    ) -> Answer | None:
        # A reply a dead process left (`ask.reply_ts`) is rewritten in place with the whole answer.
        streaming = self.settings.stream_answers and not ask.reply_ts
        stream = AnswerStream(client, ask, on_start=self._note_reply) if streaming else None
        try:
            answer = await self.pipeline.answer(question, on_delta=stream.append if stream else None)
        except Exception as exc:
            log.exception("answering %s/%s failed", ask.channel, ask.message_ts)
            await self.alerts.alert(client, f"answering {ask.channel}/{ask.message_ts} failed", [error_code(exc)])
            if stream is not None and stream.ts:
                await stream.replace(
                    self.alerts, [("blocks", blocks.notice_blocks(SORRY_TEXT))], SORRY_TEXT, what="apology"
                )
            else:
                await self.post_notice(client, ask, SORRY_TEXT, update_ts=ask.reply_ts)
            return None
        budget = getattr(self.pipeline, "budget", None)  # the engine's daily Claude spend, for /metrics
        record_answer(self.metrics, answer, channel=ask.channel, spent_today=budget.spent() if budget else None)
        await self._log(question, answer, ask, streamed=bool(stream and stream.touched))
        is_answer = answer.decision in (Decision.ANSWER, Decision.ANSWER_WITH_CAVEAT)
        if stream is not None and stream.touched:
            if is_answer and not answer.fallback_reason:
                await stream.finish(self.alerts, answer, notes)
            elif is_answer:  # the stream was cut and the engine answered another way: replace the text
                await self.alerts.alert(
                    client,
                    f"streamed answer in {ask.channel}/{ask.thread_ts} replaced",
                    [answer.fallback_reason or "stream replaced"],
                )
                await stream.replace(
                    self.alerts,
                    blocks.answer_variants(answer, notes=notes),
                    blocks.answer_body(answer),
                    what="answer (replacing a cut stream)",
                )
            else:  # streamed, then escalated or a clarifying question: that message becomes the notice
                ask.reply_ts = await stream.close()
                problems = [*stream.errors, *([answer.fallback_reason] if answer.fallback_reason else [])]
                if problems:
                    await self.alerts.alert(
                        client,
                        f"streamed reply in {ask.channel}/{ask.thread_ts} closed ({answer.decision.value})",
                        problems,
                    )
        elif is_answer:
            variants = blocks.answer_variants(answer, notes=notes)
            if self.plain_feedback_only:  # Slack refused feedback buttons on chat.postMessage before
                variants = variants[1:]
            result = await deliver_in_place(
                client,
                channel=ask.channel,
                thread_ts=ask.thread_ts,
                variants=variants,
                text=blocks.answer_body(answer),
                alerts=self.alerts,
                what="answer",
                update_ts=ask.reply_ts,
                dm_user=ask.user,
            )
            if result.variant == "degraded" and "blocks: invalid_blocks" in result.errors:
                self.plain_feedback_only = True
                log.warning("Slack refused context_actions feedback buttons; answers use plain buttons from now on")
        if answer.decision is Decision.CLARIFY:  # no question found: the engine says what it needs
            await self.post_notice(
                client, ask, "\n\n".join([blocks.markdown_to_mrkdwn(answer.text), *notes]), update_ts=ask.reply_ts
            )
        elif notes and not (stream is not None and stream.touched) and answer.decision is Decision.ESCALATE:
            # escalated: the hand-off notice follows from Escalations
            await self.post_notice(client, ask, notes[0])
        return answer

    async def _log(self, question: Question, answer: Answer, ask: Ask, *, streamed: bool) -> None:
        """Logged before the reply is posted, so a click on its buttons always finds the record."""
        slack = {
            "surface": ask.surface,
            "message_ts": ask.message_ts,
            "thread_ts": ask.thread_ts,
            "files": ask.files,
            "streamed": streamed,
        }
        try:
            await self.store.log_answer(question, answer, slack=slack)
        except Exception:
            log.exception("could not log interaction %s", answer.interaction_id)

    async def history(self, client: AsyncWebClient, ask: Ask) -> list[Turn]:
        if not ask.in_thread:
            return []
        messages = ask.thread_messages
        if messages is None:
            try:
                messages = await read_thread(client, ask.channel, ask.thread_ts)
            except Exception as exc:  # noqa: BLE001 (history is optional: the question alone is still answered)
                log.warning("no thread history for %s/%s: %s", ask.channel, ask.thread_ts, error_code(exc))
                return []
        return thread_history(messages, before_ts=ask.message_ts, bot_user_id=ask.bot_user_id, bot_id=ask.bot_id)

    async def post_notice(
        self, client: AsyncWebClient, ask: Ask, mrkdwn: str, what: str = "notice", update_ts: str | None = None
    ) -> Delivery:
        """A notice in the asker's thread (or, with `update_ts`, in place of a streamed message)."""
        return await deliver_in_place(
            client,
            channel=ask.channel,
            thread_ts=ask.thread_ts,
            text=mrkdwn,
            alerts=self.alerts,
            what=what,
            update_ts=update_ts,
            dm_user=ask.user,
        )


async def read_thread(client: AsyncWebClient, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    """Every message of a thread, oldest first, following `has_more`/`next_cursor` (a long thread
    must not lose its most recent messages, which are on the last page)."""
    messages: list[dict[str, Any]] = []
    cursor = None
    for _ in range(HISTORY_MAX_PAGES):
        page = await client.conversations_replies(
            channel=channel, ts=thread_ts, limit=HISTORY_PAGE, **({"cursor": cursor} if cursor else {})
        )
        seen = {m.get("ts") for m in messages}
        messages.extend(m for m in page.get("messages") or [] if m.get("ts") not in seen)
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not (page.get("has_more") and cursor):
            break
    return messages


class AnswerStream:
    """Streams the engine's text deltas into the thread (chat.startStream/appendStream/stopStream).

    The stream starts on the first delta, so an answer that never streams is posted normally. A
    Slack failure while streaming stops the streaming (the engine keeps working) and `finish`
    or `replace` then falls back: no message yet -> a normal post; a started message -> an
    update of it with the whole answer. Streamed text is escaped like posted text.
    """

    def __init__(
        self, client: AsyncWebClient, ask: Ask, on_start: Callable[[Ask, str], Awaitable[None]] | None = None
    ) -> None:
        self.client = client
        self.on_start = on_start  # told the message's ts once Slack started it
        # chat.startStream/stopStream are Tier 2 (~20 a minute per workspace): when Slack says wait,
        # the answer is posted normally at once instead of after a Retry-After of up to a minute.
        self.stream_client = AsyncWebClient(
            token=client.token,
            base_url=client.base_url,
            session=client.session,
            timeout=client.timeout,
            retry_handlers=[h for h in client.retry_handlers if not isinstance(h, AsyncRateLimitErrorRetryHandler)],
        )
        self.ask = ask
        self.sanitizer = blocks.StreamSanitizer()
        self._stream: AsyncChatStream | None = None
        self._pending = ""  # sanitised text not yet sent (we buffer; the SDK sends each append at once)
        self.errors: list[str] = []
        self.touched = False  # the engine streamed something (so the reply is this stream's job)

    @property
    def ts(self) -> str | None:
        return self._stream.ts if self._stream is not None else None

    @property
    def broken(self) -> bool:
        return bool(self.errors)

    async def append(self, piece: str) -> None:
        self.touched = True
        if self.broken:
            return
        try:
            if self._stream is None:
                self._stream = await self.stream_client.chat_stream(
                    channel=self.ask.channel,
                    thread_ts=self.ask.thread_ts,
                    buffer_size=1,
                    recipient_team_id=self.ask.team_id,
                    recipient_user_id=self.ask.user,
                )
            self._pending += self.sanitizer.feed(piece)
            if len(self._pending) >= (STREAM_BUFFER_CHARS if self._stream.ts else FIRST_FLUSH_CHARS):
                text, self._pending = self._pending, ""
                started = self._stream.ts
                await self._stream.append(markdown_text=text)
                if not started and self._stream.ts and self.on_start is not None:
                    await self.on_start(self.ask, self._stream.ts)
        except Exception as exc:  # noqa: BLE001 (the answer still comes, by another route)
            self.errors.append(f"stream: {error_code(exc)}")

    async def _stop(self, footers: list[list[dict[str, Any]]], *, text: str | None) -> bool:
        """chat.stopStream with each footer in turn until one is accepted."""
        stream = self._stream
        if stream is None:
            return False
        for footer in footers:
            try:
                await stream.stop(markdown_text=text, blocks=footer or None)
                return True
            except Exception as exc:  # noqa: BLE001
                code = error_code(exc)
                # the SDK starts a short stream only at stop(): a failure then is the start's
                self.errors.append(f"{'stopStream' if self.ts else 'stream'}: {code}")
                if code.split(" ")[0] not in CONTENT_ERRORS:
                    return False  # not the footer's fault: the whole answer is posted another way
                text = None if stream.ts else text  # the SDK flushed what it had before failing
        return False

    async def close(self) -> str | None:
        """End the stream without a footer (its text is about to be replaced); the message's ts."""
        if self._stream is None:
            return None
        if not self.broken:
            try:
                await self._stream.stop()
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"stopStream: {error_code(exc)}")
        elif self.ts:
            try:
                await self.stream_client.chat_stopStream(channel=self.ask.channel, ts=self.ts)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"stopStream: {error_code(exc)}")
        return self.ts

    async def finish(self, alerts: Alerts, answer: Answer, notes: list[str]) -> None:
        """Close the stream with the footer (sources, feedback); on failure, fall back."""
        if not self.broken and self._stream is not None:
            footers = [
                blocks.answer_footer_blocks(answer, notes=notes),
                blocks.answer_footer_blocks(answer, notes=notes, plain_feedback=True),
            ]
            rest, self._pending = self._pending + self.sanitizer.flush(), ""
            if await self._stop(footers, text=rest or None):
                if self.errors:
                    await alerts.alert(
                        self.client,
                        f"streamed answer in {self.ask.channel}/{self.ask.thread_ts} delivered with a plainer footer",
                        self.errors,
                    )
                return
        await self.replace(
            alerts, blocks.answer_variants(answer, notes=notes), blocks.answer_body(answer), what="streamed answer"
        )

    async def replace(
        self, alerts: Alerts, variants: list[tuple[str, list[dict[str, Any]]]], text: str, *, what: str
    ) -> Delivery:
        """Put the whole message in place of the stream: an update of the streamed message if there
        is one (so no truncated text stays behind), else a normal post."""
        if self._stream is not None and self.ts and not self.broken:
            try:
                await self._stream.stop()
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"stopStream: {error_code(exc)}")
        elif self.ts:
            try:  # a broken stream may still be open: close it before rewriting it
                await self.stream_client.chat_stopStream(channel=self.ask.channel, ts=self.ts)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"stopStream: {error_code(exc)}")
        result = await deliver_in_place(
            self.client,
            channel=self.ask.channel,
            thread_ts=self.ask.thread_ts,
            variants=variants,
            text=text,
            alerts=None,
            what=what,
            update_ts=self.ts,
            dm_user=self.ask.user,
        )
        self.errors.extend(result.errors)
        await report(
            self.client,
            alerts,
            replace(result, errors=self.errors),
            what=f"{what} in {self.ask.channel}/{self.ask.thread_ts}",
        )
        return result


async def best_effort(awaitable: Awaitable[Any]) -> None:
    """For cosmetic calls (status lines): a failure is logged, never fatal."""
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001
        log.info("cosmetic Slack call failed: %s", exc)
