"""Freshness of cited sources: each citation shows when its source last changed, and one older
than `SUPPORTBOT_STALE_AFTER_DAYS` is flagged, because a confident answer from a two-year-old
article is how support bots spread outdated instructions. Pure functions only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone

from bot.engine.types import Citation

STALE_NOTE = "may be out of date"


def parse_updated(value: str | None) -> datetime | None:
    """ISO 8601 as the APIs send it (`2026-01-05T09:00:00Z`, with millis or an offset) or a bare date."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(text[:10]), datetime.min.time())
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def is_stale(updated_at: str | None, now: datetime, stale_after_days: int) -> bool:
    moment = parse_updated(updated_at)
    return bool(stale_after_days > 0 and moment is not None and (now - moment).days > stale_after_days)


def mark_stale(citations: Sequence[Citation], now: datetime, stale_after_days: int) -> list[Citation]:
    """The citations with `stale` set from their source's last-updated time (0 days: never stale)."""
    return [
        citation.model_copy(update={"stale": is_stale(citation.updated_at, now, stale_after_days)})
        for citation in citations
    ]


def freshness_label(citation: Citation) -> str:
    """ "updated 5 Jan 2026", plus the out-of-date note when stale; empty when the source gives no date."""
    moment = parse_updated(citation.updated_at)
    if moment is None:
        return ""
    label = f"updated {moment.day} {moment:%b %Y}"
    return f"{label}, {STALE_NOTE}" if citation.stale else label
