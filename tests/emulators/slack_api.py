"""A local Slack Web API + Socket Mode server that the *real* slack_sdk / slack_bolt clients talk to.

Tests exercise the bot's actual HTTP/websocket code paths (serialisation, retries, acks) instead of
mocking client methods:

    async with SlackEmulator() as emu:
        client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
        await client.chat_postMessage(channel="C123", text="hi")
        [call] = await emu.wait_for("chat.postMessage")
        assert call.args["text"] == "hi"

It is strict where Slack is strict, so the bot meets Slack's real rules here first: Block Kit
types and per-field limits, at most 50 blocks and about 12,000 characters of block text per
message (`invalid_blocks`, `msg_blocks_too_long`), channel membership (`not_in_channel`), the
scopes the app's manifest grants (`missing_scope`), per-method rate tiers (429 + Retry-After),
`limit`/`cursor` paging on `conversations.replies`, `trigger_id`s that expire after 3 s and work
once, and DMs addressed by user id. `inject()` makes a method fail n times with an error or an
HTTP status, optionally only for calls matching a predicate (e.g. one channel).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .slack_payloads import (  # noqa: F401 (re-export)
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    TEAM_ID,
    TRIGGER_TTL_SECONDS,
    USER_ID,
    sign_request,
    trigger_issued_at,
)

PERMALINK_HOST = "https://emulator.slack.test"
# Arguments the SDK JSON-encodes into a string when it sends a form body instead of a JSON body.
JSON_ARGS = {"blocks", "attachments", "view", "metadata", "chunks", "prompts", "loading_messages", "user_auth_blocks"}
CHANNEL_ID_RE = re.compile(r"[CDG][A-Z0-9]{2,}")
USER_ID_RE = re.compile(r"[UW][A-Z0-9]{2,}")
MANIFEST = Path(__file__).resolve().parents[2] / "slack-manifest.yml"

# Block Kit limits from Slack's reference (docs.slack.dev/reference/block-kit).
MAX_BLOCKS = 50
# Undocumented, but real: Slack refuses a message whose blocks hold more text than about this
# (bolt-js#2509 measured ~13,200 with markdown blocks; 12,000 is the safe figure).
MAX_BLOCKS_TEXT = 12_000
MAX_TEXT_ARG = 40_000  # the top-level `text` argument (msg_too_long)
BLOCK_ID_MAX, ACTION_ID_MAX, VALUE_MAX, URL_MAX = 255, 255, 2000, 3000
TEXT_LIMITS = {"section": 3000, "header": 150, "context": 3000, "markdown": 12_000}
SECTION_FIELDS_MAX, SECTION_FIELD_TEXT_MAX = 10, 2000
CONTEXT_ELEMENTS_MAX, ACTIONS_ELEMENTS_MAX, CONTEXT_ACTIONS_ELEMENTS_MAX = 10, 25, 5
BUTTON_TEXT_MAX, ACCESSIBILITY_LABEL_MAX = 75, 75
MESSAGE_BLOCK_TYPES = {
    "section",
    "header",
    "context",
    "actions",
    "divider",
    "context_actions",
    "rich_text",
    "markdown",
    "image",
    "input",
    "file",
    "video",
}
MODAL_BLOCK_TYPES = MESSAGE_BLOCK_TYPES - {"context_actions", "markdown"}

# Bot-token scopes each Web API method needs (any one of a set). Methods missing here need none.
METHOD_SCOPES: dict[str, set[str]] = {
    "chat.postMessage": {"chat:write"},
    "chat.update": {"chat:write"},
    "chat.postEphemeral": {"chat:write"},
    "chat.startStream": {"chat:write"},
    "chat.appendStream": {"chat:write"},
    "chat.stopStream": {"chat:write"},
    "reactions.add": {"reactions:write"},
    "reactions.remove": {"reactions:write"},
    "users.info": {"users:read"},
    "usergroups.users.list": {"usergroups:read"},
    "assistant.threads.setStatus": {"assistant:write"},
    "assistant.threads.setSuggestedPrompts": {"assistant:write"},
    "assistant.threads.setTitle": {"assistant:write"},
}
# conversations.* need the history/read scope of the conversation's type.
HISTORY_SCOPE = {"im": "im:history", "mpim": "mpim:history", "private": "groups:history", "public": "channels:history"}
READ_SCOPE = {"im": "im:read", "mpim": "mpim:read", "private": "groups:read", "public": "channels:read"}
# Per-method rate tiers (calls per minute per workspace): Tier 2 ~20, Tier 3 ~50, Tier 4 ~100.
RATE_TIERS: dict[str, int] = {
    "chat.startStream": 20,
    "chat.stopStream": 20,
    "chat.appendStream": 100,
    "conversations.replies": 50,
    "conversations.history": 50,
    "conversations.info": 50,
    "users.info": 100,
    "usergroups.users.list": 20,
    "auth.test": 100,
    "views.open": 100,
    "reactions.add": 50,
    "reactions.remove": 50,
}
REPLIES_MAX_LIMIT = 1000
HISTORY_MAX_LIMIT = 999  # conversations.history: "maximum of 999", default 100


def manifest_scopes(path: Path = MANIFEST) -> set[str]:
    """The bot scopes `slack-manifest.yml` asks for: what an installed app's token would carry."""
    import yaml

    return set(yaml.safe_load(path.read_text())["oauth_config"]["scopes"]["bot"])


class BlockKitError(Exception):
    """A payload Slack would refuse; `error` is the API error code, `detail` says where."""

    def __init__(self, error: str, detail: str):
        super().__init__(f"{error}: {detail}")
        self.error, self.detail = error, detail


def _fail(detail: str) -> None:
    raise BlockKitError("invalid_blocks", detail)


