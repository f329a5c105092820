"""The Slack emulator refuses what Slack refuses, so the bot meets Slack's real rules in tests first.

Each test talks to the emulator through the real slack_sdk client, as the bot does.
"""

from __future__ import annotations

import time

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.emulators.slack_api import SlackEmulator, manifest_scopes, validate_message_blocks
from tests.emulators.slack_payloads import new_trigger_id

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def emu():
    async with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu):
    return AsyncWebClient(token="xoxb-test", base_url=emu.api_url)


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def error_of(call) -> str:
    with pytest.raises(SlackApiError) as err:
        await call
    return err.value.response["error"]


@pytest.mark.parametrize(
    "blocks, why",
    [
        ([section("x" * 3001)], "section text over 3000"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "header over 150"),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}], "header must be plain_text"),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "b" * 76},
                            "action_id": "a",
                            "value": "v",
                        }
                    ],
                }
            ],
            "button text over 75",
        ),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "b"},
                            "action_id": "a" * 256,
                            "value": "v",
                        }
                    ],
                }
            ],
            "action_id over 255",
        ),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "b"},
                            "action_id": "a",
                            "value": "v" * 2001,
                        }
                    ],
                }
            ],
            "value over 2000",
        ),
        ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}], "context over 10 elements"),
        ([{"type": "context", "elements": []}], "empty context"),
        ([section("")], "empty text"),
        ([{"type": "sectoin", "text": {"type": "mrkdwn", "text": "typo"}}], "unknown block type"),
        ([section("a") | {"block_id": "same"}, section("b") | {"block_id": "same"}], "duplicate block_id"),
        ([section("a")] * 51, "more than 50 blocks"),
    ],
)
async def test_invalid_blocks_are_refused(client, blocks, why):
    assert await error_of(client.chat_postMessage(channel="C01", text="t", blocks=blocks)) == "invalid_blocks", why


async def test_total_block_text_over_about_12000_is_msg_blocks_too_long(client):
    five = [section("y" * 2500) for _ in range(5)]  # every block valid, 12,500 characters in all
    assert await error_of(client.chat_postMessage(channel="C01", text="t", blocks=five)) == "msg_blocks_too_long"
    assert (await client.chat_postMessage(channel="C01", text="t", blocks=five[:4]))["ok"]  # 10,000 is fine
    with pytest.raises(Exception) as err:
        validate_message_blocks(five)
    assert "msg_blocks_too_long" in str(err.value)


async def test_a_channel_the_bot_is_not_in_is_not_in_channel(emu, client):
    emu.add_channel("C0OUTSIDE", is_member=False)
    assert await error_of(client.chat_postMessage(channel="C0OUTSIDE", text="hi")) == "not_in_channel"
    assert await error_of(client.chat_postEphemeral(channel="C0OUTSIDE", user="U1", text="hi")) == "not_in_channel"
    assert await error_of(client.conversations_replies(channel="C0OUTSIDE", ts="1.1")) == "not_in_channel"


async def test_a_dm_addressed_by_user_id_lands_in_the_dm_channel(emu, client):
    posted = await client.chat_postMessage(channel="U0SOMEONE", text="hello")
    assert posted["channel"].startswith("D") and emu.message(posted["channel"], posted["ts"])["text"] == "hello"


async def test_scopes_come_from_the_manifest(emu, client):
    assert "reactions:write" not in manifest_scopes() or True  # whatever it says, the emulator follows it
    strict = SlackEmulator(scopes={"chat:write"})
    await strict.start()
    try:
        narrow = AsyncWebClient(token="xoxb-test", base_url=strict.api_url)
        with pytest.raises(SlackApiError) as err:
            await narrow.conversations_replies(channel="C01", ts="1.1")
        assert err.value.response["error"] == "missing_scope" and err.value.response["needed"] == "channels:history"
        with pytest.raises(SlackApiError) as err:
            await narrow.reactions_add(channel="C01", timestamp="1.1", name="eyes")
        assert err.value.response["needed"] == "reactions:write"
        assert (await narrow.auth_test()).headers["X-OAuth-Scopes"] == "chat:write"
    finally:
        await strict.stop()
    emu.add_channel("G0GROUPDM", is_mpim=True)
    granted = manifest_scopes()
    replies = client.conversations_replies(channel="G0GROUPDM", ts="1.1")
    if "mpim:history" in granted:
        assert await error_of(replies) == "thread_not_found"
    else:
        assert await error_of(replies) == "missing_scope"


async def test_tier_2_stream_methods_are_rate_limited(emu):
    client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)  # no retry handler: see the 429
    parent = emu.add_message("D01", "q")
    for _ in range(20):
        await client.chat_startStream(channel="D01", thread_ts=parent["ts"], markdown_text="x")
    with pytest.raises(SlackApiError) as err:
        await client.chat_startStream(channel="D01", thread_ts=parent["ts"], markdown_text="x")
    assert err.value.response.status_code == 429 and int(err.value.response.headers["Retry-After"]) >= 1


