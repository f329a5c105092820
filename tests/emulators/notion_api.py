"""Notion API emulator: search over shared pages and block children, with cursor pagination.

From the public reference (developers.notion.com):
- `Authorization: Bearer SECRET` and a `Notion-Version` header on every request: a missing version
  is 400 `missing_version`, a bad secret 401 `unauthorized`, errors are `{"object": "error", ...}`.
- `POST /v1/search` with `filter: {property: object, value: page}`, `page_size` (at most 100) and
  `start_cursor`; answers `{object: list, results, next_cursor, has_more}`. Only pages shared with
  the integration are returned; trashed pages are not.
- `GET /v1/blocks/{id}/children?page_size=&start_cursor=` lists child blocks the same way; a block
  with `has_children` has its own children.
- 429 `rate_limited` with Retry-After (scripted here with `fail`).
Pages carry `last_edited_time`, `archived`, `in_trash`, `url`, `parent` and a title property.
"""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from tests.emulators.rest_base import RestEmulator, json_response

MAX_PAGE_SIZE = 100
T0 = datetime(2026, 2, 1, 8, 0, tzinfo=timezone.utc)


def text_block(kind: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        kind: {"rich_text": [{"type": "text", "plain_text": text, "text": {"content": text}}], **extra},
    }


class NotionEmulator(RestEmulator):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secrets: set[str] = set()
        self.pages: dict[str, dict[str, Any]] = {}
        self.shared: set[str] = set()
        self.children: dict[str, list[dict[str, Any]]] = {}  # block or page id -> child blocks
        self._ticks = itertools.count(1)

    def now(self) -> str:
        return (T0 + timedelta(minutes=next(self._ticks))).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def add_page(
        self, title: str, blocks: list[dict[str, Any]], *, parent: str | None = None, shared: bool = True
    ) -> str:
        page_id = str(uuid.uuid4())
        now = self.now()
        self.pages[page_id] = {
            "object": "page",
            "id": page_id,
            "created_time": now,
            "last_edited_time": now,
            "archived": False,
            "in_trash": False,
            "url": f"https://www.notion.so/{title.replace(' ', '-')}-{page_id.replace('-', '')}",
            "parent": {"type": "page_id", "page_id": parent} if parent else {"type": "workspace", "workspace": True},
            "properties": {"title": {"id": "title", "type": "title", "title": [{"type": "text", "plain_text": title}]}},
        }
        if shared:
            self.shared.add(page_id)
        self.set_blocks(page_id, blocks)
        return page_id

    def set_blocks(self, parent_id: str, blocks: list[dict[str, Any]]) -> None:
        """Blocks may carry `children` (a list of blocks) to nest."""
        stored = []
        for block in blocks:
            nested = block.pop("children", [])
            block_id = str(uuid.uuid4())
            stored.append(
                {
                    "object": "block",
                    "id": block_id,
                    "has_children": bool(nested),
                    "archived": False,
                    "in_trash": False,
                    **block,
                }
            )
            if nested:
                self.set_blocks(block_id, nested)
        self.children[parent_id] = stored

    def edit_page(self, page_id: str, blocks: list[dict[str, Any]]) -> None:
        self.set_blocks(page_id, blocks)
        self.pages[page_id]["last_edited_time"] = self.now()

    def trash_page(self, page_id: str) -> None:
        self.pages[page_id].update(archived=True, in_trash=True, last_edited_time=self.now())

    # --- protocol --------------------------------------------------------------------------
    def error_body(self, status: int) -> dict[str, Any]:
        codes = {400: "validation_error", 401: "unauthorized", 404: "object_not_found", 429: "rate_limited"}
        return {
            "object": "error",
            "status": status,
            "code": codes.get(status, "internal_server_error"),
            "message": f"HTTP {status}",
        }

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/search", self.search)
        app.router.add_get("/v1/blocks/{id}/children", self.block_children)

    def authenticate(self, request: web.Request) -> web.Response | None:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or secret not in self.secrets:
            return json_response({**self.error_body(401), "message": "API token is invalid."}, 401)
        if not request.headers.get("Notion-Version"):
            body = {
                "object": "error",
                "status": 400,
                "code": "missing_version",
                "message": "Notion-Version header missing.",
            }
            return json_response(body, 400)
        return None

    def paged(self, rows: list[dict[str, Any]], page_size: Any, start_cursor: Any) -> web.Response:
        if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            return json_response({**self.error_body(400), "message": "page_size should be ≤ 100"}, 400)
        ids = [row["id"] for row in rows]
        if start_cursor is not None and start_cursor not in ids:
            return json_response({**self.error_body(400), "message": "start_cursor is invalid"}, 400)
        offset = ids.index(start_cursor) if start_cursor else 0
        page = rows[offset : offset + page_size]
        more = offset + page_size < len(rows)
        return json_response(
            {
                "object": "list",
                "results": page,
                "next_cursor": rows[offset + page_size]["id"] if more else None,
                "has_more": more,
                "type": "page_or_database",
            }
        )

    def reachable(self, page_id: str) -> bool:
        """Shared directly, or below a shared page (sharing a page shares its children)."""
        current: str | None = page_id
        while current:
            if current in self.shared:
                return True
            parent = self.pages[current]["parent"]
            current = parent.get("page_id") if parent["type"] == "page_id" else None
        return False

    async def search(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return json_response(self.error_body(400), 400)
        wanted = ((body.get("filter") or {}).get("value")) or "page"
        rows = [
            page
            for page_id, page in sorted(self.pages.items())
            if wanted == "page" and not page["in_trash"] and self.reachable(page_id)
        ]
        return self.paged(rows, body.get("page_size", MAX_PAGE_SIZE), body.get("start_cursor"))

    async def block_children(self, request: web.Request) -> web.Response:
        block_id = request.match_info["id"]
        page_id = block_id if block_id in self.pages else None
        if block_id not in self.children or (page_id and not self.reachable(page_id)):
            return json_response(self.error_body(404), 404)
        raw = request.query.get("page_size", str(MAX_PAGE_SIZE))
        return self.paged(
            self.children[block_id], int(raw) if raw.isdigit() else raw, request.query.get("start_cursor")
        )