def _text_object(obj: Any, where: str, limit: int, *, plain_only: bool = False) -> int:
    """Check a text object; return its length (what counts toward the message's total)."""
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        _fail(f"{where}: not a text object")
    if plain_only and obj["type"] != "plain_text":
        _fail(f"{where}: must be plain_text")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        _fail(f"{where}: text must be a non-empty string")
    if len(text) > limit:
        _fail(f"{where}: must be less than {limit + 1} characters")
    if "emoji" in obj and obj["type"] == "mrkdwn":
        _fail(f"{where}: emoji is only for plain_text")
    return len(text)


def _id(value: Any, where: str, limit: int) -> None:
    if value is not None and (not isinstance(value, str) or not value or len(value) > limit):
        _fail(f"{where}: must be a string of 1-{limit} characters")


def _url(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > URL_MAX):
        _fail(f"{where}: must be a URL of at most {URL_MAX} characters")


def _button(el: dict, where: str) -> int:
    size = _text_object(el.get("text"), f"{where}.text", BUTTON_TEXT_MAX, plain_only=True)
    _id(el.get("action_id"), f"{where}.action_id", ACTION_ID_MAX)
    _id(el.get("value"), f"{where}.value", VALUE_MAX)
    _url(el.get("url"), f"{where}.url")
    if el.get("style") not in (None, "primary", "danger"):
        _fail(f"{where}.style: must be primary or danger")
    _id(el.get("accessibility_label"), f"{where}.accessibility_label", ACCESSIBILITY_LABEL_MAX)
    return size


def _feedback_buttons(el: dict, where: str) -> int:
    _id(el.get("action_id"), f"{where}.action_id", ACTION_ID_MAX)
    size = 0
    for side in ("positive_button", "negative_button"):
        part = el.get(side)
        if not isinstance(part, dict):
            _fail(f"{where}.{side}: required")
        size += _text_object(part.get("text"), f"{where}.{side}.text", BUTTON_TEXT_MAX, plain_only=True)
        if not isinstance(part.get("value"), str) or not part["value"] or len(part["value"]) > VALUE_MAX:
            _fail(f"{where}.{side}.value: must be a string of 1-{VALUE_MAX} characters")
        _id(part.get("accessibility_label"), f"{where}.{side}.accessibility_label", ACCESSIBILITY_LABEL_MAX)
    return size


def _element(el: Any, where: str, allowed: set[str]) -> int:
    if not isinstance(el, dict) or el.get("type") not in allowed:
        _fail(f"{where}: element type {el.get('type') if isinstance(el, dict) else el!r} not allowed here")
    kind = el["type"]
    if kind == "button":
        return _button(el, where)
    if kind == "feedback_buttons":
        return _feedback_buttons(el, where)
    if kind == "icon_button":
        _id(el.get("action_id"), f"{where}.action_id", ACTION_ID_MAX)
        return _text_object(el.get("text"), f"{where}.text", BUTTON_TEXT_MAX, plain_only=True)
    if kind in ("plain_text", "mrkdwn"):
        return _text_object(el, where, TEXT_LIMITS["context"])
    if kind == "image":
        _url(el.get("image_url"), f"{where}.image_url")
        _id(el.get("alt_text"), f"{where}.alt_text", 2000)
        return 0
    if kind == "plain_text_input":
        _id(el.get("action_id"), f"{where}.action_id", ACTION_ID_MAX)
        if not 0 < int(el.get("max_length", 3000)) <= 3000:
            _fail(f"{where}.max_length: at most 3000")
        return 0
    _id(el.get("action_id"), f"{where}.action_id", ACTION_ID_MAX)
    return 0


def validate_blocks(blocks: Any, *, surface: str = "message") -> int:
    """Raise `BlockKitError` where Slack would refuse `blocks`; return their total text length.

    Per block type: required fields, text limits, element types and counts; `block_id`s unique and
    at most 255 characters; at most 50 blocks (100 in a modal). The caller enforces the total.
    """
    allowed = MESSAGE_BLOCK_TYPES if surface == "message" else MODAL_BLOCK_TYPES
    if not isinstance(blocks, list):
        _fail("blocks must be an array")
    if len(blocks) > (MAX_BLOCKS if surface == "message" else 100):
        _fail(f"no more than {MAX_BLOCKS} items allowed")
    total, seen_ids = 0, set()
    for i, block in enumerate(blocks):
        where = f"[{i}]"
        if not isinstance(block, dict) or block.get("type") not in allowed:
            _fail(f"{where}: unknown or unsupported block type")
        block_id = block.get("block_id")
        _id(block_id, f"{where}.block_id", BLOCK_ID_MAX)
        if block_id is not None:
            if block_id in seen_ids:
                _fail(f"{where}.block_id: duplicate block_id {block_id!r}")
            seen_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                _fail(f"{where}: section needs text or fields")
            if "text" in block:
                total += _text_object(block["text"], f"{where}.text", TEXT_LIMITS["section"])
            fields = block.get("fields") or []
            if len(fields) > SECTION_FIELDS_MAX:
                _fail(f"{where}.fields: at most {SECTION_FIELDS_MAX}")
            for j, f in enumerate(fields):
                total += _text_object(f, f"{where}.fields[{j}]", SECTION_FIELD_TEXT_MAX)
            if "accessory" in block:
                total += _element(
                    block["accessory"],
                    f"{where}.accessory",
                    {"button", "image", "overflow", "static_select", "datepicker"},
                )
        elif kind == "header":
            total += _text_object(block.get("text"), f"{where}.text", TEXT_LIMITS["header"], plain_only=True)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= CONTEXT_ELEMENTS_MAX:
                _fail(f"{where}.elements: 1-{CONTEXT_ELEMENTS_MAX} items")
            for j, el in enumerate(elements):
                total += _element(el, f"{where}.elements[{j}]", {"plain_text", "mrkdwn", "image"})
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= ACTIONS_ELEMENTS_MAX:
                _fail(f"{where}.elements: 1-{ACTIONS_ELEMENTS_MAX} items")
            for j, el in enumerate(elements):
                total += _element(
                    el,
                    f"{where}.elements[{j}]",
                    {"button", "overflow", "static_select", "datepicker", "checkboxes", "radio_buttons"},
                )
        elif kind == "context_actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= CONTEXT_ACTIONS_ELEMENTS_MAX:
                _fail(f"{where}.elements: 1-{CONTEXT_ACTIONS_ELEMENTS_MAX} items")
            for j, el in enumerate(elements):
                total += _element(el, f"{where}.elements[{j}]", {"feedback_buttons", "icon_button"})
        elif kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str) or not text or len(text) > TEXT_LIMITS["markdown"]:
                _fail(f"{where}.text: 1-{TEXT_LIMITS['markdown']} characters")
            total += len(text)
        elif kind == "input":
            total += _text_object(block.get("label"), f"{where}.label", 2000, plain_only=True)
            if "hint" in block:
                total += _text_object(block["hint"], f"{where}.hint", 2000, plain_only=True)
            _element(
                block.get("element"),
                f"{where}.element",
                {"plain_text_input", "static_select", "checkboxes", "radio_buttons", "datepicker"},
            )
        elif kind == "image":
            _url(block.get("image_url"), f"{where}.image_url")
        elif kind == "rich_text":
            if not isinstance(block.get("elements"), list):
                _fail(f"{where}.elements: required")
            total += len(json.dumps(block["elements"]))  # an over-estimate of its text, on the safe side
    return total


