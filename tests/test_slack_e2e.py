"""The Slack bot end to end: signed requests to the real HTTP endpoint on a free port, the real
slack_sdk behind it talking to the Slack emulator, and the real engine (offline extractive answerer)
over the shared sample index. Waits are on recorded API calls, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.slack import blocks
from bot.slack.app import ConfigurationError, create_app, create_socket_mode_handler, create_web_app
from bot.slack.state import SupportBot
from bot.store import InteractionStore
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_payloads import (
    BOT_ID,
    BOT_USER_ID,
    CHANNEL_ID,
    USER_ID,
    app_mention_event,
    assistant_thread_started_event,
    block_actions_payload,
    event_callback,
    form_body,
    interactive_body,
    json_body,
    message_event,
    sign_request,
    slash_command_form,
    view_submission_payload,
)

pytestmark = pytest.mark.timeout(240)  # the first test also builds the shared sample index

SECRET = "test-signing-secret"
ESCALATION_CHANNEL = "C0ESCALATE"
ONCALL = "S0ONCALL"
ADMIN = "U0ADMIN"
ANSWERABLE = "How do I create an API key?"
UNANSWERABLE = "Can the moon base cafeteria serve pickled herring on Tuesdays?"


def build_pipeline(settings, parts):
    from bot.engine.pipeline import Pipeline

    return Pipeline.from_settings(
        settings, index=parts["index"], searcher=parts["searcher"], embedder=parts["embedder"]
    )


class BotUnderTest:
    """The bot's HTTP endpoint on a free port, with helpers that sign what Slack would send."""

    def __init__(
        self,
        emu: SlackEmulator,
        state: SupportBot | None,
        base_url: str,
        session: aiohttp.ClientSession,
        store: InteractionStore | None,
    ):
        self.emu, self.state, self.base_url, self.session, self.store = emu, state, base_url, session, store

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        signed_with: str = SECRET,
        timestamp: int | None = None,
        headers: dict | None = None,
    ) -> tuple[int, str, float]:
        all_headers = {"Content-Type": content_type, **sign_request(signed_with, body, timestamp), **(headers or {})}
        started = time.perf_counter()
        async with self.session.post(f"{self.base_url}/slack/events", data=body, headers=all_headers) as resp:
            return resp.status, await resp.text(), time.perf_counter() - started

    async def event(self, event: dict, *, event_id: str | None = None, **kwargs) -> tuple[int, str, float]:
        return await self.post(json_body(event_callback(event, event_id=event_id)), "application/json", **kwargs)

    async def click(self, payload: dict) -> int:
        status, _, _ = await self.post(interactive_body(payload), "application/x-www-form-urlencoded")
        return status

    async def command(self, name: str, user: str = USER_ID, channel: str = CHANNEL_ID) -> tuple[int, str]:
        form = slash_command_form(name, user_id=user, channel_id=channel, response_url=self.emu.response_url())
        status, text, _ = await self.post(form_body(form), "application/x-www-form-urlencoded")
        return status, text

    async def next_post(self, action, method: str = "chat.postMessage", timeout: float = 20.0):
        """Run `action`, then wait for the next call to `method`; returns (action result, call)."""
        before = len(self.emu.calls_to(method))
        result = await action
        calls = await self.emu.wait_for(method, before + 1, timeout=timeout)
        return result, calls[before]

    async def reply_to(self, event: dict, timeout: float = 20.0) -> dict:
        """Send `event`, then wait for the bot's finished reply in its thread, posted whole or
        streamed (the default with Claude); returns the message as Slack shows it."""
        await self.event(event)
        thread_ts = event.get("thread_ts") or event["ts"]
        deadline = time.monotonic() + timeout
        while not (replies := self.emu.bot_replies(event["channel"], thread_ts)):
            assert time.monotonic() < deadline, f"no reply in {thread_ts} within {timeout}s: {self.emu.calls}"
            await asyncio.sleep(0.02)
        return replies[-1]

    def posts_in(self, channel: str, thread_ts: str | None = None) -> list:
        return [
            c
            for c in self.emu.calls_to("chat.postMessage")
            if c.args.get("channel") == channel and (thread_ts is None or c.args.get("thread_ts") == thread_ts)
        ]

    async def interaction(self, interaction_id: str | None = None) -> dict:
        rows = self.store.interactions()
        return next(r for r in rows if r["interaction_id"] == interaction_id) if interaction_id else rows[-1]


