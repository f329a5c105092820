"""Never silent: every post the bot owes someone goes through a fallback chain, and every failure
on the way is reported, with Slack's error code, to the alerts channel (or the admins).

The chain for one message is: each block variant in turn (full, then degraded, then trimmed),
then plain text, in the thread it belongs to; if the channel itself refuses the bot
(`not_in_channel`, `channel_not_found`, an archived or locked thread), a DM to the person it was
for. A block error (`invalid_blocks`, `msg_blocks_too_long`) moves to the next variant; a
server error or a 429 that outlived the SDK's retries moves on too, since the next attempt is
itself a retry with a smaller payload.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import notice_blocks

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)

# The conversation (or thread) will not take a post from the bot, whatever its content.
CHANNEL_ERRORS = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "restricted_action_thread_locked",
        "restricted_action_read_only_channel",
        "restricted_action_non_threadable_channel",
        "cant_update_message",
        "message_not_found",
        "ekm_access_denied",
        "team_access_not_granted",
        "thread_locked",
    }
)
# The content was refused: a smaller or plainer payload may pass.
CONTENT_ERRORS = frozenset(
    {
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_blocks_too_long",
        "msg_too_long",
        "no_text",
        "invalid_arguments",
        "too_many_attachments",
    }
)
PLAIN_TEXT_LIMIT = 3900  # Slack shows up to 4,000 characters of `text` before "show more"; 40,000 is its hard cap
ALERT_TEXT_LIMIT = 1500

Blocks = list[dict[str, Any]]


def error_code(exc: BaseException) -> str:
    """Slack's error code for a failed call; HTTP statuses and transport errors get a code too."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 200)
        code = response.get("error") if hasattr(response, "get") else None
        if status == 429:
            return "ratelimited"
        if status >= 500:
            return f"http_{status}" + (f" ({code})" if code else "")
        return code or f"http_{status}"
    if isinstance(exc, (aiohttp.ClientError, TimeoutError)):
        return f"connection_error ({type(exc).__name__})"
    return f"error ({type(exc).__name__})"


def plain(text: str, limit: int = PLAIN_TEXT_LIMIT) -> str:
    """Text for a blockless message, cut at a line or word boundary if it is too long."""
    text = text.strip() or "(no text)"
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 1)
    if cut < limit // 2:
        cut = text.rfind(" ", 0, limit - 1)
    return text[: cut if cut > limit // 2 else limit - 1].rstrip() + "…"


@dataclass
class Delivery:
    """How a post went: where it landed (if anywhere), and every error met on the way."""

    ok: bool = False
    channel: str | None = None
    ts: str | None = None
    variant: str | None = None  # "blocks" / "degraded" / "trimmed" / "text" / "dm"
    errors: list[str] = field(default_factory=list)


class Alerts:
    """Failures, told to people who can act: `SUPPORTBOT_ALERTS_CHANNEL`, else each admin by DM.

    An alert is plain text (nothing in it can be refused as blocks) and its own failure is only
    logged, so alerting can never loop or take the bot down.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent: list[str] = []  # what was alerted (the metrics and tests read it)

    def targets(self) -> list[str]:
        channel = getattr(self.settings, "alerts_channel", "") or ""
        return [channel] if channel else list(self.settings.admin_users)

    async def alert(self, client: AsyncWebClient, what: str, errors: Sequence[str]) -> None:
        text = plain(f":rotating_light: supportbot: {what} — {', '.join(errors) or 'failed'}", ALERT_TEXT_LIMIT)
        self.sent.append(text)
        log.error("alert: %s (%s)", what, ", ".join(errors))
        for target in self.targets():
            try:
                await client.chat_postMessage(channel=target, text=text, unfurl_links=False, unfurl_media=False)
            except Exception as exc:  # noqa: BLE001 (never fail because an alert failed)
                log.error("could not alert %s: %s", target, error_code(exc))


async def deliver(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str | None,
    variants: Sequence[tuple[str, Blocks]],
    text: str,
    alerts: Alerts | None,
    what: str,
    dm_user: str | None = None,
    update_ts: str | None = None,
) -> Delivery:
    """Post (or, with `update_ts`, rewrite) one message through the chain; never raises.

    `variants` are (name, blocks) from richest to plainest; `text` is both the notification text
    beside the blocks and the last resort alone. `dm_user` gets the text by DM when the channel
    refuses the bot. Every error met is alerted once, after the outcome is known.
    """
    result = Delivery()
    fallback = plain(text)
    attempts: list[tuple[str, Blocks | None]] = [*variants, ("text", None)]
    for name, blocks in attempts:
        kwargs: dict[str, Any] = {"channel": channel, "text": fallback}
        if blocks is not None:
            kwargs["blocks"] = blocks
        elif update_ts:
            kwargs["blocks"] = []  # chat.update without blocks keeps the old ones on screen: clear them
        try:
            if update_ts:
                response = await client.chat_update(ts=update_ts, **kwargs)
            else:
                response = await client.chat_postMessage(
                    thread_ts=thread_ts, unfurl_links=False, unfurl_media=False, **kwargs
                )
        except Exception as exc:  # noqa: BLE001 (every failure is a step down the chain)
            code = error_code(exc)
            result.errors.append(f"{name}: {code}")
            if code.split(" ")[0] in CHANNEL_ERRORS:
                break
            continue
        result.ok, result.channel, result.ts, result.variant = True, response.get("channel"), response.get("ts"), name
        break
    if not result.ok and dm_user:
        try:
            response = await client.chat_postMessage(
                channel=dm_user, text=fallback, unfurl_links=False, unfurl_media=False
            )
        except Exception as exc:  # noqa: BLE001
            result.errors.append(f"dm: {error_code(exc)}")
        else:
            result.ok, result.channel, result.ts, result.variant = (
                True,
                response.get("channel"),
                response.get("ts"),
                "dm",
            )
    if alerts is not None:
        await report(client, alerts, result, what=f"{what} in {channel}/{thread_ts or update_ts or '-'}")
    return result


async def deliver_in_place(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str | None,
    text: str,
    alerts: Alerts | None,
    what: str,
    update_ts: str | None,
    variants: Sequence[tuple[str, Blocks]] | None = None,
    dm_user: str | None = None,
) -> Delivery:
    """Rewrite the bot's message `update_ts` (a streamed draft, a "working" note) into this one;
    if there is none, or Slack refuses the update, post it in the thread instead (then DM
    `dm_user`). The one "update, else post" of the bot: every error of both tries is alerted
    together, once. Without `variants`, the message is a notice: `text` (mrkdwn) in blocks."""
    send = functools.partial(
        deliver,
        client,
        channel=channel,
        thread_ts=thread_ts,
        variants=[("blocks", notice_blocks(text))] if variants is None else variants,
        text=text,
        alerts=None,
        what=what,
    )
    result = Delivery()
    errors: list[str] = []
    if update_ts:
        result = await send(update_ts=update_ts)
        errors.extend(f"update {error}" for error in result.errors)
    if not result.ok:
        result = await send(dm_user=dm_user)
        errors.extend(result.errors)
    result.errors = errors
    if alerts is not None:
        await report(client, alerts, result, what=f"{what} in {channel}/{thread_ts or update_ts or '-'}")
    return result


async def report(client: AsyncWebClient, alerts: Alerts, result: Delivery, *, what: str) -> None:
    """One alert for a delivery that met errors, saying how it ended."""
    if result.errors:
        outcome = f"delivered as {result.variant}" if result.ok else "NOT delivered"
        await alerts.alert(client, f"{what} {outcome}", result.errors)