def validate_message_blocks(blocks: Any) -> None:
    """Per-block checks, then the whole message's text budget (`msg_blocks_too_long`), and the
    markdown blocks' own: 12,000 characters for all of a payload's `markdown` blocks together."""
    total = validate_blocks(blocks)
    markdown = sum(len(b.get("text") or "") for b in blocks if isinstance(b, dict) and b.get("type") == "markdown")
    if markdown > TEXT_LIMITS["markdown"]:
        raise BlockKitError(
            "msg_blocks_too_long", f"{markdown} characters in markdown blocks (limit {TEXT_LIMITS['markdown']})"
        )
    if total > MAX_BLOCKS_TEXT:
        raise BlockKitError("msg_blocks_too_long", f"{total} characters of block text (limit ~{MAX_BLOCKS_TEXT})")


class ApiError(Exception):
    """Raised by a method implementation to answer `{"ok": false, "error": ...}` with HTTP 200."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


@dataclass
class Call:
    """One recorded Web API request (also recorded when it was answered with an error or a 429)."""

    method: str
    args: dict[str, Any]
    token: str | None
    authorization: str | None
    http_method: str
    time: float
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    peer: tuple | None = None  # the client's (host, port): one per TCP connection


@dataclass
class Fault:
    """One injected failure: the HTTP status, body and headers to answer, and for which calls."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    when: Callable[[dict], bool] | None = None


@dataclass
class BotIdentity:
    """Who the bot token belongs to, as reported by `auth.test` and stamped on the bot's messages."""

    team_id: str = TEAM_ID
    user_id: str = BOT_USER_ID
    bot_id: str = BOT_ID
    user: str = "supportbot"
    app_id: str = APP_ID


def _ts_us(ts: str) -> int:
    """A Slack ts ("1700000000.000100") as integer microseconds, for ordering."""
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int(fraction.ljust(6, "0")[:6] or 0)


