"""Zendesk Help Center (Guide) articles of one locale.

Changes come from the incremental article export (`start_time` = the previous export's
`end_time`); a cursor-paginated listing of the locale's articles tells which ids still exist, so
archived and deleted articles leave the index. Drafts are skipped (an unpublished article is
removed), and so are articles restricted to a user segment unless that segment is allowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from knowledge.connectors.base import ConnectorOptions, State, credential, finish, incremental_load
from knowledge.connectors.http import ApiClient, SourceError
from knowledge.connectors.markup import html_to_markdown
from knowledge.sources import Document, DocumentError, LoadFailure, SourceLoad, check_document

SCHEME = "zendesk+"
CREDENTIALS = "ZENDESK_EMAIL and ZENDESK_API_TOKEN"
PAGE_SIZE = 100  # the cursor-pagination maximum


class ZendeskConnector:
    def __init__(self, uri: str, options: ConnectorOptions) -> None:
        parts = urlsplit(uri.removeprefix(SCHEME))
        segments = [part for part in parts.path.split("/") if part]
        if not parts.netloc or len(segments) != 2 or segments[0] != "hc":
            raise ValueError(f"{uri}: expected zendesk+https://SUBDOMAIN.zendesk.com/hc/LOCALE")
        self.source = uri
        self.locale = segments[1].lower()
        self.site = f"{parts.scheme}://{parts.netloc}"
        self.options = options
        allowed = options.extra.get("allowed_user_segments") or []
        self.allowed_segments = {int(segment) for segment in allowed}

    def usable(self, article: dict[str, Any]) -> bool:
        """Published, in this locale, and visible to everyone or to an allowed user segment."""
        segment = article.get("user_segment_id")
        return (
            not article.get("draft")
            and str(article.get("locale", "")).lower() == self.locale
            and (segment is None or int(segment) in self.allowed_segments)
        )

    async def changes(self, state: State | None, known_ids: Collection[str]) -> SourceLoad:
        env = self.options.env
        email = credential(env, "ZENDESK_EMAIL", self.source)
        token = credential(env, "ZENDESK_API_TOKEN", self.source)
        load = incremental_load(self.source)
        auth = aiohttp.BasicAuth(f"{email}/token", token)
        async with self.options.client(self.site, self.source, CREDENTIALS, auth=auth) as client:
            start_time = int((state or {}).get("start_time", 0))
            changed, end_time = await self.export_since(client, start_time)
            listed = await self.list_locale(client)
            present = {doc_id for doc_id, article in listed.items() if self.usable(article)}
            known = set(known_ids)
            # Changed articles, plus any present article the index lacks (first sync, after a rollback).
            wanted = {doc_id: article for doc_id, article in changed.items() if doc_id in present}
            wanted.update({doc_id: listed[doc_id] for doc_id in present - known - set(wanted)})
            # HTML to Markdown is CPU work: off the event loop, which keeps answering during a sync
            await asyncio.to_thread(self.convert, [wanted[doc_id] for doc_id in sorted(wanted)], load)
            load.deleted_ids = known - present
            # A failed article is asked for again next time: the cursor only moves when all went in.
            return finish(load, client, {"start_time": start_time if load.failures else end_time})

    async def export_since(self, client: ApiClient, start_time: int) -> tuple[dict[str, dict[str, Any]], int]:
        """Articles whose metadata changed since `start_time`, and the export's end time."""
        changed: dict[str, dict[str, Any]] = {}
        url: str | None = "/api/v2/help_center/incremental/articles"
        params: dict[str, Any] | None = {"start_time": start_time}
        end_time = start_time
        while url:
            page = await client.get(url, params)
            for article in page.get("articles", []):
                changed[str(article["id"])] = article
            end_time = int(page.get("end_time") or end_time)
            url, params = page.get("next_page"), None
        return changed, end_time

    async def list_locale(self, client: ApiClient) -> dict[str, dict[str, Any]]:
        listed: dict[str, dict[str, Any]] = {}
        url: str | None = f"/api/v2/help_center/{self.locale}/articles"
        params: dict[str, Any] | None = {"page[size]": PAGE_SIZE}
        while url:
            page = await client.get(url, params)
            for article in page.get("articles", []):
                listed[str(article["id"])] = article
            meta = page.get("meta") or {}
            url = (page.get("links") or {}).get("next") if meta.get("has_more") else None
            params = None
            if meta.get("has_more") and not url:
                raise SourceError(f"{self.source}: listing says has_more but gives no next link")
        return listed

    def convert(self, articles: list[dict[str, Any]], load: SourceLoad) -> None:
        for article in articles:
            try:
                load.documents.append(check_document(self.document(article), self.options.max_document_bytes))
            except DocumentError as exc:
                load.failures.append(LoadFailure(f"article {article['id']}", str(exc), doc_id=str(article["id"])))

    def document(self, article: dict[str, Any]) -> Document:
        text, anchors = html_to_markdown(str(article.get("body") or ""))
        return Document(
            doc_id=str(article["id"]),
            title=str(article.get("title") or ""),
            url=str(article.get("html_url") or f"{self.site}/hc/{self.locale}/articles/{article['id']}"),
            text=text,
            source=self.source,
            metadata={
                "updated_at": article.get("updated_at"),
                "labels": list(article.get("label_names") or []),
                "section_id": article.get("section_id"),
            },
            anchors=anchors,
        )
