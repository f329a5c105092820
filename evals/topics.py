"""A question's topic, from the documents retrieval found for it.

Knowledge gaps are only actionable when grouped ("six questions about payouts this week"), and
the cheapest stable grouping is where the best retrieved document lives: its folder in a help
center (`payments/refund-a-payment.md` -> `payments`) or its url path (`/en/docs/build-with-claude/...`
-> `build-with-claude`). Titles are the fallback for flat sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

GENERIC_SEGMENTS = {"en", "docs", "doc", "help", "kb", "articles", "article", "hc", "latest", "www"}


def topic_of_document(doc_id: str | None = None, url: str | None = None, title: str | None = None) -> str:
    """The folder of a document id, else the most specific non-generic url folder, else the title."""
    if doc_id and "/" in doc_id and "://" not in doc_id:
        return doc_id.split("/", 1)[0]
    for candidate in (url, doc_id):
        if candidate and "://" in candidate:
            segments = [s for s in urlparse(candidate).path.split("/") if s and s.lower() not in GENERIC_SEGMENTS]
            if len(segments) >= 2:
                return segments[0]
    return (title or "").strip() or "other"


def topic_of_retrieved(retrieved: Iterable[Mapping[str, Any]]) -> str:
    """Topic of the best retrieved chunk; `other` when nothing was retrieved."""
    for chunk in retrieved:
        return topic_of_document(chunk.get("doc_id"), chunk.get("url"), chunk.get("title"))
    return "other"
