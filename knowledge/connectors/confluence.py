"""Confluence Cloud pages of one space, through the REST API v2.

Each sync lists the space's current pages with their storage-format bodies (cursor-paginated);
the version number is the change key, so only edited pages are converted and their labels read.
Pages that are no longer current (archived, trashed, deleted) drop out of the listing and out of
the index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from knowledge.connectors.base import (
    ConnectorOptions,
    State,
    changed_ids,
    credential,
    fetch_changed,
    finish,
    incremental_load,
)
from knowledge.connectors.http import ApiClient, SourceError
from knowledge.connectors.markup import confluence_storage_to_markdown
from knowledge.sources import Document, SourceLoad

SCHEME = "confluence+"
CREDENTIALS = "CONFLUENCE_EMAIL and CONFLUENCE_API_TOKEN"
PAGE_LIMIT = 100  # the API allows up to 250


async def follow(client: ApiClient, path: str, params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every result of a v2 listing, following `_links.next` cursors."""
    results: list[dict[str, Any]] = []
    url: str | None = path
    while url:
        page = await client.get(url, params)
        results.extend(page.get("results", []))
        url, params = (page.get("_links") or {}).get("next"), None
    return results


class ConfluenceConnector:
    def __init__(self, uri: str, options: ConnectorOptions) -> None:
        parts = urlsplit(uri.removeprefix(SCHEME))
        segments = [part for part in parts.path.split("/") if part]
        if not parts.netloc or segments[:2] != ["wiki", "spaces"] or len(segments) < 3:
            raise ValueError(f"{uri}: expected confluence+https://SITE.atlassian.net/wiki/spaces/SPACEKEY")
        self.source = uri
        self.site = f"{parts.scheme}://{parts.netloc}"
        self.space_key = segments[2]
        self.options = options

    async def changes(self, state: State | None, known_ids: Collection[str]) -> SourceLoad:
        env = self.options.env
        auth = aiohttp.BasicAuth(
            credential(env, "CONFLUENCE_EMAIL", self.source), credential(env, "CONFLUENCE_API_TOKEN", self.source)
        )
        load = incremental_load(self.source)
        async with self.options.client(self.site, self.source, CREDENTIALS, auth=auth) as client:
            spaces = await client.get("/wiki/api/v2/spaces", {"keys": self.space_key})
            found = spaces.get("results") or []
            if not found:
                raise SourceError(
                    f"{self.source}: space {self.space_key} not found or not visible to CONFLUENCE_EMAIL's account"
                )
            space_id = quote(str(found[0]["id"]))
            listing = await follow(
                client, f"/wiki/api/v2/spaces/{space_id}/pages", {"body-format": "storage", "limit": PAGE_LIMIT}
            )
            pages = {str(page["id"]): page for page in listing if page.get("status", "current") == "current"}
            versions = {page_id: str((page.get("version") or {}).get("number", "")) for page_id, page in pages.items()}

            async def fetch(page_id: str) -> Document | None:
                labels = await follow(client, f"/wiki/api/v2/pages/{quote(page_id)}/labels", {"limit": PAGE_LIMIT})
                names = [str(label.get("name")) for label in labels]
                return await asyncio.to_thread(self.document, pages[page_id], names)  # HTML parsing: off the loop

            old = dict((state or {}).get("versions", {}))
            ids = changed_ids(old, versions, known_ids)
            await fetch_changed(load, versions, ids, fetch, self.options.concurrency, self.options.max_document_bytes)
            load.deleted_ids |= set(known_ids) - set(versions)
            return finish(load, client, {"versions": versions})

    def document(self, page: dict[str, Any], labels: list[str]) -> Document | None:
        storage = ((page.get("body") or {}).get("storage") or {}).get("value") or ""
        text, anchors = confluence_storage_to_markdown(str(storage))
        if not text.strip():
            return None  # an empty page has nothing to answer from
        webui = str((page.get("_links") or {}).get("webui") or f"/spaces/{self.space_key}/pages/{page['id']}")
        return Document(
            doc_id=str(page["id"]),
            title=str(page.get("title") or ""),
            url=f"{self.site}/wiki{webui}",
            text=text,
            source=self.source,
            metadata={"updated_at": (page.get("version") or {}).get("createdAt"), "labels": sorted(labels)},
            anchors=anchors,
        )
