"""`/kb why <message link>`: an admin's private explanation of one decision, as Block Kit.

The data is `bot.engine.why.explain`'s (the same as `supportbot why`); this module only finds the
interaction a message link points at and renders it within Slack's limits (sections of at most
3,000 characters, a dozen blocks, ~11,000 characters in all, the way every other message here is
kept under the strict emulator's checks). The reply goes through the command's `response_url`,
so it works in channels the bot is not in and nobody else sees it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from bot.engine.why import (
    Explanation,
    calibration_line,
    calibration_of,
    chunk_scores,
    decision_line,
    explain,
    format_value,
    latency_line,
    match_link,
    parse_message_link,
    usage_line,
)
from bot.slack.blocks import SECTION_LIMIT, context, escape, link
from knowledge.text import truncate

if TYPE_CHECKING:
    from bot.store import Store
    from knowledge.storage import Sidecar

log = logging.getLogger(__name__)

USAGE_TEXT = "Usage: `/kb why <message link>` (copy the link of a question, or of the bot's reply, in Slack)."
NOT_ADMIN_TEXT = "Sorry, only knowledge admins can use `/kb why`."
NOT_FOUND_TEXT = "I have no logged question for that message. Is it a question I answered or escalated?"
CHUNKS_SHOWN = 10
MAX_BLOCK_CHARS = 11_000


def section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(mrkdwn, SECTION_LIMIT)}}


def why_blocks(why: Explanation) -> list[dict[str, Any]]:
    """The explanation as at most 9 blocks (pure)."""
    query = escape(truncate(why.search_query, 600)) if why.search_query else "_(not searched)_"
    chunks = []
    for chunk in why.chunks[:CHUNKS_SHOWN]:
        title = chunk.title + (f" › {chunk.heading}" if chunk.heading else "")
        label = link(chunk.url, truncate(title, 120)) if chunk.url else escape(truncate(title, 120))
        chunks.append(f"{chunk.rank}. {'📎 ' if chunk.cited else ''}{label}\n      {chunk_scores(chunk)}")
    if len(why.chunks) > CHUNKS_SHOWN:
        chunks.append(f"… and {len(why.chunks) - CHUNKS_SHOWN} more")
    signals = "\n".join(f"`{name}` {escape(truncate(format_value(v), 200))}" for name, v in why.signals.items())
    reasons = "\n".join(f"• {escape(truncate(reason, 300))}" for reason in why.reasons[:10])
    return [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(f"Why: {why.decision}", 150)}},
        section(
            f"*Question*\n{escape(truncate(why.question, 1200))}\n*Query searched*"
            f"{' (rewritten)' if why.rewritten else ''}\n{query}"
        ),
        section("*Retrieved* (rank, 📎 = cited)\n" + ("\n".join(chunks) or "_nothing_")),
        section("*Signals*\n" + (signals or "_none recorded_")),
        section(f"*Calibration*\n{escape(calibration_line(why))}"),
        section(f"*Decision*\n{escape(decision_line(why))}" + (f"\n{reasons}" if reasons else "")),
        section(f"*Generator*\n{escape(usage_line(why))}\n*Latency*\n{latency_line(why)}"),
        context(
            f"interaction `{why.interaction_id}` · index v{why.index_version} · {escape(why.created_at)}"
            + (f" · asked by <@{why.asker}>" if why.asker and why.asker.startswith("U") else "")
        ),
    ]


def why_text(why: Explanation) -> str:
    """The notification text beside the blocks."""
    return f"Why {why.interaction_id}: {why.decision} at confidence {why.confidence:.2f}"


async def find_interaction(store: Store, message_link: str) -> dict[str, Any] | None:
    """The logged interaction behind a message link; ValueError when it is not a link."""
    channel, message_ts, thread_ts = parse_message_link(message_link)
    return match_link(await store.interactions_in(channel), message_ts, thread_ts)


async def explain_link(store: Store, sidecar: Sidecar, message_link: str) -> dict[str, Any]:
    """The `response_url` body answering `/kb why LINK` (blocks and text, or a plain-text reason)."""
    try:
        row = await find_interaction(store, message_link)
    except ValueError:
        return {"text": USAGE_TEXT}
    if row is None:
        return {"text": NOT_FOUND_TEXT}
    calibration = await asyncio.to_thread(calibration_of, sidecar, row)
    why = explain(row, calibration)
    return {"text": why_text(why), "blocks": why_blocks(why)}
