"""`supportbot doctor` against the Slack emulator: scopes from the token's header, manifest vs code,
and channel membership, each failure named with what to do about it."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.doctor import REQUIRED_SCOPES, manifest_scopes, run_checks, scope_checks, summary
from tests.emulators.slack_api import SlackEmulator

pytestmark = pytest.mark.timeout(30)


def test_the_manifest_asks_for_every_scope_the_code_needs():
    assert manifest_scopes() >= REQUIRED_SCOPES
    [manifest_check, token_check] = scope_checks(granted=set(REQUIRED_SCOPES), manifest={"chat:write"})
    assert not manifest_check.ok and "channels:history" in manifest_check.detail and token_check.ok


def test_a_token_without_an_optional_scope_is_a_warning_without_a_required_one_a_failure():
    manifest = set(REQUIRED_SCOPES)
    [_, optional] = scope_checks(granted=manifest - {"reactions:write"}, manifest=manifest)
    [_, required] = scope_checks(granted=manifest - {"chat:write"}, manifest=manifest)
    assert optional.warning and not required.warning and not required.ok


async def test_doctor_names_missing_scopes_and_channels_the_bot_is_not_in(settings):
    async with SlackEmulator(scopes=manifest_scopes() - {"usergroups:read"}) as emu:
        emu.add_channel("C0ESCALATE", is_member=False)
        emu.add_channel("C0ALERTS", is_member=True)
        configured = settings.model_copy(
            update={
                "slack_bot_token": SecretStr("xoxb-test"),
                "slack_api_url": emu.api_url,
                "escalation_channel": "C0ESCALATE",
                "alerts_channel": "C0ALERTS",
            }
        )
        checks = await run_checks(configured, AsyncWebClient(token="xoxb-test", base_url=emu.api_url))
        report, ok = summary(checks)
        assert not ok
        assert "[FAIL] token scopes: missing usergroups:read" in report
        assert "[FAIL] escalation channel C0ESCALATE: not_in_channel (invite the bot" in report
        assert "[ok  ] alerts channel C0ALERTS: member" in report


async def test_doctor_passes_on_a_good_setup(settings):
    async with SlackEmulator() as emu:
        configured = settings.model_copy(
            update={
                "slack_bot_token": SecretStr("xoxb-test"),
                "slack_api_url": emu.api_url,
                "escalation_channel": "C0ESCALATE",
                "admin_users": ["U0ADMIN"],
            }
        )
        report, ok = summary(await run_checks(configured, AsyncWebClient(token="xoxb-test", base_url=emu.api_url)))
        assert ok, report
