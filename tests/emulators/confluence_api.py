"""Confluence Cloud REST API v2 emulator: spaces, their pages with storage-format bodies, labels.

From the public reference (developer.atlassian.com, Confluence Cloud REST API v2):
- Basic auth with the account email and an API token; anything else is 401.
- `GET /wiki/api/v2/spaces?keys=KEY` finds a space; spaces the account cannot view are not listed.
- `GET /wiki/api/v2/spaces/{id}/pages?body-format=storage&limit=N` (N in 1..250, default 25) lists
  current pages; more results come through `_links.next`, a relative URL with an opaque `cursor`.
  A page carries `version.number` and `version.createdAt`, `body.storage.value` and `_links.webui`.
- `GET /wiki/api/v2/pages/{id}/labels` lists a page's labels (same pagination).
- 429 with Retry-After when rate limited (scripted here with `fail`).
Archived and trashed pages are not `current`, so they leave the default listing.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from tests.emulators.rest_base import RestEmulator, json_response

MAX_LIMIT = 250
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    text = base64.urlsafe_b64decode(cursor.encode()).decode()
    if not text.startswith("offset:"):
        raise ValueError(cursor)
    return int(text.removeprefix("offset:"))


class ConfluenceEmulator(RestEmulator):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accounts: dict[str, str] = {}  # email -> API token
        self.spaces: dict[str, dict[str, Any]] = {}  # key -> space
        self.pages: dict[str, dict[str, Any]] = {}
        self.labels: dict[str, list[str]] = {}
        self._ids = itertools.count(98_000_001)
        self._ticks = itertools.count(1)

    def now(self) -> str:
        return (T0 + timedelta(minutes=next(self._ticks))).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def add_space(self, key: str) -> str:
        space_id = str(next(self._ids))
        self.spaces[key] = {"id": space_id, "key": key, "name": key, "type": "global", "status": "current"}
        return space_id

    def add_page(self, space_key: str, title: str, storage: str, labels: list[str] | None = None) -> str:
        page_id = str(next(self._ids))
        space = self.spaces[space_key]
        self.pages[page_id] = {
            "id": page_id,
            "status": "current",
            "title": title,
            "spaceId": space["id"],
            "parentId": None,
            "authorId": "557058:aaaa",
            "createdAt": self.now(),
            "version": {"number": 1, "createdAt": self.now(), "message": "", "minorEdit": False},
            "body": {"storage": {"representation": "storage", "value": storage}},
            "_links": {"webui": f"/spaces/{space_key}/pages/{page_id}/{title.replace(' ', '+')}"},
        }
        self.labels[page_id] = labels or []
        return page_id

    def edit_page(self, page_id: str, storage: str) -> None:
        page = self.pages[page_id]
        page["body"]["storage"]["value"] = storage
        page["version"] = {**page["version"], "number": page["version"]["number"] + 1, "createdAt": self.now()}

    def archive_page(self, page_id: str) -> None:
        self.pages[page_id]["status"] = "archived"

    # --- protocol --------------------------------------------------------------------------
    def error_body(self, status: int) -> dict[str, Any]:
        titles = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
        return {
            "errors": [
                {
                    "status": status,
                    "code": titles.get(status, "ERROR").upper().replace(" ", "_"),
                    "title": titles.get(status, "Error"),
                    "detail": None,
                }
            ]
        }

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/wiki/api/v2/spaces", self.list_spaces)
        app.router.add_get("/wiki/api/v2/spaces/{id}/pages", self.list_pages)
        app.router.add_get("/wiki/api/v2/pages/{id}/labels", self.list_labels)

    def authenticate(self, request: web.Request) -> web.Response | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        try:
            email, _, token = (
                base64.b64decode(value).decode().partition(":") if scheme.lower() == "basic" else ("", "", "")
            )
        except (binascii.Error, UnicodeDecodeError):
            email, token = "", ""
        if not email or self.accounts.get(email) != token:
            return json_response(self.error_body(401), 401)
        return None

    def limit_and_offset(self, request: web.Request) -> tuple[int, int]:
        raw = request.query.get("limit", "25")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise web.HTTPBadRequest()
        try:
            offset = decode_cursor(request.query["cursor"]) if "cursor" in request.query else 0
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest() from exc
        return int(raw), offset

    def paged(self, request: web.Request, rows: list[dict[str, Any]], keep: dict[str, str]) -> web.Response:
        limit, offset = self.limit_and_offset(request)
        page = rows[offset : offset + limit]
        links: dict[str, str] = {"base": f"{self.base_url}/wiki"}
        if offset + limit < len(rows):
            query = "&".join(
                f"{k}={v}" for k, v in {**keep, "limit": str(limit), "cursor": encode_cursor(offset + limit)}.items()
            )
            links["next"] = f"{request.path}?{query}"
        return json_response({"results": page, "_links": links})

    async def list_spaces(self, request: web.Request) -> web.Response:
        keys = set(filter(None, request.query.get("keys", "").split(",")))
        rows = [space for key, space in sorted(self.spaces.items()) if not keys or key in keys]
        return self.paged(request, rows, {"keys": ",".join(sorted(keys))} if keys else {})

    async def list_pages(self, request: web.Request) -> web.Response:
        space_id = request.match_info["id"]
        if space_id not in {space["id"] for space in self.spaces.values()}:
            raise web.HTTPNotFound()
        body_format = request.query.get("body-format")
        if body_format not in (None, "storage", "atlas_doc_format"):
            raise web.HTTPBadRequest()
        rows = []
        for _, page in sorted(self.pages.items()):
            if page["spaceId"] != space_id or page["status"] != "current":
                continue
            shown = {key: value for key, value in page.items() if key != "body"}
            shown["body"] = {"storage": page["body"]["storage"]} if body_format == "storage" else {}
            rows.append(shown)
        return self.paged(request, rows, {"body-format": body_format} if body_format else {})

    async def list_labels(self, request: web.Request) -> web.Response:
        page_id = request.match_info["id"]
        if page_id not in self.pages:
            raise web.HTTPNotFound()
        rows = [
            {"id": f"{page_id}-{n}", "name": name, "prefix": "global"} for n, name in enumerate(self.labels[page_id])
        ]
        return self.paged(request, rows, {})
