"""Never silent, never twice: the bot end to end against the strict Slack emulator with faults.

The fault matrix injects each Slack failure at each place the bot posts (the answer, a streamed
answer, the escalation post, the notice to the asker) and checks, in every cell, that the asker
sees exactly one visible outcome (in the thread, or by DM when the channel refuses the bot) and
that every failure the bot met reached the alerts channel with its error code.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import SecretStr

from bot.engine.claude import STREAM_CUT
from bot.engine.pipeline import FALLBACK_NOTE
from bot.slack import blocks
from tests.emulators.anthropic_api import AnthropicEmulator, Reply
from tests.emulators.slack_payloads import CHANNEL_ID, USER_ID, app_mention_event, block_actions_payload
from tests.test_slack_e2e import (
    ANSWERABLE,
    ESCALATION_CHANNEL,
    UNANSWERABLE,
    StreamingPipeline,
    running_bot,
)

pytestmark = pytest.mark.timeout(300)  # the first test also builds the shared sample index

ALERTS = "C0ALERTS"


PARTIAL = "Partial Claude text that was cut off midway. " * 20  # past the Slack stream's 600-character buffer


def cut_stream_settings(emu, how: str) -> dict:
    """Claude (the real SDK, against the Anthropic emulator) whose streamed answer is cut midway:
    ~800 characters of text deltas, then the connection drops or an `error` event comes."""
    emu.when(lambda body: bool(body.get("stream")), Reply(text=PARTIAL, delta_chars=40, cut_after=20, cut=how))
    return {
        "anthropic_api_key": SecretStr("test-key"),
        "anthropic_base_url": emu.base_url,
        "anthropic_max_retries": 0,
    }


def visible_to_asker(emu, channel: str, thread_ts: str) -> list[dict]:
    """Bot messages the asker can see about their question: in its thread, or in their DM."""
    in_thread = [
        m
        for m in emu.workspace.messages.get(channel, [])
        if m.get("bot_id") and m.get("thread_ts") == thread_ts and (m.get("text") or m.get("blocks"))
    ]
    dm = emu.workspace.dm_channels.get(USER_ID)
    in_dm = [m for m in emu.workspace.messages.get(dm, []) if m.get("bot_id")] if dm else []
    return in_thread + in_dm


def alerts_text(emu) -> str:
    return "\n".join(m["text"] for m in emu.workspace.messages.get(ALERTS, []))


# fault name -> (methods it hits, how): applied to the site's predicate
FAULTS = [
    "http_500_once",
    "http_503_x3",
    "http_429_x4",
    "msg_blocks_too_long",
    "invalid_blocks",
    "not_in_channel",
    "channel_not_found",
    "start_stream_failure",
    "cut_claude_stream",
    "claude_stream_error_event",
]
CUT_STREAM = {"cut_claude_stream": "drop", "claude_stream_error_event": "error"}
SITES = ["answer", "stream", "escalation", "notice"]
# the error code an alert must name, when the fault outlives the SDK's retries
EXPECTED_CODE = {
    "http_503_x3": "http_503",
    "http_429_x4": "ratelimited",
    "msg_blocks_too_long": "msg_blocks_too_long",
    "invalid_blocks": "invalid_blocks",
    "not_in_channel": "not_in_channel",
    "channel_not_found": "channel_not_found",
    "start_stream_failure": "http_500",
    "cut_claude_stream": STREAM_CUT,
    "claude_stream_error_event": STREAM_CUT,
}


def inject(emu, fault: str, site: str, ask_ts: str) -> None:
    streaming_methods = ["chat.startStream", "chat.appendStream", "chat.stopStream"]
    if site == "escalation":
        channel, methods = ESCALATION_CHANNEL, ["chat.postMessage"]

        def when(args):
            return args.get("channel") == ESCALATION_CHANNEL
    elif site == "notice":  # the hand-off notice in the asker's thread (after the escalation post)
        channel, methods = CHANNEL_ID, ["chat.postMessage"]

        def when(args):
            return args.get("channel") == CHANNEL_ID and args.get("thread_ts") == ask_ts
    elif site == "stream":
        channel, methods = CHANNEL_ID, streaming_methods

        def when(args):
            return args.get("channel") == CHANNEL_ID
    else:
        channel, methods = CHANNEL_ID, ["chat.postMessage"]

        def when(args):
            return args.get("channel") == CHANNEL_ID and args.get("thread_ts") == ask_ts

    if fault == "not_in_channel":
        emu.add_channel(channel, is_member=False)  # the real thing: every post there fails
        return
    if fault == "start_stream_failure":
        emu.inject("chat.startStream", status=500, times=3)
        return
    if fault in CUT_STREAM:
        return
    for method in methods if fault != "invalid_blocks" or site != "stream" else ["chat.stopStream"]:
        if fault == "http_500_once":
            emu.inject(method, status=500, times=1, when=when)
        elif fault == "http_503_x3":
            emu.inject(method, status=503, times=3, when=when)
        elif fault == "http_429_x4":
            emu.inject(method, status=429, times=4, retry_after=0, when=when)
        elif fault == "channel_not_found":
            emu.inject(method, error="channel_not_found", times=50, when=when)
        elif fault in ("msg_blocks_too_long", "invalid_blocks"):
            emu.inject(method, error=fault, times=1, when=lambda args: when(args) and "blocks" in args)


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_matrix_asker_sees_one_outcome_and_admins_are_told(
    tmp_path, sample_settings, engine_parts, fault, site
):
    streaming = site == "stream" or fault in ("start_stream_failure", *CUT_STREAM)
    async with AnthropicEmulator() as claude:
        claude_settings = cut_stream_settings(claude, CUT_STREAM[fault]) if fault in CUT_STREAM else {}
        async with running_bot(
            tmp_path, sample_settings, engine_parts, alerts_channel=ALERTS, stream_answers=streaming, **claude_settings
        ) as bot:
            await run_fault_cell(bot, claude, fault, site, streaming)


async def run_fault_cell(bot, claude, fault: str, site: str, streaming: bool) -> None:
    responder = bot.state.responder
    if streaming and fault not in CUT_STREAM:
        responder.pipeline = StreamingPipeline(responder.pipeline)
    question = UNANSWERABLE if site in ("escalation", "notice") else ANSWERABLE
    mention = app_mention_event(question)
    bot.emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"])
    inject(bot.emu, fault, site, mention["ts"])
    status, _, _ = await bot.event(mention)
    assert status == 200
    await bot.state.tasks.drain(timeout=60)

    seen = visible_to_asker(bot.emu, CHANNEL_ID, mention["ts"])
    assert len(seen) == 1, (fault, site, [m.get("text", "")[:80] for m in seen])
    shown = seen[0]
    assert "Partial Claude text" not in json.dumps(shown)  # a cut stream never stays behind
    assert not bot.emu.workspace.open_streams  # no stream left open with half an answer
    code = EXPECTED_CODE.get(fault)
    if code is not None:
        assert code in alerts_text(bot.emu), (fault, site, alerts_text(bot.emu))
    if fault == "http_500_once":  # retried inside the SDK: delivered as usual, nothing to alert
        assert bot.emu.pending_faults("chat.postMessage") == 0
        if site in ("escalation", "notice"):  # and the case really reached the humans
            posted = [m for m in bot.emu.workspace.messages.get(ESCALATION_CHANNEL, []) if m.get("bot_id")]
            assert len(posted) == 1, (fault, site, len(posted))
    if fault in CUT_STREAM:  # the real SDK met the cut, after the partial text had reached Slack
        assert claude.last.stream and claude.last.status == 200
        streamed = [c.args for m in ("chat.startStream", "chat.appendStream") for c in bot.emu.calls_to(m)]
        assert "Partial Claude text" in json.dumps(streamed)
        logged = await bot.interaction()
        assert logged["generator"] == "extractive-fallback" and STREAM_CUT in logged["fallback_reason"]
        if logged["decision"] in ("answer", "answer_with_caveat"):  # the store holds what the asker sees
            assert logged["answer"].startswith(FALLBACK_NOTE) and shown["text"].startswith(FALLBACK_NOTE[:30])


async def test_fifty_concurrent_ask_a_human_clicks_make_one_post(tmp_path, sample_settings, engine_parts):
    async with running_bot(tmp_path, sample_settings, engine_parts) as bot:
        mention = app_mention_event(ANSWERABLE)
        _, reply = await bot.next_post(bot.event(mention))
        iid = (await bot.interaction())["interaction_id"]
        click = block_actions_payload(
            blocks.ASK_HUMAN_ACTION, iid, message_ts=reply.response["ts"], thread_ts=reply.args["thread_ts"]
        )
        statuses = await asyncio.gather(*(bot.click(click) for _ in range(50)))
        assert statuses == [200] * 50
        await bot.state.tasks.drain(timeout=60)
        assert len(bot.posts_in(ESCALATION_CHANNEL)) == 1
        assert (await bot.store.get_escalation(iid))["status"] == "open"


async def test_a_rate_limited_stream_start_posts_the_answer_at_once(tmp_path, sample_settings, engine_parts):
    """Tier 2: when startStream is rate-limited, the answer is posted normally without waiting out Retry-After."""
    import time

    async with running_bot(tmp_path, sample_settings, engine_parts, alerts_channel=ALERTS, stream_answers=True) as bot:
        responder = bot.state.responder
        responder.pipeline = StreamingPipeline(responder.pipeline)
        bot.emu.inject("chat.startStream", status=429, retry_after=30, times=5)
        mention = app_mention_event(ANSWERABLE)
        bot.emu.add_message(CHANNEL_ID, mention["text"], ts=mention["ts"])
        started = time.monotonic()
        await bot.event(mention)
        await bot.state.tasks.drain(timeout=25)
        assert time.monotonic() - started < 25  # not 30 s per Retry-After
        [shown] = visible_to_asker(bot.emu, CHANNEL_ID, mention["ts"])
        assert "context_actions" in json.dumps(shown.get("blocks")) and "ratelimited" in alerts_text(bot.emu)


async def test_a_failure_outside_the_pipeline_still_tells_the_asker_and_the_admins(
    tmp_path, sample_settings, engine_parts
):
    """A bug or transport error around the engine (not a Slack error code): an apology in the thread,
    an alert naming it, and the question closed as done."""
    async with running_bot(tmp_path, sample_settings, engine_parts, alerts_channel=ALERTS) as bot:
        responder = bot.state.responder

        async def broken(*_args, **_kwargs):
            raise ConnectionResetError("peer went away")

        responder._respond = broken
        mention = app_mention_event(ANSWERABLE)
        await bot.event(mention)
        await bot.state.tasks.drain(timeout=60)
        seen = visible_to_asker(bot.emu, CHANNEL_ID, mention["ts"])
        assert len(seen) == 1 and "Sorry, something went wrong" in seen[0]["text"]
        assert "error (ConnectionResetError)" in alerts_text(bot.emu)