@asynccontextmanager
async def running_bot(tmp_path: Path, sample_settings, parts, **overrides):
    async with SlackEmulator() as emu:
        emu.add_usergroup(ONCALL, ["U0ONCALL"])
        settings = sample_settings.model_copy(
            update={
                "slack_bot_token": SecretStr("xoxb-test"),
                "slack_signing_secret": SecretStr(SECRET),
                "slack_api_url": emu.api_url,
                "escalation_channel": ESCALATION_CHANNEL,
                "oncall_usergroup": ONCALL,
                "admin_users": [ADMIN],
                **overrides,
            }
        )
        store = InteractionStore(tmp_path / "logs")
        state = create_app(settings, build_pipeline(settings, parts), store, parts["index"])
        runner = web.AppRunner(create_web_app(state))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            try:
                yield BotUnderTest(emu, state, f"http://127.0.0.1:{port}", session, store)
            finally:
                await runner.cleanup()


@pytest.fixture
async def slack_bot(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts) as bot:
        yield bot


def sources_links(blocks_: list[dict]) -> str:
    return next(
        b["elements"][0]["text"]
        for b in blocks_
        if b["type"] == "context" and b["elements"][0]["text"].startswith("*Sources*")
    )


# --------------------------------------------------------------------------- 1. answering


class GatedPipeline:
    """Holds every answer until the test opens the gate: proves the ack never waits for the work."""

    def __init__(self, inner):
        self.inner, self.gate = inner, asyncio.Event()

    async def answer(self, question, *, on_delta=None):
        await self.gate.wait()
        return await self.inner.answer(question, on_delta=on_delta)


async def test_mention_is_acked_at_once_then_answered_in_thread_with_sources(slack_bot):
    responder = slack_bot.state.responder
    responder.pipeline = gated = GatedPipeline(responder.pipeline)
    mention = app_mention_event(ANSWERABLE)
    status, _, elapsed = await slack_bot.event(mention)
    assert status == 200 and elapsed < 1.0 and slack_bot.emu.calls_to("chat.postMessage") == []
    # the working indicator shows while the answer is still being written
    [working] = await slack_bot.emu.wait_for("reactions.add", timeout=20)
    assert (working.args["name"], working.args["timestamp"]) == ("eyes", mention["ts"])
    assert slack_bot.emu.calls_to("chat.postMessage") == []
    gated.gate.set()
    [reply] = await slack_bot.emu.wait_for("chat.postMessage", timeout=20)
    assert reply.args["thread_ts"] == mention["ts"] and reply.args["channel"] == CHANNEL_ID
    assert reply.args["unfurl_links"] is False and reply.args["unfurl_media"] is False
    logged = await slack_bot.interaction()
    assert logged["decision"] in ("answer", "answer_with_caveat") and logged["asker"] == USER_ID
    urls = {c["url"] for c in logged["citations"]}
    assert urls and all(f"<{url}|" in sources_links(reply.args["blocks"]) for url in urls)
    kinds = [b["type"] for b in reply.args["blocks"]]
    assert "context_actions" in kinds and kinds[-1] == "actions"
    assert logged["slack"]["surface"] == "mention" and logged["latency_ms"]


async def test_web_api_calls_share_kept_alive_connections(slack_bot):
    """slack_sdk alone opens a connection per call; the bot gives every client one pooled session."""
    for n in range(3):
        await slack_bot.event(app_mention_event(ANSWERABLE, user=f"UPOOL{n}"), event_id=f"EvPool{n}")
        await slack_bot.emu.wait_for("chat.postMessage", count=n + 1, timeout=20)
    calls = [call for call in slack_bot.emu.calls if call.peer]
    assert len(calls) >= 3 and len({call.peer for call in calls}) < len(calls) / 2


