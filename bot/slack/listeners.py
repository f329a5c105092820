"""Slack's events, clicks and commands, routed to the bot's behaviour.

Every listener acks at once (Slack wants an answer within 3 s) and hands real work to a
background task. A global guard drops other workspaces (by the acting user's team, so a Slack
Connect guest from another organisation is dropped too) and redelivered events first.

Clicks are checked before they act: Claim and Resolve only from the escalation channel (and, with
`SUPPORTBOT_ESCALATION_ACTIONS_ONCALL_ONLY`, only by the on-call group); 👍/👎 and "Ask a human"
only on the message of the interaction they name (same channel and thread; "Ask a human" only by
the asker). Slash commands answer through `response_url`, which works where the bot is no member.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.calibration import index_status
from bot.observability import record_refresh, request_context
from bot.slack import blocks, why
from bot.slack.answering import Ask, best_effort, read_thread
from bot.slack.conversation import attachment_names, bot_answered, is_acknowledgement, is_from_a_person, mentions
from bot.slack.escalation import ALREADY_ESCALATED_TEXT, TRIGGER_ASKED, TRIGGER_THUMBS_DOWN
from bot.slack.learned import LearnedReview
from bot.slack.refresh_gate import post_to_admins, wants_force
from bot.slack.ttlcache import TTLSet

if TYPE_CHECKING:
    from bot.slack.state import SupportBot

log = logging.getLogger(__name__)

EVENT_DEDUPE_SECONDS = 3600  # Slack retries for up to about an hour
NOT_A_FOLLOWUP_SECONDS = 300
NOT_ADMIN_TEXT = "Sorry, only knowledge admins can run `/kb-refresh`. Ask one of them, or try `/kb-status`."
REFRESH_STARTED_TEXT = "Refreshing the knowledge index… I'll post the counts here when it's done."
REFRESH_BUSY_TEXT = "A refresh is already running; try again when it has finished."
NOT_HERE_TEXT = "I only answer questions in {channels}, or in a direct message."
WRONG_CHANNEL_TEXT = "Escalations can only be claimed or resolved from the escalation channel."
NOT_ONCALL_TEXT = "Only the on-call group can claim or resolve escalations."
ALREADY_HANDLED_TEXT = "This escalation is already {status}; nothing was changed."
NOT_YOUR_QUESTION_TEXT = "Only the person who asked can hand this question to a human."
STALE_BUTTON_TEXT = "That button doesn't belong to this conversation."
FEEDBACK_ACTIONS = re.compile(rf"^{blocks.FEEDBACK_ACTION}(_up|_down)?$")


class Listeners:
    def __init__(self, bot: SupportBot) -> None:
        self.bot = bot
        self.settings = bot.settings
        self.responder = bot.responder
        self.escalations = bot.escalations
        self.seen_events = TTLSet(EVENT_DEDUPE_SECONDS, max_size=50_000)
        self.not_followups = TTLSet(NOT_A_FOLLOWUP_SECONDS)
        self.titled_threads = TTLSet(24 * 3600)
        self.learned = LearnedReview(bot, may_act=self.may_act_on_escalations, tell=self._tell)

    def register(self, app: AsyncApp) -> None:
        app.middleware(self.guard)  # before the assistant middleware, so it covers assistant events too
        assistant = AsyncAssistant()
        assistant.thread_started(self.on_assistant_thread_started)
        assistant.user_message(self.on_assistant_message)
        app.assistant(assistant)
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.action(FEEDBACK_ACTIONS)(self.on_feedback)
        app.action(blocks.ASK_HUMAN_ACTION)(self.on_ask_human)
        app.action(blocks.CLAIM_ACTION)(self.on_claim)
        app.action(blocks.RESOLVE_ACTION)(self.on_resolve)
        app.view(blocks.RESOLVE_VIEW)(self.on_resolve_submitted)
        app.command("/kb-refresh")(self.on_kb_refresh)
        app.command("/kb-status")(self.on_kb_status)
        app.command("/kb")(self.on_kb)
        self.learned.register(app)  # Approve / Edit / Decline of learned answer drafts

    def spawn(self, coro, name: str) -> None:
        self.bot.tasks.spawn(coro, name)

    # ------------------------------------------------------------------ guard

    async def guard(self, body: dict[str, Any], context, request, next) -> BoltResponse | None:
        """Other workspaces and redelivered events stop here, acknowledged so Slack stops retrying.

        Bolt runs listeners only after every global middleware has returned, so a context opened
        here would not cover them: the HTTP handler (`app.create_web_app`) opens the request
        context (log lines and spawned tasks carry the event id) and times receipt to ack.
        """
        self.bot.metrics.events.labels(type=request_type(body)).inc()
        allowed = self.settings.allowed_team_ids
        team_id = context.team_id or body.get("team_id") or (body.get("team") or {}).get("id")
        actor = actor_team(body)
        if allowed and (team_id not in allowed or (actor is not None and actor not in allowed)):
            log.warning(
                "dropped a request from workspace %s / actor team %s (not in SUPPORTBOT_ALLOWED_TEAM_IDS)",
                team_id,
                actor,
            )
            return BoltResponse(status=200, body="")
        event_id = body.get("event_id")
        # Each of Slack's retries passes once: whether the message is answered is the store's call
        # (a replica that took it may have died since), and an answer in flight here refuses it.
        retry = (request.headers.get("x-slack-retry-num") or ["0"])[0]
        if event_id and not self.seen_events.first_time((event_id, retry)):
            log.info("dropped redelivered event %s", event_id)
            return BoltResponse(status=200, body="")
        with request_context(event_id):
            return await next()

    # ------------------------------------------------------------------ questions

    def _ask(self, event: dict[str, Any], context, *, surface: str, thread_ts: str, **extra: Any) -> Ask:
        return Ask(
            channel=event["channel"],
            message_ts=event["ts"],
            thread_ts=thread_ts,
            user=event["user"],
            text=event.get("text") or "",
            surface=surface,
            team_id=context.team_id or event.get("team"),
            bot_user_id=context.bot_user_id,
            bot_id=context.bot_id,
            files=attachment_names(event),
            **extra,
        )

    def _channel_allowed(self, channel: str) -> bool:
        return not self.settings.allowed_channels or channel in self.settings.allowed_channels

    async def on_mention(self, event: dict[str, Any], context, client: AsyncWebClient) -> None:
        if not is_from_a_person(event):
            return
        if not self._channel_allowed(event["channel"]):
            channels = ", ".join(f"<#{channel}>" for channel in self.settings.allowed_channels)
            self.spawn(
                self._tell(
                    client,
                    event["channel"],
                    event["user"],
                    NOT_HERE_TEXT.format(channels=channels),
                    thread_ts=event.get("thread_ts"),
                ),
                "not here",
            )
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
                thread = await read_thread(client, ask.channel, ask.thread_ts)  # every page: the latest are last
            except SlackApiError as exc:
                log.warning("cannot read thread %s/%s: %s", ask.channel, ask.thread_ts, exc.response.get("error"))
                return
            messages = [m for m in thread if float(m["ts"]) < float(ask.message_ts)]
            if not bot_answered(messages, ask.user, ask.bot_user_id, ask.bot_id):
                self.not_followups.add(key)
                return
            ask.thread_messages = thread
        await self.responder.respond(client, ask)

    # ------------------------------------------------------------------ assistant threads

    async def on_assistant_thread_started(self, payload: dict[str, Any], say, set_suggested_prompts) -> None:
        async def greet() -> None:
            await say(blocks.fallback_text(HELLO_ASSISTANT))
            prompts = [{"title": blocks.truncate(p, 75), "message": p} for p in self.settings.assistant_prompts[:4]]
            if prompts:
                await set_suggested_prompts(prompts=prompts, title="Try asking")

        self.spawn(greet(), "assistant greeting")

    async def on_assistant_message(
        self, payload: dict[str, Any], context, client: AsyncWebClient, set_status, set_title
    ) -> None:
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
        try:
            rating, interaction_id = blocks.parse_feedback_value(action.get("value", ""))
        except ValueError:
            log.warning("ignored a feedback click with a malformed value")
            return
        self.spawn(self._feedback(client, body, rating, interaction_id), f"feedback {interaction_id}")

    async def _clicked_on_its_interaction(
        self, client: AsyncWebClient, body: dict[str, Any], interaction_id: str, *, asker_only: bool
    ) -> dict[str, Any] | None:
        """The logged interaction a button names, if the click came from its own message: same
        channel and thread (and, for `asker_only`, the asker's own click); else None, and the
        clicker is told."""
        row = await self.bot.store.get_interaction(interaction_id)
        channel, thread_ts = clicked_in(body)
        user = body["user"]["id"]
        if row is None or row.get("channel") != channel or (thread_ts and row.get("thread_ts") != thread_ts):
            log.warning("refused a click naming interaction %s from %s/%s", interaction_id, channel, thread_ts)
            await self._tell(client, channel, user, STALE_BUTTON_TEXT, thread_ts=thread_ts)
            return None
        if asker_only and row.get("asker") and row["asker"] != user:
            await self._tell(client, channel, user, NOT_YOUR_QUESTION_TEXT, thread_ts=thread_ts)
            return None
        return row

    async def _feedback(self, client: AsyncWebClient, body: dict[str, Any], rating: str, interaction_id: str) -> None:
        user = body["user"]["id"]
        if await self._clicked_on_its_interaction(client, body, interaction_id, asker_only=False) is None:
            return
        await self.bot.store.record_feedback(interaction_id, user=user, rating=rating)  # durable before thanks
        self.bot.metrics.feedback.labels(rating=rating).inc()
        channel, thread_ts = clicked_in(body)
        await self._tell(
            client, channel, user, blocks.THANKS_UP if rating == "up" else blocks.THANKS_DOWN, thread_ts=thread_ts
        )
        if rating == "down" and self.settings.escalate_on_thumbs_down:
            await self.escalations.escalate_logged(client, interaction_id, TRIGGER_THUMBS_DOWN)

    async def on_ask_human(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.spawn(self._ask_human(client, body, action["value"]), f"ask human {action['value']}")

    async def _ask_human(self, client: AsyncWebClient, body: dict[str, Any], interaction_id: str) -> None:
        if await self._clicked_on_its_interaction(client, body, interaction_id, asker_only=True) is None:
            return
        existing = await self.bot.store.get_escalation(interaction_id)
        if existing is not None and existing.get("status") != "failed":
            channel, thread_ts = clicked_in(body)
            await self._tell(client, channel, body["user"]["id"], ALREADY_ESCALATED_TEXT, thread_ts=thread_ts)
            return
        await self.escalations.escalate_logged(client, interaction_id, TRIGGER_ASKED)

    async def may_act_on_escalations(self, client: AsyncWebClient, body: dict[str, Any]) -> str | None:
        """None if this click may claim or resolve; otherwise why not (told to the clicker)."""
        return self.outside_escalation_channel(body) or await self.not_oncall(client, body)

    def outside_escalation_channel(self, body: dict[str, Any]) -> str | None:
        """Why not, if the click did not come from the escalation channel (no Slack call)."""
        channel, _ = clicked_in(body)
        if not self.settings.escalation_channel or channel != self.settings.escalation_channel:
            return WRONG_CHANNEL_TEXT
        return None

    async def not_oncall(self, client: AsyncWebClient, body: dict[str, Any]) -> str | None:
        """Why not, if only the on-call group may act and the clicker is not in it (one Slack call)."""
        if self.settings.escalation_actions_oncall_only and self.settings.oncall_usergroup:
            try:
                members = (await client.usergroups_users_list(usergroup=self.settings.oncall_usergroup))["users"]
            except SlackApiError as exc:
                log.error("cannot read the on-call user group: %s", exc.response.get("error"))
                return NOT_ONCALL_TEXT
            if body["user"]["id"] not in members:
                return NOT_ONCALL_TEXT
        return None

    async def on_claim(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        self.spawn(self._claim(client, body, action["value"]), f"claim {action['value']}")

    async def _claim(self, client: AsyncWebClient, body: dict[str, Any], interaction_id: str) -> None:
        channel, thread_ts = clicked_in(body)
        user = body["user"]["id"]
        if (refusal := await self.may_act_on_escalations(client, body)) is not None:
            await self._tell(client, channel, user, refusal, thread_ts=thread_ts)
            return
        if await self.escalations.claim(client, interaction_id, user) is None:
            current = await self.bot.store.get_escalation(interaction_id) or {}
            await self._tell(
                client,
                channel,
                user,
                ALREADY_HANDLED_TEXT.format(status=current.get("status", "closed")),
                thread_ts=thread_ts,
            )

    async def on_resolve(self, ack, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        channel, thread_ts = clicked_in(body)
        user = body["user"]["id"]
        # the trigger id expires within 3 s and works once: only checks without a Slack call come
        # before the modal opens; the on-call check (usergroups.users.list, Tier 2, maybe slow)
        # runs after it, turns the modal into a refusal if need be, and runs again on submission
        if (refusal := self.outside_escalation_channel(body)) is not None:
            self.spawn(self._tell(client, channel, user, refusal, thread_ts=thread_ts), "refuse resolve")
            return
        current = await self.bot.store.get_escalation(action["value"])
        if current is not None and current.get("status") == "resolved":
            self.spawn(
                self._tell(client, channel, user, ALREADY_HANDLED_TEXT.format(status="resolved"), thread_ts=thread_ts),
                "refuse resolve",
            )
            return
        view_id = await self.escalations.open_resolve_modal(client, action["value"], body["trigger_id"])
        self.spawn(self._check_resolver(client, body, view_id), f"check resolver {action['value']}")

    async def _check_resolver(self, client: AsyncWebClient, body: dict[str, Any], view_id: str | None) -> None:
        """After the Resolve modal opened: if the clicker may not resolve, the modal says so."""
        if (refusal := await self.not_oncall(client, body)) is None:
            return
        if view_id:
            await best_effort(client.views_update(view_id=view_id, view=blocks.refusal_modal(refusal)))
        channel, thread_ts = clicked_in(body)
        await self._tell(client, channel, body["user"]["id"], refusal, thread_ts=thread_ts)

    async def on_resolve_submitted(
        self, ack, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        value = (view["state"]["values"].get(blocks.RESOLVE_BLOCK, {}).get(blocks.RESOLVE_INPUT, {}) or {}).get(
            "value"
        ) or ""
        if not value.strip():
            await ack(response_action="errors", errors={blocks.RESOLVE_BLOCK: "Write the answer for the asker."})
            return
        await ack()
        interaction_id = view["private_metadata"]
        self.spawn(self._resolve(client, body, interaction_id, value.strip()), f"resolve {interaction_id}")

    async def _resolve(self, client: AsyncWebClient, body: dict[str, Any], interaction_id: str, answer: str) -> None:
        user = body["user"]["id"]
        if self.settings.escalation_actions_oncall_only and await self.may_act_on_escalations(
            client, {**body, "channel": {"id": self.settings.escalation_channel}}
        ):
            await best_effort(client.chat_postMessage(channel=user, text=NOT_ONCALL_TEXT))
            return
        if await self.escalations.resolve(client, interaction_id, user, answer) is None:
            await best_effort(
                client.chat_postMessage(
                    channel=user, text="That escalation was already resolved, so your answer was not sent."
                )
            )
            return
        await self.learned.draft(client, interaction_id, body["user"])  # offered for review as a learned answer

    # ------------------------------------------------------------------ slash commands

    async def on_kb_refresh(self, ack, command: dict[str, Any], client: AsyncWebClient, respond) -> None:
        await ack()
        self.spawn(self._refresh(client, command, respond), "kb-refresh")

    async def _reply(self, client: AsyncWebClient, command: dict[str, Any], respond, text: str) -> None:
        """A private reply to a slash command: through its `response_url` (works in channels the
        bot is not in), else ephemeral, else by DM."""
        try:
            await respond(text=text, response_type="ephemeral")
        except Exception as exc:  # noqa: BLE001
            log.warning("response_url reply failed (%s); trying an ephemeral message", type(exc).__name__)
            await self._tell(client, command["channel_id"], command["user_id"], text)

    async def _refresh(self, client: AsyncWebClient, command: dict[str, Any], respond) -> None:
        user = command["user_id"]
        if not await self.is_admin(client, user):
            await self._reply(client, command, respond, NOT_ADMIN_TEXT)
            return
        async with self.bot.coordination.lease("refresh") as held:  # one refresh across replicas
            if not held:
                await self._reply(client, command, respond, REFRESH_BUSY_TEXT)
                return
            await self._reply(client, command, respond, REFRESH_STARTED_TEXT)
            await self._refresh_held(client, command, respond)

    async def _refresh_held(self, client: AsyncWebClient, command: dict[str, Any], respond) -> None:
        from bot.sync import configured_sources
        from knowledge.index import RefreshInProgress

        user, channel = command["user_id"], command["channel_id"]
        try:
            outcome = await self.bot.refresher(
                self.bot.index, configured_sources(self.settings), self.settings, wants_force(command.get("text"))
            )
        except RefreshInProgress:
            await self._reply(client, command, respond, REFRESH_BUSY_TEXT)
            return
        except Exception as exc:
            log.exception("refresh from Slack failed")
            record_refresh(self.bot.metrics, None)
            await self._reply(
                client,
                command,
                respond,
                f"The refresh failed: {blocks.escape(type(exc).__name__)}. The details are in the bot's log.",
            )
            return
        report = outcome.report
        record_refresh(self.bot.metrics, report)
        text = blocks.refresh_text(report.summary, user, report.calibration)
        if outcome.gate_text:
            text = f"{text}\n{blocks.escape(outcome.gate_text)}"
        await self._announce(client, channel, user, text)
        if outcome.needs_admins and outcome.gate_text:
            await post_to_admins(client, self.settings, outcome.gate_text)

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

    async def on_kb_status(self, ack, command: dict[str, Any], client: AsyncWebClient, respond) -> None:
        """Ack first (Slack's 3-second rule), then read the index and answer through `response_url`."""
        await ack()

        async def report() -> None:
            try:
                stats = await asyncio.to_thread(index_status, self.bot.index)
                text = blocks.status_text(stats)
            except Exception as exc:  # noqa: BLE001
                log.exception("kb-status failed")
                text = f"Couldn't read the knowledge index ({blocks.escape(type(exc).__name__)})."
            await self._reply(client, command, respond, text)

        self.spawn(report(), "kb-status")

    async def on_kb(self, ack, command: dict[str, Any], client: AsyncWebClient, respond) -> None:
        """`/kb why <message link>` (admins): the explanation of one decision, privately."""
        await ack()

        async def explain() -> None:
            words = (command.get("text") or "").split(maxsplit=1)
            if not words or words[0].lower() != "why" or len(words) < 2:
                await self._reply(client, command, respond, why.USAGE_TEXT)
            elif not await self.is_admin(client, command["user_id"]):
                await self._reply(client, command, respond, why.NOT_ADMIN_TEXT)
            else:
                body = await why.explain_link(self.bot.store, self.bot.index.sidecar, words[1])
                try:
                    await respond(**body, response_type="ephemeral")
                except Exception as exc:  # noqa: BLE001 (refused blocks: the short text still arrives)
                    log.warning("kb why reply failed (%s); sending its text", type(exc).__name__)
                    await self._reply(client, command, respond, body["text"])

        self.spawn(explain(), "kb why")

    # ------------------------------------------------------------------ replies to one person

    async def _tell(
        self, client: AsyncWebClient, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> None:
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


def actor_team(body: dict[str, Any]) -> str | None:
    """The team of the person acting, which in a Slack Connect channel may not be the installing
    workspace (`context.team_id`): `user_team` on events, `user.team_id` on clicks and modals,
    `user_team_id`/`actor_team_id` where Slack sends them."""
    event = body.get("event") or {}
    user: dict[str, Any] = body["user"] if isinstance(body.get("user"), dict) else {}
    for value in (event.get("user_team"), body.get("actor_team_id"), user.get("team_id"), body.get("user_team_id")):
        if value:
            return value
    return None


def clicked_in(body: dict[str, Any]) -> tuple[str, str | None]:
    """The channel and thread of the message whose button was clicked."""
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id") or ""  # a click always has one
    return channel, message.get("thread_ts") or container.get("thread_ts")