class Workspace:
    """The emulated workspace's state: messages per channel, seeded channels/users/groups, views."""

    def __init__(self, bot: BotIdentity):
        self.bot = bot
        self.messages: dict[str, list[dict]] = defaultdict(list)  # channel -> messages ordered by ts
        self.channels: dict[str, dict] = {}
        self.users: dict[str, dict] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.views: dict[str, dict] = {}
        self.ephemeral: list[dict] = []
        self.reactions: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(dict)
        self.assistant_threads: dict[tuple[str, str], dict] = defaultdict(lambda: {"status_history": []})
        self.open_streams: set[tuple[str, str]] = set()
        self.dm_channels: dict[str, str] = {}  # user id -> the bot's DM channel with them
        self.used_triggers: set[str] = set()
        self._last_us = 0
        self._view_ids = itertools.count(1)

    def next_ts(self) -> str:
        """A fresh message ts, strictly increasing even within one microsecond."""
        us = max(int(time.time() * 1_000_000), self._last_us + 1)
        self._last_us = us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def add_message(
        self,
        channel: str,
        text: str,
        user: str = USER_ID,
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict:
        """Store a message (seeded by a test or posted through the API) and return it."""
        msg = {"type": "message", "user": user, "text": text, "ts": ts or self.next_ts(), "team": self.bot.team_id}
        if thread_ts:
            msg["thread_ts"] = thread_ts
        msg.update(extra)
        self._last_us = max(self._last_us, _ts_us(msg["ts"]))
        self.messages[channel].append(msg)
        self.messages[channel].sort(key=lambda m: _ts_us(m["ts"]))
        return msg

    def message(self, channel: str, ts: str) -> dict | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def thread(self, channel: str, thread_ts: str) -> list[dict]:
        """Parent + replies, oldest first (what `conversations.replies` returns)."""
        return [m for m in self.messages.get(channel, []) if thread_ts in (m["ts"], m.get("thread_ts"))]

    def is_channel(self, channel: str) -> bool:
        return channel in self.channels or bool(CHANNEL_ID_RE.fullmatch(channel or ""))

    def dm_channel(self, user: str) -> str:
        """The bot's DM channel with `user` (Slack opens it when a message is addressed to a user id)."""
        if user not in self.dm_channels:
            self.dm_channels[user] = "D" + user[1:]
            self.channels.setdefault(self.dm_channels[user], {"user": user})
        return self.dm_channels[user]

    def kind(self, channel: str) -> str:
        """ "im", "mpim", "private" or "public": what decides the scopes a call in it needs."""
        info = self.channels.get(channel, {})
        if channel.startswith("D") or info.get("is_im"):
            return "im"
        if info.get("is_mpim"):
            return "mpim"
        return "private" if channel.startswith("G") or info.get("is_private") else "public"

    def is_member(self, channel: str) -> bool:
        """The bot is in every DM and, unless a test says otherwise, every channel."""
        return channel.startswith("D") or self.channels.get(channel, {}).get("is_member", True)

    def channel_info(self, channel: str) -> dict | None:
        if not self.is_channel(channel):
            return None
        base: dict[str, Any] = {
            "id": channel,
            "created": 1700000000,
            "is_archived": False,
            "context_team_id": self.bot.team_id,
        }
        if channel.startswith("D"):
            base.update(is_im=True, is_channel=False, is_private=True, user=USER_ID, is_open=True, is_member=True)
        else:
            private = channel.startswith("G")
            base.update(
                name=f"channel-{channel.lower()}",
                is_im=False,
                is_channel=not private,
                is_group=private,
                is_private=private,
                is_member=True,
                is_ext_shared=False,
            )
        return {**base, **self.channels.get(channel, {})}

    def user_info(self, user: str) -> dict | None:
        if user not in self.users and not re.fullmatch(r"[UW][A-Z0-9]{2,}", user or ""):
            return None
        info: dict[str, Any] = {
            "id": user,
            "team_id": self.bot.team_id,
            "name": f"user-{user.lower()}",
            "real_name": f"Test User {user}",
            "tz": "America/Los_Angeles",
            "tz_label": "Pacific Standard Time",
            "tz_offset": -28800,
            "is_bot": user == self.bot.user_id,
            "deleted": False,
            "is_admin": False,
        }
        info.update(self.users.get(user, {}))
        info.setdefault(
            "profile",
            {"real_name": info["real_name"], "display_name": info["name"], "email": f"{info['name']}@example.test"},
        )
        return info

    def new_view_id(self) -> str:
        return f"V{next(self._view_ids):09d}"


class WebApi:
    """Slack Web API method implementations over a Workspace: args dict in, response body out."""

    def __init__(self, ws: Workspace, socket_url: Callable[[], str]):
        self.ws = ws
        self.bot = ws.bot
        self._socket_url = socket_url
        self.methods: dict[str, Callable[[dict], dict]] = {
            "auth.test": self.auth_test,
            "chat.postMessage": self.post_message,
            "chat.update": self.update,
            "chat.postEphemeral": self.post_ephemeral,
            "chat.getPermalink": self.get_permalink,
            "chat.startStream": self.start_stream,
            "chat.appendStream": self.append_stream,
            "chat.stopStream": self.stop_stream,
            "reactions.add": lambda a: self._react(a, add=True),
            "reactions.remove": lambda a: self._react(a, add=False),
            "conversations.replies": self.conversations_replies,
            "conversations.history": self.conversations_history,
            "conversations.info": self.conversations_info,
            "users.info": self.users_info,
            "usergroups.users.list": self.usergroups_users_list,
            "views.open": self.views_open,
            "views.update": self.views_update,
            "assistant.threads.setStatus": lambda a: self._assistant_thread(a, status=a.get("status", "")),
            "assistant.threads.setSuggestedPrompts": lambda a: self._assistant_thread(
                a, prompts=a.get("prompts") or [], prompts_title=a.get("title")
            ),
            "assistant.threads.setTitle": lambda a: self._assistant_thread(a, title=a.get("title", "")),
            "apps.connections.open": lambda a: {"url": self._socket_url()},
        }

    # --- helpers -------------------------------------------------------------------------
    def _channel(self, a: dict, key: str = "channel", *, member: bool = False, users: bool = False) -> str:
        """The conversation a call names; `users=True` accepts a user id (its DM with the bot),
        `member=True` requires the bot to be in it, as posting and reading history do."""
        channel = a.get(key) or ""
        if users and USER_ID_RE.fullmatch(channel):
            return self.ws.dm_channel(channel)
        if not self.ws.is_channel(channel):
            raise ApiError("channel_not_found")
        if self.ws.channels.get(channel, {}).get("is_archived"):
            raise ApiError("is_archived")
        if member and not self.ws.is_member(channel):
            raise ApiError("not_in_channel")
        return channel

    @staticmethod
    def _blocks(a: dict) -> None:
        if a.get("blocks") is not None:
            try:
                validate_message_blocks(a["blocks"])
            except BlockKitError as exc:
                raise ApiError(exc.error) from exc
        if len(a.get("text") or "") > MAX_TEXT_ARG:
            raise ApiError("msg_too_long")

    def _own_message(self, channel: str, ts: str | None) -> dict:
        msg = self.ws.message(channel, ts or "")
        if msg is None:
            raise ApiError("message_not_found")
        return msg

    def _post(self, channel: str, text: str, thread_ts: str | None, **extra: Any) -> dict:
        return self.ws.add_message(
            channel,
            text,
            user=self.bot.user_id,
            thread_ts=thread_ts,
            bot_id=self.bot.bot_id,
            app_id=self.bot.app_id,
            **extra,
        )

    @staticmethod
    def _pick(a: dict, *keys: str) -> dict:
        return {k: a[k] for k in keys if a.get(k) is not None}

    def _with_reactions(self, channel: str, msg: dict) -> dict:
        found = self.ws.reactions.get((channel, msg["ts"]), {})
        reactions = [{"name": n, "users": list(u), "count": len(u)} for n, u in found.items() if u]
        return {**msg, "reactions": reactions} if reactions else dict(msg)

    # --- auth / chat ---------------------------------------------------------------------
    def auth_test(self, a: dict) -> dict:
        return {
            "url": f"{PERMALINK_HOST}/",
            "team": "Emulator Test",
            "user": self.bot.user,
            "team_id": self.bot.team_id,
            "user_id": self.bot.user_id,
            "bot_id": self.bot.bot_id,
            "is_enterprise_install": False,
        }

    def post_message(self, a: dict) -> dict:
        channel = self._channel(a, member=True, users=True)
        self._blocks(a)
        if not any(a.get(k) for k in ("text", "blocks", "attachments", "markdown_text")):
            raise ApiError("no_text")
        msg = self._post(
            channel,
            a.get("text") or a.get("markdown_text") or "",
            a.get("thread_ts"),
            **self._pick(a, "blocks", "attachments", "metadata"),
        )
        return {"channel": channel, "ts": msg["ts"], "message": msg}

    def update(self, a: dict) -> dict:
        channel = self._channel(a, member=True)
        self._blocks(a)
        msg = self._own_message(channel, a.get("ts"))
        if msg.get("bot_id") != self.bot.bot_id:
            raise ApiError("cant_update_message")
        msg.update(self._pick(a, "text", "blocks", "attachments", "metadata"))
        msg["edited"] = {"user": self.bot.user_id, "ts": self.ws.next_ts()}
        return {"channel": channel, "ts": msg["ts"], "text": msg.get("text", ""), "message": msg}

    def post_ephemeral(self, a: dict) -> dict:
        channel = self._channel(a, member=True)
        self._blocks(a)
        if not a.get("user"):
            raise ApiError("user_not_found")
        if not any(a.get(k) for k in ("text", "blocks", "attachments")):
            raise ApiError("no_text")
        message_ts = self.ws.next_ts()
        self.ws.ephemeral.append(
            {
                "channel": channel,
                "message_ts": message_ts,
                **self._pick(a, "user", "text", "blocks", "attachments", "thread_ts"),
            }
        )
        return {"message_ts": message_ts}

    def get_permalink(self, a: dict) -> dict:
        channel = self._channel(a)
        ts = a.get("message_ts") or ""
        if not ts:
            raise ApiError("message_not_found")
        link = f"{PERMALINK_HOST}/archives/{channel}/p{ts.replace('.', '')}"
        msg = self.ws.message(channel, ts)
        if msg and msg.get("thread_ts") not in (None, ts):
            link += f"?thread_ts={msg['thread_ts']}&cid={channel}"
        return {"channel": channel, "permalink": link}

    # --- streaming (chat.startStream / appendStream / stopStream) -------------------------
    def _append_stream_content(self, msg: dict, a: dict) -> None:
        """Text arrives as `markdown_text` and/or `markdown_text` chunks (the SDK's ChatStream
        helper uses chunks); other chunk types (task/plan updates) are kept for inspection."""
        text = a.get("markdown_text") or ""
        for chunk in a.get("chunks") or []:
            if chunk.get("type") == "markdown_text":
                text += chunk.get("text", "")
            else:
                msg.setdefault("chunks", []).append(chunk)
        msg["text"] += text

    def _open_stream(self, a: dict) -> tuple[str, dict]:
        channel = self._channel(a)
        msg = self._own_message(channel, a.get("ts"))
        if (channel, msg["ts"]) not in self.ws.open_streams:
            raise ApiError("message_not_in_streaming_state")
        return channel, msg

    def start_stream(self, a: dict) -> dict:
        channel = self._channel(a, member=True)
        if not channel.startswith("D"):  # Slack requires the recipient outside DMs
            for key in ("recipient_team_id", "recipient_user_id"):
                if not a.get(key):
                    raise ApiError(f"missing_{key}")
        msg = self._post(channel, "", a.get("thread_ts"), **self._pick(a, "recipient_team_id", "recipient_user_id"))
        self._append_stream_content(msg, a)
        self.ws.open_streams.add((channel, msg["ts"]))
        return {"channel": channel, "ts": msg["ts"]}

    def append_stream(self, a: dict) -> dict:
        channel, msg = self._open_stream(a)
        self._append_stream_content(msg, a)
        return {"channel": channel, "ts": msg["ts"]}

    def stop_stream(self, a: dict) -> dict:
        channel, msg = self._open_stream(a)
        self._blocks(a)
        self._append_stream_content(msg, a)
        msg.update(self._pick(a, "blocks", "metadata"))
        self.ws.open_streams.discard((channel, msg["ts"]))
        return {"channel": channel, "ts": msg["ts"], "message": msg}

    # --- reactions / conversations / users -------------------------------------------------
    def _react(self, a: dict, add: bool) -> dict:
        channel = self._channel(a, member=True)
        if not a.get("timestamp") or not a.get("name"):
            raise ApiError("no_item_specified" if not a.get("timestamp") else "invalid_name")
        users = self.ws.reactions[(channel, a["timestamp"])].setdefault(a["name"], [])
        if (self.bot.user_id in users) == add:
            raise ApiError("already_reacted" if add else "no_reaction")
        if add:
            users.append(self.bot.user_id)
        else:
            users.remove(self.bot.user_id)
        return {}

    def conversations_replies(self, a: dict) -> dict:
        """One page of a thread, oldest first: `limit` (default and max 1000) messages from
        `cursor` on; `has_more` and `response_metadata.next_cursor` name the next page."""
        channel = self._channel(a, member=True)
        ts = a.get("ts") or ""
        thread = self.ws.thread(channel, ts)
        if not thread:
            raise ApiError("thread_not_found")
        try:
            limit = max(1, min(int(a.get("limit") or REPLIES_MAX_LIMIT), REPLIES_MAX_LIMIT))
            start = int(a["cursor"].removeprefix("dXNlcjo")) if a.get("cursor") else 0
        except (TypeError, ValueError):
            raise ApiError("invalid_cursor") from None
        replies = [m for m in thread if m["ts"] != ts]
        messages = [self._with_reactions(channel, m) for m in thread]
        for m in messages:
            if m["ts"] == ts and replies:
                m.update(
                    thread_ts=ts,
                    reply_count=len(replies),
                    latest_reply=replies[-1]["ts"],
                    reply_users=sorted({r["user"] for r in replies if r.get("user")}),
                )
        page = messages[start : start + limit]
        more = start + limit < len(messages)
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": f"dXNlcjo{start + limit}" if more else ""},
        }

    def conversations_history(self, a: dict) -> dict:
        """Top-level messages (and thread broadcasts) of a conversation, newest first, between
        `oldest` and `latest` (exclusive unless `inclusive`); `limit` (default 100, max 999) per
        page, `cursor` for the next one."""
        channel = self._channel(a, member=True)
        try:
            limit = max(1, min(int(a.get("limit") or 100), HISTORY_MAX_LIMIT))
            start = int(a["cursor"].removeprefix("bmV4dDo")) if a.get("cursor") else 0
            oldest = _ts_us(str(a["oldest"])) if a.get("oldest") else 0
            latest = _ts_us(str(a["latest"])) if a.get("latest") else None
        except (TypeError, ValueError):
            raise ApiError("invalid_cursor") from None
        inclusive = str(a.get("inclusive")).lower() in ("1", "true")

        def within(ts: str) -> bool:
            us = _ts_us(ts)
            low = us >= oldest if inclusive else us > oldest
            return low and (latest is None or (us <= latest if inclusive else us < latest))

        top = [
            m
            for m in reversed(self.ws.messages.get(channel, []))
            if (m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast") and within(m["ts"])
        ]
        metadata = str(a.get("include_all_metadata")).lower() in ("1", "true")
        page = [
            {k: v for k, v in self._with_reactions(channel, m).items() if metadata or k != "metadata"}
            for m in top[start : start + limit]
        ]
        more = start + limit < len(top)
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": f"bmV4dDo{start + limit}" if more else ""},
        }

    def conversations_info(self, a: dict) -> dict:
        info = self.ws.channel_info(a.get("channel") or "")
        if info is None:
            raise ApiError("channel_not_found")
        return {"channel": info}

    def users_info(self, a: dict) -> dict:
        info = self.ws.user_info(a.get("user") or "")
        if info is None:
            raise ApiError("user_not_found")
        return {"user": info}

    def usergroups_users_list(self, a: dict) -> dict:
        group = a.get("usergroup") or ""
        if group not in self.ws.usergroups:
            raise ApiError("no_such_subteam")
        return {"users": list(self.ws.usergroups[group])}

    # --- views / assistant -----------------------------------------------------------------
    def views_open(self, a: dict) -> dict:
        """A trigger id works once, within 3 s of the interaction that carried it."""
        trigger_id = a.get("trigger_id") or ""
        issued = trigger_issued_at(trigger_id)
        if issued is None:
            raise ApiError("invalid_trigger_id")
        if trigger_id in self.ws.used_triggers or time.time() - issued > TRIGGER_TTL_SECONDS:
            raise ApiError("expired_trigger_id")
        if not isinstance(a.get("view"), dict):
            raise ApiError("invalid_arguments")
        try:
            validate_blocks(a["view"].get("blocks") or [], surface="modal")
        except BlockKitError as exc:
            raise ApiError(exc.error) from exc
        self.ws.used_triggers.add(trigger_id)
        view_id = self.ws.new_view_id()
        view = {
            **a["view"],
            "id": view_id,
            "team_id": self.bot.team_id,
            "app_id": self.bot.app_id,
            "bot_id": self.bot.bot_id,
            "root_view_id": view_id,
            "hash": f"{view_id}-1",
            "state": {"values": {}},
        }
        self.ws.views[view_id] = view
        return {"view": view}

    def views_update(self, a: dict) -> dict:
        by_external_id = {v.get("external_id"): v for v in self.ws.views.values() if v.get("external_id")}
        old = self.ws.views.get(a.get("view_id") or "") or by_external_id.get(a.get("external_id"))
        if old is None:
            raise ApiError("not_found")
        if a.get("hash") and a["hash"] != old["hash"]:
            raise ApiError("hash_conflict")
        if not isinstance(a.get("view"), dict):
            raise ApiError("invalid_arguments")
        version = int(old["hash"].rsplit("-", 1)[1]) + 1
        view = {**old, **a["view"], "id": old["id"], "hash": f"{old['id']}-{version}"}
        self.ws.views[old["id"]] = view
        return {"view": view}

    def _assistant_thread(self, a: dict, **fields: Any) -> dict:
        """assistant.threads.set*: remember the latest status/title/prompts (+ every status set)."""
        channel = self._channel(a, "channel_id")
        if not a.get("thread_ts"):
            raise ApiError("invalid_arguments")
        thread = self.ws.assistant_threads[(channel, a["thread_ts"])]
        thread.update(fields)
        if "status" in fields:
            thread["status_history"].append(fields["status"])
        return {}