async def test_dm_is_answered_in_its_thread(slack_bot):
    dm = message_event(ANSWERABLE, channel="D0DIRECT")
    _, reply = await slack_bot.next_post(slack_bot.event(dm))
    assert reply.args["channel"] == "D0DIRECT" and reply.args["thread_ts"] == dm["ts"]
    assert "context_actions" in json.dumps(reply.args["blocks"])


async def test_assistant_thread_prompts_status_title_and_answer(slack_bot):
    started = assistant_thread_started_event(channel="D0ASSIST")
    thread_ts = started["assistant_thread"]["thread_ts"]
    await slack_bot.event(started)
    await slack_bot.emu.wait_for("assistant.threads.setSuggestedPrompts")
    prompts = slack_bot.emu.workspace.assistant_threads[("D0ASSIST", thread_ts)]["prompts"]
    assert prompts and prompts[0]["message"]

    question = message_event(ANSWERABLE, channel="D0ASSIST", thread_ts=thread_ts)
    before = len(slack_bot.posts_in("D0ASSIST", thread_ts))
    await slack_bot.event(question)
    await slack_bot.emu.wait_for("chat.postMessage", len(slack_bot.emu.calls_to("chat.postMessage")) + 1, timeout=20)
    thread = slack_bot.emu.workspace.assistant_threads[("D0ASSIST", thread_ts)]
    assert blocks.FEEDBACK_ACTION in json.dumps(slack_bot.posts_in("D0ASSIST", thread_ts)[before].args["blocks"])
    assert "searching" in thread["status_history"][0] and thread["title"] == ANSWERABLE


async def test_follow_up_in_thread_without_mention_uses_the_thread(slack_bot):
    emu = slack_bot.emu
    mention = app_mention_event(ANSWERABLE)
    emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"])
    _, first = await slack_bot.next_post(slack_bot.event(mention))
    follow_up = message_event("and can a Starter plan use it?", thread_ts=mention["ts"])
    emu.add_message(CHANNEL_ID, follow_up["text"], ts=follow_up["ts"], thread_ts=mention["ts"])
    _, second = await slack_bot.next_post(slack_bot.event(follow_up))
    assert second.args["thread_ts"] == mention["ts"]
    logged = await slack_bot.interaction()
    assert logged["slack"]["surface"] == "followup"
    assert [turn["role"] for turn in logged["history"]] == ["user", "assistant"]
    assert "API key" in logged["history"][0]["text"]
    # a thanks is not a question; someone else's chatter is not a follow-up
    await slack_bot.event(message_event("thanks!", thread_ts=mention["ts"]))
    await slack_bot.event(message_event("lunch anyone?", user="U0OTHER", thread_ts=mention["ts"]))
    await slack_bot.state.tasks.drain(timeout=10)
    assert len(slack_bot.posts_in(CHANNEL_ID, mention["ts"])) == 2


async def test_attachments_it_cannot_read_are_named(slack_bot):
    event = message_event(ANSWERABLE, channel="D0DIRECT", subtype="file_share")
    event["files"] = [{"id": "F1", "name": "screenshot.png"}]
    _, reply = await slack_bot.next_post(slack_bot.event(event))
    assert "I can't read attachments yet: screenshot.png" in json.dumps(reply.args["blocks"])


class StreamingPipeline:
    """Streams the wrapped pipeline's answer text in small pieces, as the Claude generator does."""

    def __init__(self, inner):
        self.inner = inner

    async def answer(self, question, *, on_delta=None):
        answer = await self.inner.answer(question)
        text = answer.text + " More detail." * 20 + " Ping <!he"  # a ping split across deltas is still defused
        for start in range(0, len(text), 40):
            await on_delta(text[start : start + 40])
        await on_delta("re> ok")
        return answer


