"""From a Slack message to an answer in its thread: question, history, engine, reply, log.

Every surface (mention, DM, assistant thread, thread follow-up, auto-answer channel) ends here,
so rate limiting, streaming, logging and escalation behave the same wherever a question is asked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.normalise import normalise_slack
from bot.engine.types import Answer, Decision, Question, Turn
from bot.observability import Metrics, record_answer
from bot.slack import blocks
from bot.slack.conversation import thread_history
from bot.slack.escalation import TRIGGER_DECISION, Escalations
from bot.slack.ratelimit import AnswerLimiter
from bot.slack.ttlcache import TTLSet

log = logging.getLogger(__name__)

SORRY_TEXT = "Sorry, something went wrong while I was looking that up. Please try again in a minute."
WORKING_STATUS = "is searching the knowledge base…"
STREAM_BUFFER_CHARS = 120


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

    @property
    def in_thread(self) -> bool:
        return self.thread_ts != self.message_ts


SetStatus = Callable[[str], Awaitable[Any]]


class Responder:
    def __init__(self, settings, pipeline, store, escalations: Escalations, limiter: AnswerLimiter,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pipeline = pipeline
        self.store = store
        self.escalations = escalations
        self.limiter = limiter
        self.answered_messages = TTLSet(ttl_seconds=6 * 3600)  # one message, one answer
        self.answered_threads = TTLSet(ttl_seconds=7 * 24 * 3600)  # (channel, thread, asker) for follow-ups

    async def respond(self, client: AsyncWebClient, ask: Ask, *, set_status: SetStatus | None = None) -> Answer | None:
        if not self.answered_messages.first_time((ask.channel, ask.message_ts)):
            return None
        notes = [note for note in [blocks.attachments_note(ask.files)] if note]
        question = Question(
            text=normalise_slack(ask.text), history=await self.history(client, ask), asker=ask.user,
            channel=ask.channel, thread_ts=ask.thread_ts, team_id=ask.team_id,
        )

        async def tell_queued(seconds: float) -> None:
            await self.post_notice(client, ask, blocks.QUEUED_TEXT.format(seconds=max(5, round(seconds))))

        async with self.limiter.slot(ask.user, on_queued=tell_queued):
            if set_status is not None:
                await best_effort(set_status(WORKING_STATUS))
            answer = await self._answer_and_reply(client, ask, question, notes)
        if answer is None:
            return None
        if answer.decision is Decision.ESCALATE:
            await self.escalations.escalate(
                client, question=question, answer=answer, question_ts=ask.message_ts, trigger=TRIGGER_DECISION,
                asker_notice=None if blocks.has_draft(answer) else answer.text,
            )
        elif answer.decision is not Decision.CLARIFY:
            self.answered_threads.add((ask.channel, ask.thread_ts, ask.user))
        return answer

    async def _answer_and_reply(
        self, client: AsyncWebClient, ask: Ask, question: Question, notes: list[str]
    ) -> Answer | None:
        stream = AnswerStream(client, ask) if self.settings.stream_answers else None
        try:
            answer = await self.pipeline.answer(question, on_delta=stream.append if stream else None)
        except Exception:
            log.exception("answering %s/%s failed", ask.channel, ask.message_ts)
            if stream is not None and stream.started:
                await best_effort(stream.stop([blocks.context(SORRY_TEXT)]))
            else:
                await best_effort(self.post_notice(client, ask, SORRY_TEXT))
            return None
        record_answer(self.metrics, answer)
        await self._log(question, answer, ask, streamed=bool(stream and stream.started))
        if stream is not None and stream.started:
            footer = [blocks.context(blocks.CAVEAT_TEXT)] if answer.escalated \
                else blocks.answer_footer_blocks(answer, notes=notes)
            await stream.stop(footer)
        elif answer.decision in (Decision.ANSWER, Decision.ANSWER_WITH_CAVEAT):
            await client.chat_postMessage(
                channel=ask.channel, thread_ts=ask.thread_ts, blocks=blocks.answer_blocks(answer, notes=notes),
                text=blocks.fallback_text(blocks.answer_body(answer)), unfurl_links=False, unfurl_media=False,
            )
        elif answer.decision is Decision.CLARIFY:  # no question found: the engine says what it needs
            await self.post_notice(client, ask, "\n\n".join([blocks.markdown_to_mrkdwn(answer.text), *notes]))
        elif notes:  # escalated: the hand-off notice follows from Escalations
            await self.post_notice(client, ask, notes[0])
        return answer

    async def _log(self, question: Question, answer: Answer, ask: Ask, *, streamed: bool) -> None:
        """Logged before the reply is posted, so a click on its buttons always finds the record."""
        slack = {"surface": ask.surface, "message_ts": ask.message_ts, "thread_ts": ask.thread_ts,
                 "files": ask.files, "streamed": streamed}
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
                messages = (await client.conversations_replies(channel=ask.channel, ts=ask.thread_ts, limit=50))["messages"]
            except SlackApiError as exc:
                log.warning("no thread history for %s/%s: %s", ask.channel, ask.thread_ts, exc.response.get("error"))
                return []
        return thread_history(messages, before_ts=ask.message_ts, bot_user_id=ask.bot_user_id, bot_id=ask.bot_id)

    async def post_notice(self, client: AsyncWebClient, ask: Ask, mrkdwn: str) -> None:
        await client.chat_postMessage(channel=ask.channel, thread_ts=ask.thread_ts, text=blocks.fallback_text(mrkdwn),
                                      blocks=blocks.notice_blocks(mrkdwn), unfurl_links=False, unfurl_media=False)


class AnswerStream:
    """Streams the engine's text deltas into the thread (chat.startStream/appendStream/stopStream).

    The stream starts on the first delta, so an answer that never streams is posted normally.
    """

    def __init__(self, client: AsyncWebClient, ask: Ask) -> None:
        self.client = client
        self.ask = ask
        self.sanitizer = blocks.StreamSanitizer()
        self._stream = None

    @property
    def started(self) -> bool:
        return self._stream is not None

    async def append(self, piece: str) -> None:
        if self._stream is None:
            self._stream = await self.client.chat_stream(
                channel=self.ask.channel, thread_ts=self.ask.thread_ts, buffer_size=STREAM_BUFFER_CHARS,
                recipient_team_id=self.ask.team_id, recipient_user_id=self.ask.user,
            )
        safe = self.sanitizer.feed(piece)
        if safe:
            await self._stream.append(markdown_text=safe)

    async def stop(self, footer: list[dict[str, Any]]) -> None:
        await self._stream.stop(markdown_text=self.sanitizer.flush() or None, blocks=footer)


async def best_effort(awaitable: Awaitable[Any]) -> None:
    """For cosmetic calls (status lines): a failure is logged, never fatal."""
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001
        log.info("cosmetic Slack call failed: %s", exc)