class SocketModeHub:
    """Server side of Socket Mode: says hello, pushes envelopes to clients, matches their acks."""

    def __init__(self, app_id: str):
        self.app_id = app_id
        self.clients: list[web.WebSocketResponse] = []
        self.connected = asyncio.Event()
        self.acks: list[dict] = []  # every message a client sent back, in order
        self.connection_count = 0
        self._pending: dict[str, asyncio.Future] = {}

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)  # answers the SDK's "sdk-ping-pong:<t>" pings
        await ws.prepare(request)
        self.clients.append(ws)
        self.connection_count += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.clients),
                "debug_info": {"host": "emulator", "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }
        )
        self.connected.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(msg.data)
        finally:
            self.clients.remove(ws)
            if not self.clients:
                self.connected.clear()
        return ws

    def _on_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        self.acks.append(message)
        future = self._pending.pop(message.get("envelope_id"), None)
        if future is not None and not future.done():
            future.set_result(message)

    async def send(
        self,
        payload: dict,
        envelope_type: str = "events_api",
        *,
        timeout: float = 5.0,
        accepts_response_payload: bool | None = None,
    ) -> dict:
        """Push one envelope to every connected client; return the first ack (`{"envelope_id": ...}`)."""
        await asyncio.wait_for(self.connected.wait(), timeout)
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": (envelope_type != "events_api")
            if accepts_response_payload is None
            else accepts_response_payload,
        }
        if envelope_type == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        future = asyncio.get_running_loop().create_future()
        self._pending[envelope_id] = future
        try:
            for ws in list(self.clients):
                await ws.send_json(envelope)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no ack for {envelope_type} envelope {envelope_id} within {timeout}s") from None
        finally:
            self._pending.pop(envelope_id, None)

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask clients to reconnect, as Slack does periodically (the SDK calls apps.connections.open again)."""
        for ws in list(self.clients):
            await ws.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "emulator"}})

    async def close(self) -> None:
        for ws in list(self.clients):
            await ws.close()


class SlackEmulator:
    """The HTTP server: parses requests, checks tokens and scopes, rate-limits by tier, injects
    faults, records every call; also serves `response_url`s (slash commands, interactions).

    `valid_tokens=None` accepts any well-formed `xoxb-`/`xoxp-`/`xapp-` token; pass a set to be strict.
    `scopes=None` grants the bot token what `slack-manifest.yml` asks for; `rate_tiers=None`
    uses Slack's published tiers (`RATE_TIERS`); pass `{}` to switch rate limiting off.
    """

    def __init__(
        self,
        *,
        bot: BotIdentity | None = None,
        valid_tokens: set[str] | None = None,
        scopes: set[str] | None = None,
        rate_tiers: dict[str, int] | None = None,
    ):
        self.bot = bot or BotIdentity()
        self.valid_tokens = valid_tokens
        self.scopes = manifest_scopes() if scopes is None else set(scopes)
        self.rate_tiers = dict(RATE_TIERS if rate_tiers is None else rate_tiers)
        self._recent: dict[str, deque[float]] = defaultdict(deque)  # method -> times of accepted calls
        self.responses: list[dict] = []  # what the bot POSTed to response_urls, in order
        self.workspace = Workspace(self.bot)
        self.socket = SocketModeHub(self.bot.app_id)
        self.api = WebApi(self.workspace, lambda: self.socket_url)
        self.calls: list[Call] = []
        self.port = 0
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._delays: dict[str, deque[float]] = defaultdict(deque)  # method -> seconds, one per call
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> SlackEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{kind}/{token}", self._handle_response_url)
        app.router.add_get("/socket-mode", self.socket.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self.socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """The slack_sdk `base_url` (the SDK urljoin()s method names onto it, so the trailing / matters)."""
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, kind: str = "commands") -> str:
        """A `response_url` for a payload: what the bot POSTs there lands in `self.responses`."""
        return f"http://127.0.0.1:{self.port}/response/{kind}/{uuid.uuid4().hex[:12]}"

    @property
    def socket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket-mode"

    # --- recording -----------------------------------------------------------------------------
    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until `count` calls to `method` were recorded (use instead of sleeps); return them."""
        assert self._changed is not None, "emulator not started"
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(self.calls_to(method)) >= count), timeout)
        except TimeoutError:
            seen = [c.method for c in self.calls]
            raise AssertionError(f"expected {count} {method} call(s) within {timeout}s; calls so far: {seen}") from None
        return self.calls_to(method)

    # --- fault injection -----------------------------------------------------------------------
    def inject(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int = 200,
        times: int = 1,
        retry_after: int | None = None,
        when: Callable[[dict], bool] | None = None,
    ) -> None:
        """The next `times` calls to `method` (only those whose args satisfy `when`, if given) fail:
        with HTTP `status` (429 adds `Retry-After`, 5xx is a server error) and/or `{"ok": false,
        "error": error}`."""
        if error is None:
            error = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable"}.get(status, "fatal_error")
        headers = {"Retry-After": str(1 if retry_after is None else retry_after)} if status == 429 else {}
        for _ in range(times):
            self._faults[method].append(Fault(status, {"ok": False, "error": error}, headers, when))

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls to `method` answer HTTP 429 + `Retry-After`, like Slack's limiter."""
        self.inject(method, status=429, times=times, retry_after=retry_after)

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """The next `times` calls to `method` answer `{"ok": false, "error": error}`."""
        self.inject(method, error=error, times=times)

    def delay(self, method: str, seconds: float, times: int = 1) -> None:
        """The next `times` calls to `method` are answered only after `seconds` (a slow Slack)."""
        self._delays[method].extend([seconds] * times)

    def pending_faults(self, method: str) -> int:
        return len(self._faults[method])

    # --- seeding / inspection shortcuts -----------------------------------------------------------
    def add_message(
        self,
        channel: str,
        text: str,
        user: str = USER_ID,
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict:
        return self.workspace.add_message(channel, text, user=user, ts=ts, thread_ts=thread_ts, **extra)

    def add_channel(self, channel: str, **fields: Any) -> None:
        self.workspace.channels[channel] = fields

    def add_user(self, user: str, **fields: Any) -> None:
        self.workspace.users[user] = fields

    def add_usergroup(self, usergroup: str, users: list[str]) -> None:
        self.workspace.usergroups[usergroup] = list(users)

    def message(self, channel: str, ts: str) -> dict | None:
        return self.workspace.message(channel, ts)

    def thread(self, channel: str, thread_ts: str) -> list[dict]:
        return self.workspace.thread(channel, thread_ts)

    def bot_replies(self, channel: str, thread_ts: str, *, finished: bool = True) -> list[dict]:
        """The bot's messages in a thread as Slack shows them, posted whole or streamed; with
        `finished`, a streamed one only once its stream was stopped."""
        return [
            m
            for m in self.workspace.thread(channel, thread_ts)
            if m.get("bot_id")
            and m["ts"] != thread_ts
            and not (finished and (channel, m["ts"]) in self.workspace.open_streams)
        ]

    @property
    def socket_connected(self) -> asyncio.Event:
        return self.socket.connected

    async def socket_send_event(
        self,
        payload: dict,
        envelope_type: str = "events_api",
        *,
        timeout: float = 5.0,
        accepts_response_payload: bool | None = None,
    ) -> dict:
        return await self.socket.send(
            payload, envelope_type, timeout=timeout, accepts_response_payload=accepts_response_payload
        )

    # --- HTTP ------------------------------------------------------------------------------------
    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _read_args(request)
        authorization = request.headers.get("Authorization")
        token = authorization[7:] if authorization and authorization.startswith("Bearer ") else args.pop("token", None)
        if self._delays[method]:
            await asyncio.sleep(self._delays[method].popleft())
        status, body, headers = self._respond(method, args, token)
        if token and token.startswith("xoxb-"):  # Slack reports the token's scopes on every response
            headers = {**headers, "X-OAuth-Scopes": ",".join(sorted(self.scopes))}
        text = json.dumps(body)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.calls.append(
            Call(
                method,
                args,
                token,
                authorization,
                request.method,
                time.time(),
                status,
                json.loads(text),
                tuple(peer) if peer else None,
            )
        )
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return web.Response(text=text, status=status, headers=headers, content_type="application/json")

    def _respond(self, method: str, args: dict, token: str | None) -> tuple[int, dict, dict]:
        fault = next((f for f in self._faults[method] if f.when is None or f.when(args)), None)
        if fault is not None:
            self._faults[method].remove(fault)
            return fault.status, fault.body, fault.headers
        handler = self.api.methods.get(method)
        try:
            if handler is None:
                raise ApiError("unknown_method")
            self._authorize(method, token)
            self._check_scope(method, args, token)
            if (limited := self._rate_limited(method)) is not None:
                return limited
            return 200, {"ok": True, **handler(args)}, {}
        except ApiError as e:
            body = {"ok": False, "error": e.error}
            if e.error == "missing_scope":
                body.update(
                    needed=",".join(sorted(self._needed_scopes(method, args))), provided=",".join(sorted(self.scopes))
                )
            return 200, body, {}

    def _authorize(self, method: str, token: str | None) -> None:
        if not token:
            raise ApiError("not_authed")
        well_formed = token.startswith(("xoxb-", "xoxp-", "xapp-"))
        if not well_formed or (self.valid_tokens is not None and token not in self.valid_tokens):
            raise ApiError("invalid_auth")
        if (method == "apps.connections.open") != token.startswith("xapp-"):
            raise ApiError("not_allowed_token_type")

    def _needed_scopes(self, method: str, args: dict) -> set[str]:
        """Any one of these scopes lets the bot token call `method` with these args."""
        if method in ("conversations.replies", "conversations.history"):
            return {HISTORY_SCOPE[self.workspace.kind(args.get("channel") or "")]}
        if method == "conversations.info":
            return {READ_SCOPE[self.workspace.kind(args.get("channel") or "")]}
        return METHOD_SCOPES.get(method, set())

    def _check_scope(self, method: str, args: dict, token: str | None) -> None:
        needed = self._needed_scopes(method, args)
        if token and token.startswith("xoxb-") and needed and not needed & self.scopes:
            raise ApiError("missing_scope")

    def _rate_limited(self, method: str) -> tuple[int, dict, dict] | None:
        """A 429 with Retry-After once a method's tier is used up within the last minute."""
        per_minute = self.rate_tiers.get(method)
        if not per_minute:
            return None
        now, recent = time.monotonic(), self._recent[method]
        while recent and now - recent[0] >= 60:
            recent.popleft()
        if len(recent) >= per_minute:
            retry_after = max(1, int(60 - (now - recent[0])) + 1)
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
        recent.append(now)
        return None

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        """A `response_url` POST: Slack accepts a message body (JSON) and answers 200 "ok"."""
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return web.Response(status=400, text="no_text")
        if body.get("blocks") is not None:
            try:
                validate_message_blocks(body["blocks"])
            except BlockKitError as exc:
                return web.Response(status=400, text=exc.error)
        self.responses.append({"url": str(request.url), **body})
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return web.Response(text="ok")

    async def wait_for_response(self, count: int = 1, timeout: float = 5.0) -> list[dict]:
        """Wait until `count` response_url POSTs arrived; return them."""
        assert self._changed is not None, "emulator not started"
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(self.responses) >= count), timeout)
        except TimeoutError:
            raise AssertionError(f"expected {count} response_url POST(s) within {timeout}s") from None
        return self.responses


async def _read_args(request: web.Request) -> dict[str, Any]:
    """Merge query string + body; the SDK sends JSON for some methods, form/query params for others."""
    args: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            form = await request.post()  # urlencoded or multipart; file parts are skipped
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
    for key in JSON_ARGS & args.keys():
        if isinstance(args[key], str) and args[key].startswith(("[", "{")):
            args[key] = json.loads(args[key])
    return args
