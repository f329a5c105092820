"""Notion pages shared with the integration, under one root page or database.

Each sync lists the shared pages through search (cursor-paginated, `last_edited_time` as the
change key), keeps those under the root, and reads the blocks of changed pages (nested blocks
included) as Markdown. Archived or trashed pages, and pages no longer shared, leave the index.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from knowledge.connectors.base import (
    ConnectorOptions,
    State,
    changed_ids,
    credential,
    fetch_changed,
    finish,
    incremental_load,
)
from knowledge.connectors.http import ApiClient
from knowledge.connectors.markup import notion_blocks_to_markdown, rich_text
from knowledge.sources import Document, SourceLoad

SCHEME = "notion://"
CREDENTIALS = "NOTION_TOKEN (the integration's secret; share the pages with the integration)"
NOTION_VERSION = "2022-06-28"
PAGE_SIZE = 100  # the API maximum
NOT_DESCENDED = {"child_page", "child_database"}  # their content is its own page


def plain_id(notion_id: str) -> str:
    return notion_id.replace("-", "").lower()


def parent_id(page: dict[str, Any]) -> str | None:
    parent = page.get("parent") or {}
    value = parent.get(str(parent.get("type", "")))
    return plain_id(value) if isinstance(value, str) else None


def page_title(page: dict[str, Any]) -> str:
    for prop in (page.get("properties") or {}).values():
        if isinstance(prop, dict) and prop.get("type") == "title":
            return rich_text(prop.get("title"))
    return ""


class NotionConnector:
    def __init__(self, uri: str, options: ConnectorOptions) -> None:
        root = uri.removeprefix(SCHEME).strip("/")
        if not uri.startswith(SCHEME) or len(plain_id(root)) != 32:
            raise ValueError(f"{uri}: expected notion://PAGE_OR_DATABASE_ID (32 hex digits, dashes optional)")
        self.source = uri
        self.root = plain_id(root)
        self.options = options

    def in_scope(self, page_id: str, pages: dict[str, dict[str, Any]]) -> bool:
        """The root itself or anything below it, following parents through the pages we can see."""
        seen: set[str] = set()
        current: str | None = page_id
        while current and current not in seen:
            if current == self.root:
                return True
            seen.add(current)
            current = parent_id(pages[current]) if current in pages else None
            if current == self.root:
                return True
        return False

    async def changes(self, state: State | None, known_ids: Collection[str]) -> SourceLoad:
        token = credential(self.options.env, "NOTION_TOKEN", self.source)
        load = incremental_load(self.source)
        headers = {"Authorization": f"Bearer {token}", "Notion-Version": NOTION_VERSION}
        async with self.options.client("https://api.notion.com", self.source, CREDENTIALS, headers=headers) as client:
            pages = await self.shared_pages(client)
            live = {
                page_id: page
                for page_id, page in pages.items()
                if not page.get("archived") and not page.get("in_trash") and self.in_scope(page_id, pages)
            }
            edited = {page_id: str(page.get("last_edited_time", "")) for page_id, page in live.items()}

            async def fetch(page_id: str) -> Document | None:
                blocks = await self.blocks(client, str(live[page_id]["id"]))
                return self.document(live[page_id], notion_blocks_to_markdown(blocks))

            old = dict((state or {}).get("edited", {}))
            ids = changed_ids(old, edited, known_ids)
            await fetch_changed(load, edited, ids, fetch, self.options.concurrency, self.options.max_document_bytes)
            load.deleted_ids |= set(known_ids) - set(edited)
            return finish(load, client, {"edited": edited})

    async def shared_pages(self, client: ApiClient) -> dict[str, dict[str, Any]]:
        pages: dict[str, dict[str, Any]] = {}
        body: dict[str, Any] = {"filter": {"property": "object", "value": "page"}, "page_size": PAGE_SIZE}
        while True:
            answer = await client.post("/v1/search", body)
            for page in answer.get("results", []):
                pages[plain_id(str(page["id"]))] = page
            if not answer.get("has_more"):
                return pages
            body = {**body, "start_cursor": answer["next_cursor"]}

    async def blocks(self, client: ApiClient, block_id: str) -> list[dict[str, Any]]:
        """A block's children, all pages of them, with nested children fetched into `children`."""
        children: list[dict[str, Any]] = []
        params: dict[str, Any] = {"page_size": PAGE_SIZE}
        while True:
            answer = await client.get(f"/v1/blocks/{block_id}/children", params)
            children.extend(answer.get("results", []))
            if not answer.get("has_more"):
                break
            params = {"page_size": PAGE_SIZE, "start_cursor": answer["next_cursor"]}
        for block in children:
            if block.get("has_children") and block.get("type") not in NOT_DESCENDED:
                block["children"] = await self.blocks(client, str(block["id"]))
        return [block for block in children if not block.get("in_trash") and not block.get("archived")]

    def document(self, page: dict[str, Any], text: str) -> Document | None:
        if not text.strip():
            return None
        title = page_title(page)
        return Document(
            doc_id=plain_id(str(page["id"])),
            title=title,
            url=str(page.get("url") or f"https://www.notion.so/{plain_id(str(page['id']))}"),
            text=f"# {title}\n\n{text}" if title else text,
            source=self.source,
            metadata={"updated_at": page.get("last_edited_time")},
        )