async def test_streamed_answer_ends_with_sources_and_feedback_blocks(slack_bot):
    slack_bot.state.settings.stream_answers = True
    responder = slack_bot.state.responder
    responder.pipeline = StreamingPipeline(responder.pipeline)
    dm = message_event(ANSWERABLE, channel="D0DIRECT")
    await slack_bot.event(dm)
    [stop] = await slack_bot.emu.wait_for("chat.stopStream", timeout=20)
    [start] = slack_bot.emu.calls_to("chat.startStream")
    assert start.args["thread_ts"] == dm["ts"]
    first = start.args.get("markdown_text") or "".join(c.get("text", "") for c in start.args.get("chunks") or [])
    assert 0 < len(first) <= 2 * 40  # the first words go out at once (two pieces at most), not after 600 characters
    message = slack_bot.emu.message("D0DIRECT", stop.response["ts"])
    logged = await slack_bot.interaction()
    assert message["text"].startswith(logged["answer"][:30]) and "<!" not in message["text"]
    assert "@here" not in message["text"] and message["text"].replace(blocks.WORD_JOINER, "").endswith("Ping @here ok")
    kinds = [b["type"] for b in stop.args["blocks"]]
    assert "context_actions" in kinds and any("*Sources*" in json.dumps(b) for b in stop.args["blocks"])
    assert slack_bot.emu.calls_to("chat.postMessage") == [] and logged["slack"]["streamed"] is True


