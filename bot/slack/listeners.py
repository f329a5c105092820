"""Slack's events, clicks and commands, routed to the bot's behaviour.

Every listener acks at once (Slack wants an answer within 3 s) and hands real work to a
background task. A global guard drops other workspaces and redelivered events first.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.observability import record_refresh, request_context
from bot.slack import blocks
from bot.slack.answering import Ask, best_effort
from bot.slack.conversation import attachment_names, bot_answered, is_acknowledgement, is_from_a_person, mentions
from bot.slack.escalation import ALREADY_ESCALATED_TEXT, TRIGGER_ASKED, TRIGGER_THUMBS_DOWN
from bot.slack.ttlcache import TTLSet

if TYPE_CHECKING:
    from bot.slack.app import SupportBot

log = logging.getLogger(__name__)

EVENT_DEDUPE_SECONDS = 3600  # Slack retries for up to about an hour
NOT_A_FOLLOWUP_SECONDS = 300
NOT_ADMIN_TEXT = "Sorry, only knowledge admins can run `/kb-refresh`. Ask one of them, or try `/kb-status`."
REFRESH_STARTED_TEXT = "Refreshing the knowledge index… I'll post the counts here when it's done."
REFRESH_BUSY_TEXT = "A refresh is already running; try again when it has finished."
NOT_HERE_TEXT = "I only answer questions in {channels}, or in a direct message."


class Listeners:
    def __init__(self, bot: SupportBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        self.responder = bot.responder
        self.escalations = bot.escalations
        self.seen_events = TTLSet(EVENT_DEDUPE_SECONDS, max_size=50_000)
        self.not_followups = TTLSet(NOT_A_FOLLOWUP_SECONDS)
        self.titled_threads = TTLSet(24 * 3600)

    def register(self, app: AsyncApp) -> None:
        app.middleware(self.guard)  # before the assistant middleware, so it covers assistant events too
        assistant = AsyncAssistant()
        assistant.thread_started(self.on_assistant_thread_started)
        assistant.user_message(self.on_assistant_message)
        app.assistant(assistant)
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.action(blocks.FEEDBACK_ACTION)(self.on_feedback)
        app.action(blocks.ASK_HUMAN_ACTION)(self.on_ask_human)
        app.action(blocks.CLAIM_ACTION)(self.on_claim)
        app.action(blocks.RESOLVE_ACTION)(self.on_resolve)
        app.view(blocks.RESOLVE_VIEW)(self.on_resolve_submitted)
        app.command("/kb-refresh")(self.on_kb_refresh)
        app.command("/kb-status")(self.on_kb_status)

    def spawn(self, coro, name: str) -> None:
        self.bot.tasks.spawn(coro, name)

    # ------------------------------------------------------------------ guard

    async def guard(self, body: dict[str, Any], context, next) -> BoltResponse | None:
        """Other workspaces and redelivered events stop here, acknowledged so Slack stops retrying.

        Bolt runs listeners only after every global middleware has returned, so a context opened
        here would not cover them: the HTTP handler (`app.create_web_app`) opens the request
        context (log lines and spawned tasks carry the event id) and times receipt to ack.
        """
        self.bot.metrics.events.labels(type=request_type(body)).inc()
        allowed = self.settings.allowed_team_ids
        team_id = context.team_id or body.get("team_id") or (body.get("team") or {}).get("id")
        if allowed and team_id not in allowed:
            log.warning("dropped a request from workspace %s (not in SUPPORTBOT_ALLOWED_TEAM_IDS)", team_id)
            return BoltResponse(status=200, body="")
        event_id = body.get("event_id")
        if event_id and not self.seen_events.first_time(event_id):
            log.info("dropped redelivered event %s", event_id)
            return BoltResponse(status=200, body="")
        with request_context(event_id):
            return await next()

    # ------------------------------------------------------------------ questions

    def _ask(self, event: dict[str, Any], context, *, surface: str, thread_ts: str, **extra: Any) -> Ask:
        return Ask(
            channel=event["channel"], message_ts=event["ts"], thread_ts=thread_ts, user=event["user"],
            text=event.get("text") or "", surface=surface, team_id=context.team_id or event.get("team"),
            bot_user_id=context.bot_user_id, bot_id=context.bot_id, files=attachment_names(event), **extra,
        )

    def _channel_allowed(self, channel: str) -> bool:
        return not self.settings.allowed_channels or channel in self.settings.allowed_channels

    async def on_mention(self, event: dict[str, Any], context, client: AsyncWebClient) -> None:
        if not is_from_a_person(event):
            return
        if not self._channel_allowed(event["channel"]):
            channels = ", ".join(f"<#{channel}>" for channel in self.settings.allowed_channels)
            self.spawn(self._tell(client, event["channel"], event["user"], NOT_HERE_TEXT.format(channels=channels),
                                  thread_ts=event.get("thread_ts")), "not here")
            return
        ask = self._ask(event, context, surface="mention", thread_ts=event.get("thread_ts") or event["ts"])
        self.spawn(self.responder.respond(client, ask), f"answer mention {ask.channel}/{ask.message_ts}")

    async def on_message(self, event: dict[str, Any], context, client: AsyncWebClient) -> None:
        """DMs, follow-ups in answered threads, and auto-answer channels (mentions have their own event)."""
        if not is_from_a_person(event):
            return
        channel, thread_ts = event["channel"], event.get("thread_ts")
        if event.get("channel_type") == "im":
            if not thread_ts:  # DM thread replies go to the assistant listener
                ask = self._ask(event, context, surface="dm", thread_ts=event["ts"])
                self.spawn(self.responder.respond(client, ask), f"answer dm {channel}/{ask.message_ts}")
            return
        if mentions(event.get("text", ""), context.bot_user_id) or not self._channel_allowed(channel):
            return
        if thread_ts and thread_ts != event["ts"]:
            if self.settings.answer_thread_followups and not is_acknowledgement(event.get("text", "")):
                ask = self._ask(event, context, surface="followup", thread_ts=thread_ts)
                self.spawn(self._follow_up(client, ask), f"follow-up {channel}/{ask.message_ts}")
        elif channel in self.settings.auto_answer_channels:
            ask = self._ask(event, context, surface="auto", thread_ts=event["ts"])
            self.spawn(self.responder.respond(client, ask), f"auto-answer {channel}/{ask.message_ts}")

    async def _follow_up(self, client: AsyncWebClient, ask: Ask) -> None:
        """Answer a thread message without a mention if the bot answered this person in the thread."""
        if (ask.channel, ask.thread_ts) in self.escalations.handed_off:
            return
        key = (ask.channel, ask.thread_ts, ask.user)
        if key not in self.responder.answered_threads:
            if key in self.not_followups:
                return
            try:
                replies = await client.conversations_replies(channel=ask.channel, ts=ask.thread_ts, limit=200)
            except SlackApiError as exc:
                log.warning("cannot read thread %s/%s: %s", ask.channel, ask.thread_ts, exc.response.get("error"))
                return
            messages = [m for m in replies["messages"] if float(m["ts"]) < float(ask.message_ts)]
            if not bot_answered(messages, ask.user, ask.bot_user_id, ask.bot_id):
                self.not_followups.add(key)
                return
            ask.thread_messages = replies["messages"]
        await self.responder.respond(client, ask)

    # ------------------------------------------------------------------ assistant threads

    async def on_assistant_thread_started(self, payload: dict[str, Any], say, set_suggested_prompts) -> None:
        async def greet() -> None:
            await say(blocks.fallback_text(HELLO_ASSISTANT))
            prompts = [{"title": blocks.truncate(p, 75), "message": p} for p in self.settings.assistant_prompts[:4]]
            if prompts:
                await set_suggested_prompts(prompts=prompts, title="Try asking")

        self.spawn(greet(), "assistant greeting")

    async def on_assistant_message(self, payload: dict[str, Any], context, client: AsyncWebClient,
                                   set_status, set_title) -> None:
        if not is_from_a_person(payload):
            return
        ask = self._ask(payload, context, surface="assistant", thread_ts=payload["thread_ts"])

        async def answer() -> None:
            if self.titled_threads.first_time((ask.channel, ask.thread_ts)):
                await best_effort(set_title(blocks.truncate(payload.get("text") or "Question", 100)))
            await self.responder.respond(client, ask, set_status=set_status)

        self.spawn(answer(), f"answer assistant {ask.channel}/{ask.message_ts}")

    # ------------------------------------------------------------------ buttons and modals

    async def on_feedback(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rating, interaction_id = blocks.parse_feedback_value(action.get("value", ""))
        self.spawn(self._feedback(client, body, rating, interaction_id), f"feedback {interaction_id}")

    async def _feedback(self, client: AsyncWebClient, body: dict[str, Any], rating: str, interaction_id: str) -> None:
        user = body["user"]["id"]
        await self.bot.store.record_feedback(interaction_id, user=user, rating=rating)  # durable before thanks
        self.bot.metrics.feedback.labels(rating=rating).inc()
        channel, thread_ts = clicked_in(body)
        await self._tell(client, channel, user, blocks.THANKS_UP if rating == "up" else blocks.THANKS_DOWN,
                         thread_ts=thread_ts)
        if rating == "down" and self.settings.escalate_on_thumbs_down:
            await self.escalations.escalate_logged(client, interaction_id, TRIGGER_THUMBS_DOWN)

    async def on_ask_human(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.spawn(self._ask_human(client, body, action["value"]), f"ask human {action['value']}")

    async def _ask_human(self, client: AsyncWebClient, body: dict[str, Any], interaction_id: str) -> None:
        if await self.bot.store.get_escalation(interaction_id) is not None:
            channel, thread_ts = clicked_in(body)
            await self._tell(client, channel, body["user"]["id"], ALREADY_ESCALATED_TEXT, thread_ts=thread_ts)
            return
        await self.escalations.escalate_logged(client, interaction_id, TRIGGER_ASKED)

    async def on_claim(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.spawn(self.escalations.claim(client, action["value"], body["user"]["id"]), f"claim {action['value']}")

    async def on_resolve(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        # the trigger id expires within 3 s, so the modal opens right away rather than in a task
        await self.escalations.open_resolve_modal(client, action["value"], body["trigger_id"])

    async def on_resolve_submitted(self, ack, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        value = (view["state"]["values"].get(blocks.RESOLVE_BLOCK, {}).get(blocks.RESOLVE_INPUT, {}) or {}).get("value")
        if not (value or "").strip():
            await ack(response_action="errors", errors={blocks.RESOLVE_BLOCK: "Write the answer for the asker."})
            return
        await ack()
        interaction_id = view["private_metadata"]
        self.spawn(self.escalations.resolve(client, interaction_id, body["user"]["id"], value.strip()),
                   f"resolve {interaction_id}")

    # ------------------------------------------------------------------ slash commands

    async def on_kb_refresh(self, ack, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.spawn(self._refresh(client, command), "kb-refresh")

    async def _refresh(self, client: AsyncWebClient, command: dict[str, Any]) -> None:
        from knowledge.index import RefreshInProgress

        user, channel = command["user_id"], command["channel_id"]
        if not await self.is_admin(client, user):
            await self._tell(client, channel, user, NOT_ADMIN_TEXT)
            return
        await self._tell(client, channel, user, REFRESH_STARTED_TEXT)
        try:
            report = await self.bot.index.refresh(self.settings.sources)
        except RefreshInProgress:
            await self._tell(client, channel, user, REFRESH_BUSY_TEXT)
            return
        except Exception as exc:
            log.exception("refresh from Slack failed")
            record_refresh(self.bot.metrics, None)
            await self._tell(client, channel, user, f"The refresh failed: {blocks.escape(str(exc))[:500]}")
            return
        record_refresh(self.bot.metrics, report)
        await self._announce(client, channel, user, blocks.refresh_text(report.summary, user))

    async def is_admin(self, client: AsyncWebClient, user: str) -> bool:
        """Checked on every call, so removing someone from the group takes effect at once."""
        if user in self.settings.admin_users:
            return True
        if not self.settings.admin_usergroup:
            return False
        try:
            members = (await client.usergroups_users_list(usergroup=self.settings.admin_usergroup))["users"]
        except SlackApiError as exc:
            log.error("cannot read the admin user group: %s", exc.response.get("error"))
            return False
        return user in members

    async def on_kb_status(self, ack, command: dict[str, Any]) -> None:
        stats = await asyncio.to_thread(self.bot.index.stats)
        await ack(text=blocks.status_text(stats))

    # ------------------------------------------------------------------ replies to one person

    async def _tell(self, client: AsyncWebClient, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
        """An ephemeral note; where the bot cannot post (not a member), a DM instead."""
        try:
            await client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError:
            await best_effort(client.chat_postMessage(channel=user, text=text))

    async def _announce(self, client: AsyncWebClient, channel: str, user: str, text: str) -> None:
        try:
            await client.chat_postMessage(channel=channel, text=text, unfurl_links=False, unfurl_media=False)
        except SlackApiError:
            await best_effort(client.chat_postMessage(channel=user, text=text))


HELLO_ASSISTANT = "Hi! I answer questions from the help center and cite my sources. What can I help with?"


def request_type(body: dict[str, Any]) -> str:
    """A low-cardinality label: event type, command, action id or view callback id."""
    if body.get("event"):
        return body["event"].get("type", "event")
    if body.get("command"):
        return body["command"]
    if body.get("actions"):
        return body["actions"][0].get("action_id", "action")
    if body.get("view"):
        return body["view"].get("callback_id") or body.get("type", "view")
    return body.get("type") or "other"


def clicked_in(body: dict[str, Any]) -> tuple[str, str | None]:
    """The channel and thread of the message whose button was clicked."""
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return channel, message.get("thread_ts") or container.get("thread_ts")
