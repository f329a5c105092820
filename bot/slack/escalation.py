"""Human handoff: the escalation channel post, claim, resolve, and the human answer relayed back.

Three things hand a question to humans: the engine's escalate decision, the asker's "Ask a human"
click, and (if configured) a thumbs-down. All land here, so the post looks the same whatever
triggered it. State lives in the store's escalation row, not in memory, so "Claim" and "Resolve"
work on posts made before a restart; the human answer becomes the reference answer for evals.

One post per interaction: the in-flight guard is taken before any await, and a "pending" row is
written (a one-way, compare-and-set transition in the store) before posting, so neither two
quick clicks nor a crash between the post and its record make a second post. Claim and Resolve
move the row one way (open -> claimed -> resolved; resolved is final).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.types import Answer, Citation, Decision, Question, utc_now
from bot.observability import Metrics
from bot.slack import blocks
from bot.slack.delivery import Alerts, Delivery, deliver, deliver_in_place, error_code
from bot.slack.ttlcache import TTLSet
from bot.store import EscalationConflict

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.store import Store

log = logging.getLogger(__name__)

TRIGGER_DECISION = "the bot escalated"  # the engine's reasons say why
TRIGGER_ASKED = "asked for a human"
TRIGGER_THUMBS_DOWN = "thumbs down"

NO_ESCALATION_TEXT = (
    "I couldn't find a confident answer in the knowledge base, and I couldn't reach the support team "
    "right now; the bot's admins have been alerted. Please ask in your support channel."
)
ALREADY_ESCALATED_TEXT = "This question is already with the support team."
HISTORY_MAX_PAGES = 10  # searching the escalation channel for a post made just before a crash


def from_log(row: dict[str, Any]) -> tuple[Question, Answer]:
    """Rebuild the Question and Answer of a logged interaction (for posts made long ago)."""
    question = Question(
        text=row["question"] or "",
        asker=row.get("asker"),
        channel=row.get("channel"),
        thread_ts=row.get("thread_ts"),
        team_id=row.get("team_id"),
        interaction_id=row["interaction_id"],
    )
    answer = Answer(
        interaction_id=row["interaction_id"],
        question=row["question"] or "",
        text=row.get("answer") or "",
        citations=[Citation(**citation) for citation in row.get("citations") or []],
        confidence=row.get("confidence") or 0.0,
        decision=Decision(row.get("decision") or "escalate"),
        reasons=row.get("reasons") or [],
    )
    return question, answer


def status_line(escalation: dict[str, Any]) -> str | None:
    if escalation.get("status") == "resolved":
        return f":white_check_mark: Resolved by <@{escalation.get('resolved_by')}>"
    if escalation.get("status") == "claimed":
        return f":raising_hand: Claimed by <@{escalation.get('claimed_by')}>"
    return None


class Escalations:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics, alerts: Alerts | None = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.alerts = alerts or Alerts(settings)
        self._in_flight: set[str] = set()  # two quick clicks must not make two posts
        self.handed_off = TTLSet(ttl_seconds=7 * 24 * 3600)  # (channel, thread): humans own it, no follow-ups

    async def escalate(
        self,
        client: AsyncWebClient,
        *,
        question: Question,
        answer: Answer | None,
        question_ts: str | None,
        trigger: str,
        asker_notice: str | None = None,
        notice_ts: str | None = None,
    ) -> bool:
        """Post the case to the escalation channel and tell the asker; False if it was not posted.

        Only one escalation per interaction: a second trigger (another click) is a no-op.
        `asker_notice` replaces the standard "a human will reply" message in the asker's thread;
        `notice_ts` is a message of the bot's there (a streamed draft) to rewrite into the notice.
        """
        interaction_id = answer.interaction_id if answer else question.interaction_id
        if interaction_id in self._in_flight:  # checked and taken before any await
            return False
        self._in_flight.add(interaction_id)
        try:
            if not await self._reserve(interaction_id, trigger):
                if trigger == TRIGGER_DECISION and question.channel and question.thread_ts:
                    # answering this question again (a restart's recovery): the asker still hears back
                    await self._tell_asker(client, question, ALREADY_ESCALATED_TEXT, notice_ts)
                return False
            return await self._escalate(
                client, interaction_id, question, answer, question_ts, trigger, asker_notice, notice_ts
            )
        finally:
            self._in_flight.discard(interaction_id)

    async def _reserve(self, interaction_id: str, trigger: str) -> bool:
        """Write the "pending" row; False if the interaction already has an escalation (posted,
        or being posted by another process). A log that cannot be written (full or read-only
        disk) must not cost the asker the hand-off."""
        try:
            await self.store.record_escalation(interaction_id, status="pending", trigger=trigger)
        except EscalationConflict:
            return False
        except Exception:  # noqa: BLE001
            log.exception("cannot write the escalation log; escalating %s anyway", interaction_id)
        return True

    async def _escalate(
        self,
        client: AsyncWebClient,
        interaction_id: str,
        question: Question,
        answer: Answer | None,
        question_ts: str | None,
        trigger: str,
        asker_notice: str | None,
        notice_ts: str | None = None,
        existing: Delivery | None = None,
    ) -> bool:
        """Post (unless `existing`: a post found already up, made by a process that died before
        recording it), record it "open", and tell the asker."""
        channel = self.settings.escalation_channel
        posted = False
        if channel:
            permalink = await self._permalink(client, question.channel, question_ts)
            question_mrkdwn = blocks.escape(question.text)
            post_blocks = blocks.escalation_blocks(
                interaction_id=interaction_id,
                question_mrkdwn=question_mrkdwn,
                asker=question.asker,
                permalink=permalink,
                answer=answer,
                trigger=trigger,
                oncall_usergroup=self.settings.oncall_usergroup,
            )
            delivery = existing or await deliver(
                client,
                channel=channel,
                thread_ts=None,
                variants=[("blocks", post_blocks)],
                text=self._summary(question, trigger),
                alerts=self.alerts,
                what=f"escalation of {interaction_id}",
            )
            if delivery.ok:
                posted = True
                self.metrics.escalations.labels(trigger=trigger).inc()
                try:
                    await self.store.record_escalation(
                        interaction_id,
                        status="open",
                        escalation_ts=delivery.ts,
                        escalation_channel=delivery.channel,
                        trigger=trigger,
                        permalink=permalink,
                    )
                except Exception:  # noqa: BLE001 (the post is up; the asker must still be told)
                    log.exception("could not log the escalation of %s", interaction_id)
                for rest in [] if existing else blocks.escalation_overflow(question_mrkdwn, answer):
                    await deliver(
                        client,
                        channel=delivery.channel or channel,
                        thread_ts=delivery.ts,
                        variants=[("blocks", blocks.notice_blocks(rest))],
                        text=rest,
                        alerts=self.alerts,
                        what=f"escalation overflow of {interaction_id}",
                    )
            else:
                await self._mark_failed(interaction_id)
        else:
            log.warning("no SUPPORTBOT_ESCALATION_CHANNEL: interaction %s was not escalated", interaction_id)
            await self.alerts.alert(
                client,
                f"interaction {interaction_id} needs a human, but no escalation channel is configured",
                ["no_escalation_channel"],
            )
            await self._mark_failed(interaction_id)
        if question.channel and question.thread_ts:
            self.handed_off.add((question.channel, question.thread_ts))
            if not posted:
                text = NO_ESCALATION_TEXT
            elif asker_notice:
                text = blocks.markdown_to_mrkdwn(asker_notice)
            else:
                text = blocks.ASKED_HUMAN_TEXT if trigger == TRIGGER_ASKED else blocks.ESCALATED_TEXT
            await self._tell_asker(client, question, text, notice_ts)
        return posted

    async def _tell_asker(self, client: AsyncWebClient, question: Question, text: str, notice_ts: str | None) -> None:
        """The hand-off notice in the asker's thread (in place of a streamed draft, if any)."""
        assert question.channel and question.thread_ts
        await deliver_in_place(
            client,
            channel=question.channel,
            thread_ts=question.thread_ts,
            text=text,
            alerts=self.alerts,
            what="escalation notice",
            update_ts=notice_ts,
            dm_user=question.asker,
        )

    async def sweep(self, client: AsyncWebClient) -> int:
        """Finish the escalations whose poster died after reserving them: a "pending" row untouched
        for `escalation_lease_seconds` (longer than any post takes). Each is taken atomically (one
        process wins), then the escalation channel is searched for its post, in case the poster
        died after posting but before recording; only if there is none is it posted. Either way
        the row becomes "open" and the asker is told. Returns how many were finished."""
        stale_before = utc_now() - timedelta(seconds=self.settings.escalation_lease_seconds)
        try:
            rows = await asyncio.to_thread(self.store.stale_escalations, stale_before=stale_before)
        except Exception:  # noqa: BLE001
            log.exception("could not read pending escalations")
            return 0
        finished = 0
        for row in rows:
            interaction_id = row["interaction_id"]
            if interaction_id in self._in_flight:  # this process is posting it right now
                continue
            self._in_flight.add(interaction_id)
            try:
                finished += await self._finish_stale(client, row, stale_before)
            except Exception:  # noqa: BLE001 (one broken row must not stop the others)
                log.exception("could not finish the pending escalation of %s", interaction_id)
            finally:
                self._in_flight.discard(interaction_id)
        return finished

    async def _finish_stale(self, client: AsyncWebClient, row: dict[str, Any], stale_before: datetime) -> bool:
        interaction_id = row["interaction_id"]
        if await self.store.take_escalation(interaction_id, stale_before=stale_before) is None:
            return False  # another process took it, or it moved on
        logged = await self.store.get_interaction(interaction_id)
        if logged is None:
            await self.alerts.alert(
                client, f"pending escalation of {interaction_id} has no logged interaction", ["no_interaction"]
            )
            await self._mark_failed(interaction_id)
            return False
        question, answer = from_log(logged)
        existing = await self._find_post(client, interaction_id, since=row.get("created_at"))
        log.warning(
            "finishing the escalation of %s left pending by a process that died (%s)",
            interaction_id,
            "post found" if existing else "not posted",
        )
        await self._escalate(
            client,
            interaction_id,
            question,
            answer,
            (logged.get("slack") or {}).get("message_ts"),
            row.get("trigger") or TRIGGER_DECISION,
            None,
            existing=existing,
        )
        return True

    async def _find_post(self, client: AsyncWebClient, interaction_id: str, since: Any) -> Delivery | None:
        """The bot's escalation post for `interaction_id`, if it is already in the channel (its
        action block is `escalation:<id>`); None if not, or if the history cannot be read."""
        channel = self.settings.escalation_channel
        if not channel:
            return None
        oldest = since.timestamp() - 60 if isinstance(since, datetime) else 0
        marker = f"escalation:{interaction_id}"
        cursor: str | None = None
        try:
            for _ in range(HISTORY_MAX_PAGES):
                page = await client.conversations_history(
                    channel=channel, oldest=f"{oldest:.6f}", limit=200, cursor=cursor
                )
                for message in page.get("messages") or []:
                    if any(block.get("block_id") == marker for block in message.get("blocks") or []):
                        return Delivery(ok=True, channel=channel, ts=message.get("ts"), variant="found")
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not (page.get("has_more") and cursor):
                    break
        except Exception as exc:  # noqa: BLE001 (a duplicate post beats an asker left waiting)
            log.warning("cannot search %s for the escalation of %s: %s", channel, interaction_id, error_code(exc))
        return None

    async def _mark_failed(self, interaction_id: str) -> None:
        """The post did not happen: a later click (or a restart) may try again."""
        try:
            await self.store.record_escalation(interaction_id, status="failed")
        except Exception:  # noqa: BLE001
            log.exception("could not mark the escalation of %s as failed", interaction_id)

    async def escalate_logged(self, client: AsyncWebClient, interaction_id: str, trigger: str) -> bool:
        """Escalate an interaction known only by id (a button click)."""
        row = await self.store.get_interaction(interaction_id)
        if row is None:
            log.warning("escalation requested for unknown interaction %s", interaction_id)
            return False
        question, answer = from_log(row)
        return await self.escalate(
            client,
            question=question,
            answer=answer,
            question_ts=(row.get("slack") or {}).get("message_ts"),
            trigger=trigger,
        )

    async def claim(self, client: AsyncWebClient, interaction_id: str, user: str) -> dict[str, Any] | None:
        """Claim an open escalation; None (nothing changed) if it is already claimed or resolved."""
        try:
            escalation = await self.store.record_escalation(interaction_id, status="claimed", user=user)
        except EscalationConflict as conflict:
            log.info("claim of %s refused: %s", interaction_id, conflict)
            return None
        await self._refresh_post(client, interaction_id, escalation)
        return escalation

    async def open_resolve_modal(self, client: AsyncWebClient, interaction_id: str, trigger_id: str) -> str | None:
        """Open the Resolve modal; its view id (for a later views.update)."""
        response = await client.views_open(
            trigger_id=trigger_id, view=blocks.resolve_modal(interaction_id, interaction_id)
        )
        view = response.get("view") or {}
        return view.get("id") if isinstance(view, dict) else None

    async def resolve(
        self, client: AsyncWebClient, interaction_id: str, user: str, human_answer: str
    ) -> dict[str, Any] | None:
        """Store the human answer first (it is the valuable part), then relay it and close the post.
        None if it was already resolved: the first human answer stands and is relayed once."""
        try:
            escalation = await self.store.record_escalation(
                interaction_id, status="resolved", user=user, human_answer=human_answer
            )
        except EscalationConflict as conflict:
            log.info("resolve of %s refused: %s", interaction_id, conflict)
            return None
        row = await self.store.get_interaction(interaction_id)
        if row and row.get("channel") and row.get("thread_ts"):
            mrkdwn = blocks.markdown_to_mrkdwn(human_answer)
            await deliver(
                client,
                channel=row["channel"],
                thread_ts=row["thread_ts"],
                variants=[("blocks", blocks.human_answer_blocks(human_answer, user))],
                text=mrkdwn,
                alerts=self.alerts,
                what=f"human answer to {interaction_id}",
                dm_user=row.get("asker"),
            )
        await self._refresh_post(client, interaction_id, escalation, row)
        return escalation

    async def _refresh_post(
        self, client: AsyncWebClient, interaction_id: str, escalation: dict[str, Any], row: dict[str, Any] | None = None
    ) -> None:
        """Re-render the escalation post from the store with its new status."""
        row = row or await self.store.get_interaction(interaction_id)
        if not (escalation.get("escalation_channel") and escalation.get("escalation_ts") and row):
            return
        question, answer = from_log(row)
        post_blocks = blocks.escalation_blocks(
            interaction_id=interaction_id,
            question_mrkdwn=blocks.escape(question.text),
            asker=question.asker,
            permalink=escalation.get("permalink"),
            answer=answer,
            trigger=escalation.get("trigger") or "escalated",
            oncall_usergroup=self.settings.oncall_usergroup,
            status_line=status_line(escalation),
            actions=escalation.get("status") != "resolved",
        )
        await deliver(
            client,
            channel=escalation["escalation_channel"],
            thread_ts=None,
            variants=[("blocks", post_blocks)],
            text=self._summary(question, escalation.get("trigger") or "escalated"),
            alerts=self.alerts,
            what=f"escalation status of {interaction_id}",
            update_ts=escalation["escalation_ts"],
        )

    def _summary(self, question: Question, trigger: str) -> str:
        tag = f"<!subteam^{self.settings.oncall_usergroup}> " if self.settings.oncall_usergroup else ""
        asked = blocks.neutralize_pings(blocks.escape(blocks.truncate(question.text, 200)))
        return f"{tag}Question needs a human ({trigger}): {asked}"

    @staticmethod
    async def _permalink(client: AsyncWebClient, channel: str | None, ts: str | None) -> str | None:
        if not (channel and ts):
            return None
        try:
            return (await client.chat_getPermalink(channel=channel, message_ts=ts))["permalink"]
        except SlackApiError as exc:
            log.warning("no permalink for %s/%s: %s", channel, ts, exc.response.get("error"))
            return None
