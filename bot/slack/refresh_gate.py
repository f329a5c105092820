"""The refresh gate as Slack sees it: what `/kb-refresh` calls, and telling the admins what fell.

`bot/slack` never imports `evals/`, so the gated refresh (`evals.gate.refresh_gated`) is handed to
the bot by the CLI (`supportbot serve`) as a `Refresher`; without one, `/kb-refresh` refreshes and
calibrates ungated, as before. What a blocked (or forced) refresh reports goes to the admins: the
alerts channel when one is set, else each admin by DM (the same targets as every other alert).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.delivery import Alerts, error_code, plain

if TYPE_CHECKING:
    from bot.settings import Settings
    from knowledge.connectors.registry import SourceSpec
    from knowledge.index import KnowledgeIndex, RefreshReport

log = logging.getLogger(__name__)

FORCE_WORDS = ("--force", "force")


@dataclass
class RefreshOutcome:
    report: RefreshReport
    gate_text: str | None = None  # what the gate found, for people; None when no gate ran
    needs_admins: bool = False  # blocked, or published by force over a regression


Refresher = Callable[["KnowledgeIndex", Sequence["str | SourceSpec"], "Settings", bool], Awaitable[RefreshOutcome]]


def wants_force(command_text: str | None) -> bool:
    """`/kb-refresh --force` (or `force`) publishes a version the gate would block."""
    return any(word in FORCE_WORDS for word in (command_text or "").lower().split())


async def ungated(
    index: KnowledgeIndex, specs: Sequence[str | SourceSpec], settings: Settings, force: bool
) -> RefreshOutcome:
    """The refresh without a gate (no Refresher was given): refreshed and calibrated."""
    from bot.engine.calibration import refresh_calibrated
    from knowledge.learned import with_learned

    return RefreshOutcome(await refresh_calibrated(index, with_learned(specs, settings.data_dir), settings))


async def post_to_admins(client: AsyncWebClient, settings: Settings, text: str) -> list[str]:
    """Post plain text to each admin target; returns where it arrived (failures are logged, never raised)."""
    arrived = []
    for target in Alerts(settings).targets():
        try:
            await client.chat_postMessage(channel=target, text=plain(text), unfurl_links=False, unfurl_media=False)
            arrived.append(target)
        except Exception as exc:  # noqa: BLE001 (a report that cannot be posted must not fail the refresh)
            log.error("could not tell %s about the refresh gate: %s", target, error_code(exc))
    return arrived