async def test_conversations_replies_pages_with_limit_and_cursor(emu, client):
    parent = emu.add_message("C01", "parent")
    for n in range(7):
        emu.add_message("C01", f"reply {n}", thread_ts=parent["ts"])
    first = await client.conversations_replies(channel="C01", ts=parent["ts"], limit=3)
    assert len(first["messages"]) == 3 and first["has_more"] is True
    texts, cursor = [m["text"] for m in first["messages"]], first["response_metadata"]["next_cursor"]
    while cursor:
        page = await client.conversations_replies(channel="C01", ts=parent["ts"], limit=3, cursor=cursor)
        texts += [m["text"] for m in page["messages"]]
        cursor = page["response_metadata"]["next_cursor"]
    assert texts == ["parent"] + [f"reply {n}" for n in range(7)]


async def test_conversations_history_is_newest_first_top_level_paged_and_bounded_by_oldest(emu, client):
    old = emu.add_message("C01", "before", ts="1700000000.000100")
    parent = emu.add_message("C01", "parent", ts="1700000100.000100")
    emu.add_message("C01", "a reply", thread_ts=parent["ts"], ts="1700000101.000100")
    for n in range(4):
        emu.add_message("C01", f"top {n}", ts=f"17000002{n:02d}.000100")
    first = await client.conversations_history(channel="C01", oldest=old["ts"], limit=3)
    assert [m["text"] for m in first["messages"]] == ["top 3", "top 2", "top 1"] and first["has_more"]
    rest = await client.conversations_history(
        channel="C01", oldest=old["ts"], limit=3, cursor=first["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in rest["messages"]] == ["top 0", "parent"] and not rest["has_more"]
    emu.add_channel("C0NOTIN", is_member=False)
    assert await error_of(client.conversations_history(channel="C0NOTIN")) == "not_in_channel"


def test_markdown_blocks_are_limited_to_12000_characters_together():
    validate_message_blocks([{"type": "markdown", "text": "x" * 11_000}])
    with pytest.raises(Exception, match="invalid_blocks"):
        validate_message_blocks([{"type": "markdown", "text": "x" * 12_001}])
    with pytest.raises(Exception, match="msg_blocks_too_long"):
        validate_message_blocks([{"type": "markdown", "text": "x" * 6_500}, {"type": "markdown", "text": "y" * 6_500}])
    with pytest.raises(Exception, match="invalid_blocks"):
        validate_message_blocks([{"type": "markdown", "text": ""}])


async def test_trigger_ids_expire_after_3_seconds_and_work_once(client):
    view = {"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": []}
    trigger = new_trigger_id()
    assert (await client.views_open(trigger_id=trigger, view=view))["ok"]
    assert await error_of(client.views_open(trigger_id=trigger, view=view)) == "expired_trigger_id"
    stale = new_trigger_id(time.time() - 4)
    assert await error_of(client.views_open(trigger_id=stale, view=view)) == "expired_trigger_id"
    assert await error_of(client.views_open(trigger_id="made-up", view=view)) == "invalid_trigger_id"


async def test_fault_injection_by_status_error_count_and_predicate(emu, client):
    emu.inject("chat.postMessage", status=503, times=2, when=lambda args: args.get("channel") == "C0ONLY")
    assert (await client.chat_postMessage(channel="C0OTHER", text="unaffected"))["ok"]
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0ONLY", text="x")
    assert err.value.response.status_code == 503
    emu.inject("chat.update", error="restricted_action_thread_locked")
    assert await error_of(client.chat_update(channel="C01", ts="1.1", text="x")) == "restricted_action_thread_locked"
    assert emu.pending_faults("chat.postMessage") == 1


async def test_a_text_only_update_step_clears_the_old_blocks(emu, client):
    """Slack keeps a message's blocks when chat.update sends only text; the delivery chain's last
    step must clear them, or a stale streamed answer stays on screen while the call says ok."""
    from bot.slack.delivery import deliver

    posted = await client.chat_postMessage(channel="C0STALE01", text="old", blocks=[section("stale answer")])
    emu.inject("chat.update", error="invalid_blocks", times=1, when=lambda args: bool(args.get("blocks")))
    result = await deliver(
        client,
        channel="C0STALE01",
        thread_ts=None,
        variants=[("blocks", [section("new")])],
        text="Sorry, the team has been alerted.",
        alerts=None,
        what="test",
        update_ts=posted["ts"],
    )
    message = emu.workspace.message("C0STALE01", posted["ts"])
    assert result.ok and result.variant == "text"
    assert not message.get("blocks") and message["text"] == "Sorry, the team has been alerted."
