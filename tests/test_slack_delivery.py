"""The one "update, else post" (`delivery.deliver_in_place`): where the message lands, and that a
failure on the way is alerted exactly once, whoever calls it (notices, escalation notices, streams)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient

from bot.settings import Settings
from bot.slack.delivery import Alerts, deliver_in_place
from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_payloads import CHANNEL_ID

ALERTS = "C0ALERTS01"


async def send(emu: SlackEmulator, alerts: Alerts, update_ts: str | None):
    return await deliver_in_place(
        AsyncWebClient(token="xoxb-test", base_url=emu.api_url),
        channel=CHANNEL_ID,
        thread_ts="1700000000.000100",
        variants=[("blocks", [{"type": "section", "text": {"type": "mrkdwn", "text": "the notice"}}])],
        text="the notice",
        alerts=alerts,
        what="notice",
        update_ts=update_ts,
        dm_user="U0ASKER",
    )


def alert_posts(emu: SlackEmulator) -> list[str]:
    return [c.args["text"] for c in emu.calls_to("chat.postMessage") if c.args.get("channel") == ALERTS]


async def test_a_refused_update_becomes_a_post_and_one_alert_names_every_error():
    async with SlackEmulator() as emu:
        alerts = Alerts(Settings(alerts_channel=ALERTS))
        draft = emu.add_message(CHANNEL_ID, "streamed draft", thread_ts="1700000000.000100", user=emu.bot.user_id)
        emu.fail("chat.update", "cant_update_message")
        result = await send(emu, alerts, draft["ts"])
        assert result.ok and result.variant == "blocks" and result.ts != draft["ts"]
        [alert] = alert_posts(emu)
        assert "update blocks: cant_update_message" in alert and "delivered as blocks" in alert
        assert alerts.sent == [alert]


async def test_an_update_that_works_posts_nothing_new_and_alerts_nothing():
    async with SlackEmulator() as emu:
        alerts = Alerts(Settings(alerts_channel=ALERTS))
        draft = emu.add_message(
            CHANNEL_ID, "streamed draft", thread_ts="1700000000.000100", user=emu.bot.user_id, bot_id=emu.bot.bot_id
        )
        result = await send(emu, alerts, draft["ts"])
        assert result.ok and result.ts == draft["ts"] and emu.message(CHANNEL_ID, draft["ts"])["text"] == "the notice"
        assert emu.calls_to("chat.postMessage") == [] and alerts.sent == []


async def test_a_post_that_fails_every_way_is_alerted_once_as_not_delivered():
    async with SlackEmulator() as emu:
        alerts = Alerts(Settings(alerts_channel=ALERTS))
        emu.inject("chat.postMessage", error="not_in_channel", when=lambda a: a.get("channel") == CHANNEL_ID)
        emu.inject("chat.postMessage", error="cannot_dm_bot", when=lambda a: a.get("channel") == "U0ASKER")
        result = await send(emu, alerts, None)
        assert not result.ok
        [alert] = alert_posts(emu)
        assert "NOT delivered" in alert and "not_in_channel" in alert and "cannot_dm_bot" in alert
