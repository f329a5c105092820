"""Reviewing learned answers in Slack: a draft after each resolution, Approve / Edit / Decline.

When a human resolves an escalation, the answer is worth keeping: the next person who asks the
same thing should get it from the bot. So a draft entry (`knowledge.learned`) is made from the
question and the human answer, and posted in the escalation post's thread with three buttons.
Approve publishes it and refreshes just the learned-answers source (through the bot's refresher,
so the eval gate applies when `serve` runs with it); Edit opens a modal to fix the title and the
answer first; Decline keeps it out. A draft whose question is close to an approved entry's says
so and, approved, updates that entry instead of adding a near-duplicate.

Clicks are held to the same rule as Claim and Resolve (the escalation channel, optionally the
on-call group only): the listeners hand their check in as `may_act`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import SECTION_LIMIT, button, context, escape, link, markdown_to_mrkdwn
from bot.slack.delivery import deliver
from knowledge.learned import EntryNotFound, LearnedEntry, LearnedStore, closest, new_entry_id, utc_iso
from knowledge.text import truncate

if TYPE_CHECKING:
    from bot.slack.state import SupportBot

log = logging.getLogger(__name__)

APPROVE_ACTION = "learned_approve"
EDIT_ACTION = "learned_edit"
DECLINE_ACTION = "learned_decline"
EDIT_VIEW = "learned_edit_view"
TITLE_BLOCK, TITLE_INPUT = "learned_title", "title"
ANSWER_BLOCK, ANSWER_INPUT = "learned_answer", "answer"

MayAct = Callable[[AsyncWebClient, dict[str, Any]], Awaitable[str | None]]
Tell = Callable[..., Awaitable[None]]


# ------------------------------------------------------------------------------ rendering (pure)


def review_blocks(entry: LearnedEntry, updates: LearnedEntry | None = None, similarity: float | None = None) -> list:
    """The draft as reviewers see it, with its buttons (while it is a draft) or its outcome."""
    where = f" · {link(entry.thread_link, 'thread')}" if entry.thread_link else ""
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": truncate(
                    f":books: *Learned answer draft*\n*{escape(truncate(entry.title, 300))}*\n"
                    f"{markdown_to_mrkdwn(truncate(entry.answer, 2400))}",
                    SECTION_LIMIT,
                ),
            },
        },
        context(f"Answered by <@{entry.answered_by}> on {entry.answered_at[:10]}{where}"),
    ]
    if updates is not None:
        score = f" (similarity {similarity:.2f})" if similarity is not None else ""
        blocks.append(
            context(
                f":recycle: Close to the learned answer “{escape(truncate(updates.title, 200))}”{score}: "
                "approving *updates* it instead of adding a duplicate."
            )
        )
    if entry.status == "draft":
        blocks.append(
            {
                "type": "actions",
                "block_id": "learned_review",
                "elements": [
                    button("Approve", APPROVE_ACTION, entry.id, style="primary"),
                    button("Edit", EDIT_ACTION, entry.id),
                    button("Decline", DECLINE_ACTION, entry.id, style="danger"),
                ],
            }
        )
    else:
        outcome = {
            "approved": f":white_check_mark: Approved by <@{entry.reviewed_by}>: the bot now answers this from it.",
            "declined": f":no_entry_sign: Declined by <@{entry.reviewed_by}>: kept out of the knowledge.",
            "deleted": ":wastebasket: Deleted from the knowledge.",
        }.get(entry.status, entry.status)
        blocks.append(context(outcome))
    return blocks


def edit_modal(entry: LearnedEntry) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": EDIT_VIEW,
        "private_metadata": entry.id,
        "title": {"type": "plain_text", "text": "Edit learned answer"},
        "submit": {"type": "plain_text", "text": "Approve"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": TITLE_BLOCK,
                "label": {"type": "plain_text", "text": "Question (the title)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": TITLE_INPUT,
                    "initial_value": truncate(entry.title, 300),
                    "max_length": 300,
                },
            },
            {
                "type": "input",
                "block_id": ANSWER_BLOCK,
                "label": {"type": "plain_text", "text": "Answer"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": ANSWER_INPUT,
                    "multiline": True,
                    "initial_value": truncate(entry.answer, SECTION_LIMIT),
                    "max_length": SECTION_LIMIT,
                },
            },
        ],
    }


def submitted(view: dict[str, Any], block: str, element: str) -> str:
    return ((view.get("state", {}).get("values", {}).get(block, {}).get(element) or {}).get("value") or "").strip()


# ------------------------------------------------------------------------------ the review flow


class LearnedReview:
    def __init__(self, bot: SupportBot, *, may_act: MayAct, tell: Tell) -> None:
        self.bot = bot
        self.store = LearnedStore(bot.settings.data_dir)
        self.may_act = may_act
        self.tell = tell

    def register(self, app: AsyncApp) -> None:
        app.action(APPROVE_ACTION)(self.on_approve)
        app.action(DECLINE_ACTION)(self.on_decline)
        app.action(EDIT_ACTION)(self.on_edit)
        app.view(EDIT_VIEW)(self.on_edit_submitted)

    # ---------------------------------------------------------------- drafting

    async def draft(self, client: AsyncWebClient, interaction_id: str, resolver: dict[str, Any]) -> LearnedEntry | None:
        """After a resolution is stored: draft the entry and ask for a review (never raises)."""
        try:
            return await self._draft(client, interaction_id, resolver)
        except Exception:  # noqa: BLE001 (the asker already has the human answer; a draft is a bonus)
            log.exception("could not draft a learned answer from %s", interaction_id)
            return None

    async def _draft(
        self, client: AsyncWebClient, interaction_id: str, resolver: dict[str, Any]
    ) -> LearnedEntry | None:
        store = self.bot.store
        row, escalation = await store.get_interaction(interaction_id), await store.get_escalation(interaction_id)
        if not row or not escalation or not escalation.get("human_answer"):
            return None
        resolved_at = escalation.get("updated_at")
        entry = LearnedEntry(
            id=new_entry_id(),
            title=(row.get("question") or "").strip(),
            answer=escalation["human_answer"],
            thread_link=escalation.get("permalink"),
            answered_by=resolver["id"],
            answered_by_name=resolver.get("username") or resolver.get("name") or resolver["id"],
            answered_at=utc_iso(resolved_at) if resolved_at is not None else utc_iso(),
            interaction_id=interaction_id,
        )
        found = await self.similar(entry.title)
        updates, similarity = found if found else (None, None)
        if updates is not None:
            entry.updates = updates.id
        await asyncio.to_thread(self.store.save, entry)
        channel = escalation.get("escalation_channel") or self.bot.settings.escalation_channel
        if not channel:
            return entry
        delivery = await deliver(
            client,
            channel=channel,
            thread_ts=escalation.get("escalation_ts"),
            variants=[("blocks", review_blocks(entry, updates, similarity))],
            text=f"Learned answer draft: {truncate(entry.title, 200)}",
            alerts=self.bot.alerts,
            what=f"learned answer draft of {interaction_id}",
        )
        if delivery.ok and delivery.ts:
            post = {"channel": delivery.channel or channel, "ts": delivery.ts}
            entry = await asyncio.to_thread(self.store.set_review_post, entry.id, post)
        return entry

    async def similar(self, question: str) -> tuple[LearnedEntry, float] | None:
        """The approved entry this question is close to (by embedding), if any."""
        approved = [e for e in await asyncio.to_thread(self.store.all, "approved") if not e.updates]
        if not approved:
            return None
        vectors = await self.bot.index.embedder.aencode([question, *(e.title for e in approved)])
        return closest(vectors[0], approved, vectors[1:])

    # ---------------------------------------------------------------- clicks

    async def _allowed(self, client: AsyncWebClient, body: dict[str, Any]) -> bool:
        refusal = await self.may_act(client, body)
        if refusal is not None:
            container = body.get("container") or {}
            await self.tell(client, container.get("channel_id", ""), body["user"]["id"], refusal)
        return refusal is None

    async def on_approve(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.bot.tasks.spawn(self._decide(client, body, action["value"], approve=True), "learned approve")

    async def on_decline(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.bot.tasks.spawn(self._decide(client, body, action["value"], approve=False), "learned decline")

    async def on_edit(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        # the trigger id expires within 3 s: check and open at once
        if not await self._allowed(client, body):
            return
        try:
            entry = await asyncio.to_thread(self.store.get, action["value"])
        except EntryNotFound:
            return
        if entry.status == "draft":
            await client.views_open(trigger_id=body["trigger_id"], view=edit_modal(entry))

    async def on_edit_submitted(self, ack, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        title, answer = submitted(view, TITLE_BLOCK, TITLE_INPUT), submitted(view, ANSWER_BLOCK, ANSWER_INPUT)
        if not title or not answer:
            errors = {TITLE_BLOCK: "A title is needed."} if not title else {ANSWER_BLOCK: "An answer is needed."}
            await ack(response_action="errors", errors=errors)
            return
        await ack()
        reviewed = {**body, "channel": {"id": self.bot.settings.escalation_channel}}
        self.bot.tasks.spawn(
            self._decide(client, reviewed, view["private_metadata"], approve=True, title=title, answer=answer),
            "learned edit",
        )

    async def _decide(
        self,
        client: AsyncWebClient,
        body: dict[str, Any],
        entry_id: str,
        *,
        approve: bool,
        title: str | None = None,
        answer: str | None = None,
    ) -> LearnedEntry | None:
        if not await self._allowed(client, body):
            return None
        user = body["user"]["id"]
        try:
            if approve:
                entry = await asyncio.to_thread(self.store.approve, entry_id, user, title=title, answer=answer)
            else:
                entry = await asyncio.to_thread(self.store.decline, entry_id, user)
        except (EntryNotFound, ValueError) as exc:
            log.info("learned answer %s: %s", entry_id, exc)
            return None
        draft = await asyncio.to_thread(self.store.get, entry_id)
        if approve:
            await self.publish()
        post = draft.review_post
        if post.get("channel") and post.get("ts"):
            await deliver(
                client,
                channel=post["channel"],
                thread_ts=None,
                variants=[("blocks", review_blocks(draft))],
                text=f"Learned answer {draft.status}: {truncate(draft.title, 200)}",
                alerts=self.bot.alerts,
                what=f"learned answer {draft.status}",
                update_ts=post["ts"],
            )
        return entry

    async def publish(self) -> None:
        """Index the learned-answers source now (only it: the rest of the knowledge is untouched)."""
        try:
            outcome = await self.bot.refresher(self.bot.index, [self.store.source], self.bot.settings, False)
        except Exception:  # noqa: BLE001 (the entry is saved; the next refresh indexes it)
            log.exception("indexing learned answers failed; the next refresh will pick them up")
            return
        if outcome.needs_admins and outcome.gate_text:
            log.warning("learned answers not published: %s", outcome.gate_text)
