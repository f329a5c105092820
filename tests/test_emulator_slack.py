"""The Slack emulator speaks the real slack_sdk clients' wire protocol (HTTP Web API + Socket Mode)."""

import asyncio
import json

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.emulators.slack_api import SlackEmulator, manifest_scopes
from tests.emulators.slack_payloads import app_mention_event, event_callback, new_trigger_id, sign_request

pytestmark = pytest.mark.timeout(15)  # pytest-timeout


@pytest.fixture
async def emu():
    # more than the bot's manifest grants: these tests exercise every method the emulator has
    extra = {"users:read", "channels:read", "groups:read", "im:read", "reactions:write"}
    async with SlackEmulator(scopes=manifest_scopes() | extra) as emulator:
        yield emulator


@pytest.fixture
def client(emu):
    return AsyncWebClient(token="xoxb-test", base_url=emu.api_url)


async def test_auth_test_reports_bot_identity_and_records_authorization(emu, client):
    resp = await client.auth_test()
    assert (resp["team_id"], resp["bot_id"], resp["user"]) == ("T000TEST", "B000BOT", "supportbot")
    [call] = emu.calls_to("auth.test")
    assert call.authorization == "Bearer xoxb-test" and call.token == "xoxb-test"


async def test_bad_token_and_missing_channel_are_api_errors(emu):
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(token="nope", base_url=emu.api_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(token="xoxb-test", base_url=emu.api_url).chat_postMessage(channel="", text="x")
    assert err.value.response["error"] == "channel_not_found"


async def test_post_message_then_replies_shows_thread(emu, client):
    parent = emu.add_message("C123", "my printer is on fire", user="U777")
    first = await client.chat_postMessage(
        channel="C123",
        text="on it",
        thread_ts=parent["ts"],
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "on it"}}],
    )
    second = await client.chat_postMessage(channel="C123", text="done", thread_ts=parent["ts"])
    assert float(second["ts"]) > float(first["ts"])
    assert first["message"]["blocks"][0]["type"] == "section" and first["message"]["bot_id"] == "B000BOT"

    replies = await client.conversations_replies(channel="C123", ts=parent["ts"])
    texts = [m["text"] for m in replies["messages"]]
    assert texts == ["my printer is on fire", "on it", "done"]
    assert replies["messages"][0]["reply_count"] == 2
    calls = await emu.wait_for("chat.postMessage", count=2)
    assert calls[0].args["thread_ts"] == parent["ts"] and calls[0].http_method == "POST"


async def test_get_permalink(emu, client):
    resp = await client.chat_getPermalink(channel="C123", message_ts="1700000000.000100")
    assert resp["permalink"] == "https://emulator.slack.test/archives/C123/p1700000000000100"


async def test_stream_start_append_stop_assembles_text(emu, client):
    parent = emu.add_message("D123", "question?")
    start = await client.chat_startStream(channel="D123", thread_ts=parent["ts"], markdown_text="Hello")
    await client.chat_appendStream(channel="D123", ts=start["ts"], markdown_text=", wor")
    stop = await client.chat_stopStream(
        channel="D123",
        ts=start["ts"],
        markdown_text="ld!",
        blocks=[
            {
                "type": "context_actions",
                "elements": [
                    {
                        "type": "feedback_buttons",
                        "action_id": "fb",
                        "positive_button": {"text": {"type": "plain_text", "text": "👍"}, "value": "up"},
                        "negative_button": {"text": {"type": "plain_text", "text": "👎"}, "value": "down"},
                    }
                ],
            }
        ],
    )
    assert stop["message"]["text"] == "Hello, world!"
    assert emu.message("D123", start["ts"])["blocks"][0]["type"] == "context_actions"
    with pytest.raises(SlackApiError) as err:
        await client.chat_appendStream(channel="D123", ts=start["ts"], markdown_text="late")
    assert err.value.response["error"] == "message_not_in_streaming_state"


async def test_sdk_chat_stream_helper_sends_markdown_chunks(emu, client):
    parent = emu.add_message("C123", "question?")
    with pytest.raises(SlackApiError, match="missing_recipient_team_id"):
        await client.chat_startStream(channel="C123", thread_ts=parent["ts"], markdown_text="x")
    streamer = await client.chat_stream(
        channel="C123", thread_ts=parent["ts"], buffer_size=5, recipient_team_id="T000TEST", recipient_user_id="U777"
    )
    for piece in ["Strea", "ming ", "works"]:
        await streamer.append(markdown_text=piece)
    await streamer.stop()
    assert emu.thread("C123", parent["ts"])[-1]["text"] == "Streaming works"


