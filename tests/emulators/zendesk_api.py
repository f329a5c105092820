"""Zendesk Help Center API emulator: articles, their incremental export and cursor-paginated listing.

From the public reference (developer.zendesk.com, Help Center API > Articles, and "Understanding
incremental article exports"):
- Basic auth `{email}/token:{api_token}`; bad credentials get 401 `Couldn't authenticate you`.
- `GET /api/v2/help_center/incremental/articles?start_time=EPOCH` needs an agent or admin (anonymous
  401, an end user 403); returns articles whose metadata changed after `start_time`, at most 1,000
  a page, with `next_page`, `count` and `end_time` (use it as the next `start_time`).
- `GET /api/v2/help_center/{locale}/articles?page[size]=N` (N at most 100) with `page[after]`
  cursors, `meta.has_more/after_cursor` and `links.next`. Anonymous callers see only published
  articles visible to everyone; agents also see drafts and segment-restricted articles.
- 429 with Retry-After when rate limited (scripted here with `fail`).
Archived and deleted articles disappear from both endpoints.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from tests.emulators.rest_base import RestEmulator, json_response

EPOCH0 = 1_750_000_000  # the emulator's logical clock starts here; each change ticks it by a second
ROLE = web.RequestKey("role", object)  # who made the request, set by authenticate
MAX_EXPORT_PAGE = 1000
MAX_CURSOR_PAGE = 100


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ZendeskEmulator(RestEmulator):
    def __init__(self, *, export_page_size: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.export_page_size = min(export_page_size, MAX_EXPORT_PAGE)
        self.users: dict[str, tuple[str, str]] = {}  # email -> (api token, role: admin|agent|end-user)
        self.articles: dict[int, dict[str, Any]] = {}
        self._changed: dict[int, int] = {}  # article id -> logical time of its last change
        self._ids = itertools.count(360_000_000_001)
        self._clock = EPOCH0

    # --- content ---------------------------------------------------------------------------
    def tick(self) -> int:
        self._clock += 1
        return self._clock

    def add_user(self, email: str, token: str, role: str = "agent") -> None:
        self.users[email] = (token, role)

    def add_article(
        self,
        title: str,
        body: str,
        *,
        locale: str = "en-us",
        draft: bool = False,
        user_segment_id: int | None = None,
        labels: list[str] | None = None,
    ) -> int:
        article_id = next(self._ids)
        now = self.tick()
        self.articles[article_id] = {
            "id": article_id,
            "title": title,
            "body": body,
            "locale": locale,
            "source_locale": locale,
            "draft": draft,
            "user_segment_id": user_segment_id,
            "label_names": labels or [],
            "section_id": 360_001,
            "author_id": 42,
            "created_at": iso(now),
            "updated_at": iso(now),
            "edited_at": iso(now),
            "outdated": False,
            "promoted": False,
        }
        self._changed[article_id] = now
        return article_id

    def edit_article(self, article_id: int, **changes: Any) -> None:
        now = self.tick()
        self.articles[article_id].update(changes, updated_at=iso(now), edited_at=iso(now))
        self._changed[article_id] = now

    def archive_article(self, article_id: int) -> None:
        """Archived articles are no longer listed or exported."""
        del self.articles[article_id]
        del self._changed[article_id]

    # --- protocol --------------------------------------------------------------------------
    def error_body(self, status: int) -> dict[str, Any]:
        if status == 429:
            return {"error": "TooManyRequests", "description": "You have exceeded the rate limit"}
        if status == 401:
            return {"error": "Couldn't authenticate you"}
        return {"error": {"title": f"HTTP {status}", "message": "request failed"}}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v2/help_center/incremental/articles", self.incremental)
        app.router.add_get("/api/v2/help_center/{locale}/articles", self.list_articles)

    def caller_role(self, request: web.Request) -> str | None:
        request[ROLE] = None
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return ""
        try:
            user, _, secret = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        email, _, kind = user.partition("/")
        known = self.users.get(email)
        if kind != "token" or known is None or known[0] != secret:
            return ""
        return known[1]

    def authenticate(self, request: web.Request) -> web.Response | None:
        role = self.caller_role(request)
        if role == "":
            return json_response(self.error_body(401), 401, {"WWW-Authenticate": 'Basic realm="Web Password"'})
        request[ROLE] = role
        if request.path.endswith("/incremental/articles"):
            if role is None:
                return json_response(self.error_body(401), 401)
            if role not in ("agent", "admin"):
                return json_response({"error": "Forbidden", "description": "You do not have access"}, 403)
        return None

    def visible(self, article: dict[str, Any], role: str | None) -> bool:
        if role in ("agent", "admin"):
            return True
        return not article["draft"] and article["user_segment_id"] is None

    async def incremental(self, request: web.Request) -> web.Response:
        raw = request.query.get("start_time")
        if raw is None or not raw.isdigit():
            return json_response({"error": "InvalidValue", "description": "start_time is required"}, 400)
        start = int(raw)
        changed = sorted((at, article_id) for article_id, at in self._changed.items() if at > start)
        page = changed[: self.export_page_size]
        more = len(changed) > len(page)
        end_time = page[-1][0] if more else self._clock
        next_page = f"{self.base_url}/api/v2/help_center/incremental/articles?start_time={end_time}" if more else None
        articles = [self.articles[article_id] for _, article_id in page]
        return json_response(
            {"articles": articles, "count": len(articles), "end_time": end_time, "next_page": next_page}
        )

    async def list_articles(self, request: web.Request) -> web.Response:
        locale = request.match_info["locale"].lower()
        size_raw = request.query.get("page[size]", "30")
        if not size_raw.isdigit() or not 1 <= int(size_raw) <= MAX_CURSOR_PAGE:
            return json_response(
                {"error": "InvalidPaginationParameter", "description": "page[size] must be 1..100"}, 400
            )
        size = int(size_raw)
        start = 0
        if "page[after]" in request.query:
            try:
                start = int(base64.urlsafe_b64decode(request.query["page[after]"]).decode())
            except (binascii.Error, ValueError, UnicodeDecodeError):
                return json_response({"error": "InvalidPaginationParameter", "description": "bad cursor"}, 400)
        rows = [
            article
            for _, article in sorted(self.articles.items())
            if article["locale"] == locale and self.visible(article, request[ROLE])
        ]
        page = rows[start : start + size]
        has_more = start + size < len(rows)
        after = base64.urlsafe_b64encode(str(start + size).encode()).decode() if has_more else None
        base = f"{self.base_url}/api/v2/help_center/{locale}/articles?page[size]={size}"
        return json_response(
            {
                "articles": page,
                "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": None},
                "links": {
                    "first": base,
                    "last": None,
                    "next": f"{base}&page[after]={after}" if after else None,
                    "prev": None,
                },
            }
        )