async def test_healthz_and_metrics(slack_bot):
    await slack_bot.next_post(slack_bot.event(app_mention_event(ANSWERABLE)))
    async with slack_bot.session.get(f"{slack_bot.base_url}/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["ok"] is True
    async with slack_bot.session.get(f"{slack_bot.base_url}/metrics") as resp:
        text = await resp.text()
    assert 'supportbot_events_received_total{type="app_mention"} 1.0' in text
    assert "supportbot_answers_total{decision=" in text and "supportbot_event_ack_seconds_count 1.0" in text


async def test_auto_answer_channels_and_the_channel_allowlist(tmp_path, sample_settings, engine_parts):
    async with running_bot(
        tmp_path, sample_settings, engine_parts, allowed_channels=["C0HELP", "C0AUTO"], auto_answer_channels=["C0AUTO"]
    ) as bot:
        question = message_event(ANSWERABLE, channel="C0AUTO")  # no mention needed here
        _, reply = await bot.next_post(bot.event(question))
        assert reply.args["channel"] == "C0AUTO" and reply.args["thread_ts"] == question["ts"]
        await bot.event(message_event(ANSWERABLE, channel="C0HELP"))  # not auto-answered: needs a mention
        _, pointer = await bot.next_post(
            bot.event(app_mention_event(ANSWERABLE, channel="C0RANDOM")), "chat.postEphemeral"
        )
        assert "<#C0HELP>" in pointer.args["text"] and pointer.args["user"] == USER_ID
        await bot.state.tasks.drain(timeout=10)
        assert len(bot.emu.calls_to("chat.postMessage")) == 1


# --------------------------------------------------------------------------- 2. escalation


async def test_unanswerable_question_is_escalated_claimed_and_resolved(slack_bot):
    emu = slack_bot.emu
    mention = app_mention_event(UNANSWERABLE)
    emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"])
    await slack_bot.event(mention)
    await emu.wait_for("chat.postMessage", 2, timeout=20)
    [post] = slack_bot.posts_in(ESCALATION_CHANNEL)
    text = json.dumps(post.args["blocks"])
    assert f"<!subteam^{ONCALL}>" in text and f"<@{USER_ID}>" in text and "pickled herring" in text
    assert "Confidence" in text and "archives/C000CHAN" in text  # permalink
    [told] = slack_bot.posts_in(CHANNEL_ID, mention["ts"])
    assert "human" in told.args["text"]
    logged = await slack_bot.interaction()
    iid = logged["interaction_id"]
    assert logged["decision"] == "escalate"

    claim = block_actions_payload(
        blocks.CLAIM_ACTION, iid, user="U0ONCALL", channel=ESCALATION_CHANNEL, message_ts=post.response["ts"]
    )
    await slack_bot.click(claim)
    [update] = await emu.wait_for("chat.update")
    assert "Claimed by <@U0ONCALL>" in json.dumps(update.args["blocks"])

    resolve = block_actions_payload(
        blocks.RESOLVE_ACTION, iid, user="U0ONCALL", channel=ESCALATION_CHANNEL, message_ts=post.response["ts"]
    )
    await slack_bot.click(resolve)
    [opened] = await emu.wait_for("views.open")
    assert opened.args["view"]["private_metadata"] == iid
    submit = view_submission_payload(
        blocks.RESOLVE_VIEW,
        {blocks.RESOLVE_BLOCK: {blocks.RESOLVE_INPUT: {"type": "plain_text_input", "value": "Only on **Fridays**."}}},
        user="U0ONCALL",
        private_metadata=iid,
    )
    status, _, _ = await slack_bot.post(interactive_body(submit), "application/x-www-form-urlencoded")
    assert status == 200
    await emu.wait_for("chat.update", 2)
    relayed = slack_bot.posts_in(CHANNEL_ID, mention["ts"])[-1]
    assert "Only on *Fridays*." in json.dumps(relayed.args["blocks"])
    escalation = await slack_bot.store.get_escalation(iid)
    assert (escalation["status"], escalation["human_answer"], escalation["claimed_by"]) == (
        "resolved",
        "Only on **Fridays**.",
        "U0ONCALL",
    )
    final = emu.calls_to("chat.update")[-1].args["blocks"]
    assert "Resolved by" in json.dumps(final) and final[-1]["type"] != "actions"


async def test_a_bare_mention_gets_a_prompt_and_asking_for_a_person_hands_over(slack_bot):
    bare = app_mention_event(":wave:")  # a greeting with no question in it
    _, reply = await slack_bot.next_post(slack_bot.event(bare))
    assert "didn't find a question" in reply.args["text"] and "context_actions" not in json.dumps(reply.args)
    assert slack_bot.posts_in(ESCALATION_CHANNEL) == []

    person = app_mention_event("can I talk to a human please")
    await slack_bot.event(person)
    await slack_bot.emu.wait_for("chat.postMessage", 3)
    [post] = slack_bot.posts_in(ESCALATION_CHANNEL)
    assert "Draft answer" not in json.dumps(post.args["blocks"]) and "asked for a human" in json.dumps(post.args)
    [told] = slack_bot.posts_in(CHANNEL_ID, person["ts"])
    assert "handing this over to a person" in told.args["text"]


async def test_ask_a_human_button_escalates_once(slack_bot):
    _, reply = await slack_bot.next_post(slack_bot.event(app_mention_event(ANSWERABLE)))
    iid = (await slack_bot.interaction())["interaction_id"]
    click = block_actions_payload(
        blocks.ASK_HUMAN_ACTION, iid, message_ts=reply.response["ts"], thread_ts=reply.args["thread_ts"]
    )
    await slack_bot.click(click)
    await slack_bot.emu.wait_for("chat.postMessage", 3)
    assert len(slack_bot.posts_in(ESCALATION_CHANNEL)) == 1
    await slack_bot.click(click)
    await slack_bot.emu.wait_for("chat.postEphemeral")
    assert len(slack_bot.posts_in(ESCALATION_CHANNEL)) == 1
    assert (await slack_bot.store.get_escalation(iid))["trigger"] == "asked for a human"


# --------------------------------------------------------------------------- 3. feedback


async def test_thumbs_land_in_the_feedback_log_and_a_second_click_replaces_the_vote(slack_bot):
    _, reply = await slack_bot.next_post(slack_bot.event(app_mention_event(ANSWERABLE)))
    iid = (await slack_bot.interaction())["interaction_id"]
    feedback = next(b for b in reply.args["blocks"] if b["type"] == "context_actions")["elements"][0]
    for button in ("positive_button", "negative_button"):
        payload = block_actions_payload(
            blocks.FEEDBACK_ACTION,
            feedback[button]["value"],
            message_ts=reply.response["ts"],
            thread_ts=reply.args["thread_ts"],
        )
        payload["actions"][0]["type"] = "feedback_buttons"
        _, thanks = await slack_bot.next_post(slack_bot.click(payload), "chat.postEphemeral")
        votes = [row for row in slack_bot.store.feedback() if row["interaction_id"] == iid]
        assert len(votes) == 1 and thanks.args["user"] == USER_ID  # written before the thanks was sent
    assert votes[0]["rating"] == "down" and votes[0]["kind"] == "vote" and votes[0]["user"] == USER_ID


# --------------------------------------------------------------------------- 4. slash commands


@pytest.fixture
def small_knowledge(tmp_path):
    from tests.conftest import SAMPLE_KNOWLEDGE

    folder = tmp_path / "kb"
    folder.mkdir()
    for name in ("api/api-keys.md", "api/rate-limits.md"):
        shutil.copy(SAMPLE_KNOWLEDGE / name, folder / Path(name).name)
    return folder


async def test_kb_refresh_by_admin_reports_counts_and_others_are_refused(
    tmp_path, sample_settings, engine_parts, small_knowledge, embedder
):
    from knowledge.index import KnowledgeIndex

    own = sample_settings.model_copy(update={"data_dir": tmp_path / "data", "sources": [str(small_knowledge)]})
    parts = {**engine_parts, "index": KnowledgeIndex.from_settings(own, embedder)}
    async with running_bot(tmp_path, own, parts, admin_usergroup="S0ADMINS") as bot:
        bot.emu.add_usergroup("S0ADMINS", ["U0GROUPADMIN"])
        status, _ = await bot.command("/kb-refresh", user="U0NOBODY")
        assert status == 200
        [refusal] = await bot.emu.wait_for_response()  # through response_url, not chat.postEphemeral
        assert "only knowledge admins" in refusal["text"] and refusal["response_type"] == "ephemeral"
        assert not parts["index"].exists()

        status, _ = await bot.command("/kb-refresh", user="U0GROUPADMIN")  # admin through the user group
        [report] = await bot.emu.wait_for("chat.postMessage", timeout=40)
        assert status == 200 and "added 2" in report.args["text"] and "<@U0GROUPADMIN>" in report.args["text"]
        assert parts["index"].count_rows() > 0 and bot.emu.calls_to("usergroups.users.list")

        before = len(bot.emu.responses)
        status, text = await bot.command("/kb-status", user="U0NOBODY")
        assert status == 200 and text == ""  # acked at once; the numbers follow through response_url
        status_reply = (await bot.emu.wait_for_response(before + 1, timeout=20))[before]["text"]
        assert "2 documents" in status_reply and "version" in status_reply and str(tmp_path) not in status_reply
        assert "*Escalation*: not calibrated (fewer than 30 usable sections" in status_reply  # 2 documents: too few


# --------------------------------------------------------------------------- 5. safety


async def test_forged_and_stale_requests_get_401_and_no_answer(slack_bot):
    forged = await slack_bot.event(app_mention_event(ANSWERABLE), signed_with="not-the-secret")
    stale = await slack_bot.event(app_mention_event(ANSWERABLE), timestamp=int(time.time()) - 600)
    assert forged[0] == 401 and stale[0] == 401
    await slack_bot.state.tasks.drain(timeout=5)
    assert slack_bot.emu.calls_to("chat.postMessage") == []


async def test_slack_retry_of_the_same_event_is_not_answered_twice(slack_bot):
    mention = app_mention_event(ANSWERABLE)
    await slack_bot.next_post(slack_bot.event(mention, event_id="Ev0SAME"))
    status, _, _ = await slack_bot.event(
        mention, event_id="Ev0SAME", headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    again = await slack_bot.event(mention)  # a new event id for the same message (e.g. two subscriptions)
    await slack_bot.state.tasks.drain(timeout=10)
    assert status == 200 and again[0] == 200 and len(slack_bot.emu.calls_to("chat.postMessage")) == 1


async def test_own_and_other_bots_messages_are_ignored(slack_bot):
    await slack_bot.event(message_event(ANSWERABLE, channel="D0DIRECT", user=BOT_USER_ID, bot_id=BOT_ID))
    await slack_bot.event(
        message_event(ANSWERABLE, channel="D0DIRECT", user="U0OTHERBOT", bot_id="B0OTHER", subtype="bot_message")
    )
    await slack_bot.event(message_event(ANSWERABLE, channel="D0DIRECT", subtype="message_changed"))
    await slack_bot.state.tasks.drain(timeout=5)
    assert slack_bot.emu.calls_to("chat.postMessage") == []


async def test_a_429_from_slack_is_retried_and_the_answer_still_arrives(slack_bot):
    slack_bot.emu.rate_limit("chat.postMessage", times=1, retry_after=1)
    mention = app_mention_event(ANSWERABLE)
    await slack_bot.event(mention)
    calls = await slack_bot.emu.wait_for("chat.postMessage", 2, timeout=20)
    assert [c.status for c in calls] == [429, 200] and calls[1].args["thread_ts"] == mention["ts"]


async def test_other_workspaces_are_dropped(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts, allowed_team_ids=["T0OTHER"]) as bot:
        status, _, _ = await bot.event(app_mention_event(ANSWERABLE))
        await bot.state.tasks.drain(timeout=5)
        assert status == 200 and bot.emu.calls_to("chat.postMessage") == []


def test_production_refuses_to_start_without_a_signing_secret(sample_settings):
    settings = sample_settings.model_copy(update={"slack_bot_token": SecretStr("xoxb-x"), "production": True})
    with pytest.raises(ConfigurationError, match="SLACK_SIGNING_SECRET"):
        create_app(settings, pipeline=None, store=None, index=None)
    with pytest.raises(ConfigurationError, match="SLACK_APP_TOKEN"):
        create_app(settings, pipeline=None, store=None, index=None, socket_mode=True)
    socket_settings = settings.model_copy(update={"slack_app_token": SecretStr("xapp-x")})
    create_app(socket_settings, pipeline=None, store=None, index=None, socket_mode=True)  # Socket Mode signs nothing


async def test_typed_here_markup_is_decoded_once_and_stays_literal_text(slack_bot):
    """Slack escapes what people type, so a typed `<!here>` arrives as `&lt;!here&gt;`. Decoded once,
    at the Slack edge, it is the text `<!here>`; decoded again in the engine it became the ping `@here`."""
    mention = app_mention_event("How do I create an API key? Our runbook starts with &lt;!here&gt; &amp; a key")
    await slack_bot.next_post(slack_bot.event(mention))
    logged = await slack_bot.interaction()
    assert logged["question"] == "How do I create an API key? Our runbook starts with <!here> & a key"
    assert "<!here>" in logged["search_query"] and "@here" not in logged["search_query"]


def test_create_app_returns_the_state_and_attaches_nothing_to_the_bolt_app(sample_settings):
    from slack_bolt.async_app import AsyncApp

    settings = sample_settings.model_copy(
        update={"slack_bot_token": SecretStr("xoxb-x"), "slack_app_token": SecretStr("xapp-x")}
    )
    state = create_app(settings, pipeline=None, store=None, index=None, socket_mode=True)
    assert isinstance(state, SupportBot) and isinstance(state.app, AsyncApp) and state.socket_mode
    assert state.client is state.app.client and not hasattr(state.app, "supportbot")


async def test_serve_runs_the_http_endpoint_until_cancelled(tmp_path, sample_settings, unused_tcp_port):
    from bot.slack.app import build_bot, serve

    settings = sample_settings.model_copy(
        update={"slack_bot_token": SecretStr("xoxb-test"), "slack_signing_secret": SecretStr(SECRET)}
    )
    events: list[str] = []

    class Job:  # what the CLI passes (the weekly eval scheduler): started with the bot, stopped before it drains
        def start(self) -> None:
            events.append("start")

        async def stop(self) -> None:
            events.append("stop")

    server = asyncio.create_task(serve(build_bot(settings), host="127.0.0.1", port=unused_tcp_port, background=[Job()]))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # model loading takes a few seconds on a busy machine
                try:
                    async with session.get(f"http://127.0.0.1:{unused_tcp_port}/healthz") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("serve() never answered /healthz")
            status, _, _ = await BotUnderTest(None, None, f"http://127.0.0.1:{unused_tcp_port}", session, None).event(
                app_mention_event(ANSWERABLE), signed_with="forged"
            )
            assert status == 401
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    assert events == ["start", "stop"]


async def test_a_user_over_the_rate_limit_is_told_they_are_queued(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts, user_rate_per_minute=1) as bot:
        await bot.next_post(bot.event(app_mention_event(ANSWERABLE)))
        second = app_mention_event("How do I rotate an API key?")
        _, queued = await bot.next_post(bot.event(second))
        assert queued.args["thread_ts"] == second["ts"] and "in the queue" in queued.args["text"]


# --------------------------------------------------------------------------- 6. Socket Mode


async def test_mention_over_socket_mode(tmp_path, sample_settings, engine_parts):
    async with SlackEmulator() as emu:
        settings = sample_settings.model_copy(
            update={
                "slack_bot_token": SecretStr("xoxb-test"),
                "slack_app_token": SecretStr("xapp-test"),
                "slack_api_url": emu.api_url,
            }
        )
        state = create_app(
            settings,
            build_pipeline(settings, engine_parts),
            InteractionStore(tmp_path / "logs"),
            engine_parts["index"],
            socket_mode=True,
        )
        handler = create_socket_mode_handler(state)
        await handler.connect_async()
        try:
            await asyncio.wait_for(emu.socket_connected.wait(), 5)
            mention = app_mention_event(ANSWERABLE)
            ack = await emu.socket_send_event(event_callback(mention))
            assert ack["envelope_id"]
            [reply] = await emu.wait_for("chat.postMessage", timeout=20)
            assert reply.args["thread_ts"] == mention["ts"] and "*Sources*" in json.dumps(reply.args["blocks"])
        finally:
            await handler.close_async()
            await state.tasks.close()


async def test_socket_mode_serves_health_and_metrics_but_no_http_events(tmp_path, sample_settings, engine_parts):
    """The container HEALTHCHECK works in Socket Mode too; events never arrive unsigned over HTTP."""
    settings = sample_settings.model_copy(
        update={
            "slack_bot_token": SecretStr("xoxb-test"),
            "slack_app_token": SecretStr("xapp-test"),
            "data_dir": tmp_path / "data",
        }
    )
    state = create_app(
        settings,
        build_pipeline(settings, engine_parts),
        InteractionStore(tmp_path / "logs"),
        engine_parts["index"],
        socket_mode=True,
    )
    runner = web.AppRunner(create_web_app(state, events=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 200 and "supportbot_" in await response.text()
            async with session.post(f"{base}/slack/events", data=b"{}") as response:
                assert response.status == 404
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- weekly eval digest


async def test_weekly_digest_is_posted_to_the_report_channel_once(slack_bot, tmp_path):
    """The scheduler `serve` starts: a due run posts its digest through the bot's Slack client, once."""
    from datetime import datetime, timedelta, timezone

    from bot.slack.app import digest_poster
    from evals.weekly import WeeklyResult, WeeklyScheduler

    settings = slack_bot.state.settings.model_copy(
        update={"data_dir": tmp_path / "weekly", "weekly_eval": True, "eval_report_channel": "C0EVALS"}
    )
    runs = []

    async def job(settings_, **options):
        runs.append(options)
        return WeeklyResult("*Weekly eval*: recall@5 0.91, escalation AUROC 0.93", {}, {}, "")

    now = [datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)]  # a Monday, before the 09:00 slot
    scheduler = WeeklyScheduler(
        settings, post_digest=digest_poster(slack_bot.state.client, settings.eval_report_channel), marker="x"
    )
    scheduler.job, scheduler.clock = job, lambda: now[0]
    assert await scheduler.run_if_due() is None  # armed now; the first slot is 09:00
    now[0] += timedelta(hours=2)
    assert "recall@5 0.91" in await scheduler.run_if_due()
    assert await scheduler.run_if_due() is None  # not again until next week
    [post] = slack_bot.emu.calls_to("chat.postMessage")
    assert post.args["channel"] == "C0EVALS" and "AUROC 0.93" in post.args["text"]
    assert runs == [{"marker": "x"}]