async def test_stateful_seeded_lookups_views_reactions_and_assistant(emu, client):
    emu.add_user("U777", real_name="Ada Lovelace", tz="Europe/London")
    emu.add_usergroup("S0ONCALL", ["U777", "U888"])
    assert (await client.users_info(user="U777"))["user"]["real_name"] == "Ada Lovelace"
    assert (await client.usergroups_users_list(usergroup="S0ONCALL"))["users"] == ["U777", "U888"]
    assert (await client.conversations_info(channel="D123"))["channel"]["is_im"] is True
    assert (await client.conversations_info(channel="C123"))["channel"]["is_private"] is False

    posted = await client.chat_postMessage(channel="C123", text="draft")
    await client.chat_update(channel="C123", ts=posted["ts"], text="final")
    await client.reactions_add(channel="C123", timestamp=posted["ts"], name="white_check_mark")
    [msg] = (await client.conversations_replies(channel="C123", ts=posted["ts"]))["messages"]
    assert msg["text"] == "final" and msg["reactions"][0]["name"] == "white_check_mark"
    assert (await client.chat_postEphemeral(channel="C123", user="U777", text="psst"))["message_ts"]

    view = {"type": "modal", "title": {"type": "plain_text", "text": "Ticket"}, "blocks": []}
    opened = await client.views_open(trigger_id=new_trigger_id(), view=view)
    updated = await client.views_update(view_id=opened["view"]["id"], view={**view, "callback_id": "ticket"})
    assert updated["view"]["id"] == opened["view"]["id"] and updated["view"]["callback_id"] == "ticket"

    await client.assistant_threads_setStatus(channel_id="D123", thread_ts="1.2", status="is thinking...")
    await client.assistant_threads_setStatus(channel_id="D123", thread_ts="1.2", status="")
    await client.assistant_threads_setTitle(channel_id="D123", thread_ts="1.2", title="Printer")
    thread = emu.workspace.assistant_threads[("D123", "1.2")]
    assert thread["status_history"] == ["is thinking...", ""] and thread["title"] == "Printer"


async def test_rate_limited_call_is_retried_after_retry_after(emu):
    client = AsyncWebClient(
        token="xoxb-test", base_url=emu.api_url, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)]
    )
    emu.rate_limit("chat.postMessage", times=1, retry_after=1)
    resp = await client.chat_postMessage(channel="C123", text="hi")
    assert resp["ok"] is True
    calls = emu.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].time - calls[0].time >= 1


async def test_injected_failure_and_unknown_method(emu, client):
    emu.fail("reactions.add", error="already_reacted")
    with pytest.raises(SlackApiError, match="already_reacted"):
        await client.reactions_add(channel="C123", timestamp="1.2", name="eyes")
    with pytest.raises(SlackApiError) as err:
        await client.api_call("does.notExist", json={})
    assert err.value.response.status_code == 200
    assert err.value.response.data == {"ok": False, "error": "unknown_method"}


async def test_socket_mode_client_receives_event_and_acks(emu):
    web_client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
    socket_client = SocketModeClient(app_token="xapp-test", web_client=web_client, auto_reconnect_enabled=False)
    received: list[SocketModeRequest] = []

    async def listener(client: SocketModeClient, req: SocketModeRequest) -> None:
        received.append(req)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    socket_client.socket_mode_request_listeners.append(listener)
    try:
        await socket_client.connect()
        await asyncio.wait_for(emu.socket_connected.wait(), 5)
        [open_call] = emu.calls_to("apps.connections.open")
        assert open_call.token == "xapp-test"

        body = event_callback(app_mention_event("help me"))
        ack = await emu.socket_send_event(body)
        assert received[0].type == "events_api" and received[0].payload["event"]["text"] == "<@U000BOT> help me"
        assert ack == {"envelope_id": received[0].envelope_id}
    finally:
        await socket_client.close()


async def test_sign_request_matches_sdk_verifier():
    body = json.dumps(event_callback(app_mention_event("hi"))).encode()
    headers = sign_request("s3cret", body)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)
    old = sign_request("s3cret", body, timestamp=1_000)
    assert old["X-Slack-Request-Timestamp"] == "1000" and not verifier.is_valid_request(body, old)
