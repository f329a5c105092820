"""Pure builders for what Slack sends *to* the bot: signed HTTP requests, events, interactions.

Shared with `slack_api.SlackEmulator` (same default ids), so a payload built here refers to
the workspace the emulator pretends to be.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

TEAM_ID = "T000TEST"
APP_ID = "A000APP"
BOT_USER_ID = "U000BOT"
BOT_ID = "B000BOT"
USER_ID = "U000USER"
CHANNEL_ID = "C000CHAN"
TRIGGER_TTL_SECONDS = 3.0  # a trigger_id opens a modal once, within 3 s of the interaction


def new_trigger_id(issued_at: float | None = None) -> str:
    """A trigger id as Slack makes them (`<n>.<n>.<hex>`), carrying when it was issued, so the
    emulator can refuse it once expired without having to be told about it."""
    issued_ms = int((time.time() if issued_at is None else issued_at) * 1000)
    return f"{issued_ms}.{uuid.uuid4().int % 10**9}.{uuid.uuid4().hex[:20]}"


def trigger_issued_at(trigger_id: str) -> float | None:
    """When `new_trigger_id` issued this id (None if it is not one of ours)."""
    head, _, rest = (trigger_id or "").partition(".")
    return int(head) / 1000 if head.isdigit() and rest else None


def sign_request(signing_secret: str, body: bytes | str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack adds to every HTTP request: v0 HMAC-SHA256 over `v0:{ts}:{body}`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(signing_secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def new_ts() -> str:
    """A message timestamp in Slack's `seconds.micros` format."""
    now = time.time()
    return f"{int(now)}.{int(now * 1_000_000) % 1_000_000:06d}"


def form_body(fields: dict[str, Any]) -> bytes:
    """Body for slash commands (`application/x-www-form-urlencoded`)."""
    return urlencode({k: v for k, v in fields.items() if v is not None}).encode()


def interactive_body(payload: dict[str, Any]) -> bytes:
    """Body for interactivity requests: the JSON payload wrapped in a `payload=` form field."""
    return form_body({"payload": json.dumps(payload)})


def json_body(payload: dict[str, Any]) -> bytes:
    """Body for Events API requests (`application/json`)."""
    return json.dumps(payload).encode()


def message_event(
    text: str,
    *,
    user: str = USER_ID,
    channel: str = CHANNEL_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    bot_id: str | None = None,
    subtype: str | None = None,
    channel_type: str | None = None,
) -> dict[str, Any]:
    """A `message` event. DM when channel starts with D (channel_type "im"); a thread reply
    when thread_ts is set (a DM thread reply is what bolt treats as an assistant-thread
    message); a bot message when bot_id is set."""
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "channel_type": channel_type or _channel_type(channel),
        "event_ts": ts,
        "team": TEAM_ID,
    }
    optional = {"thread_ts": thread_ts, "bot_id": bot_id, "subtype": subtype}
    event.update({k: v for k, v in optional.items() if v is not None})
    return event


def app_mention_event(
    text: str,
    *,
    user: str = USER_ID,
    channel: str = CHANNEL_ID,
    ts: str | None = None,
    thread_ts: str | None = None,
    bot_user_id: str = BOT_USER_ID,
) -> dict[str, Any]:
    """An `app_mention` event; the `<@bot>` mention is prefixed unless text already has it."""
    mention = f"<@{bot_user_id}>"
    event = message_event(
        text if mention in text else f"{mention} {text}", user=user, channel=channel, ts=ts, thread_ts=thread_ts
    )
    event["type"] = "app_mention"
    event.pop("channel_type")
    return event


def assistant_thread_started_event(
    *, user: str = USER_ID, channel: str = "D000DM", thread_ts: str | None = None, context: dict | None = None
) -> dict[str, Any]:
    """The event Slack sends when a user opens the assistant side panel."""
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "channel_id": channel,
            "thread_ts": thread_ts or new_ts(),
            "context": context or {},
        },
        "event_ts": new_ts(),
    }


def event_callback(
    event: dict[str, Any], event_id: str | None = None, team_id: str = TEAM_ID, bot_user_id: str = BOT_USER_ID
) -> dict[str, Any]:
    """The Events API envelope (HTTP body, or the `payload` of a Socket Mode events_api envelope)."""
    return {
        "token": "verification-token",
        "team_id": team_id,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def block_actions_payload(
    action_id: str,
    value: str,
    *,
    user: str = USER_ID,
    channel: str = CHANNEL_ID,
    message_ts: str | None = None,
    thread_ts: str | None = None,
    block_id: str = "actions",
    trigger_id: str | None = None,
    response_url: str | None = None,
    team_id: str = TEAM_ID,
) -> dict[str, Any]:
    """A button click (`block_actions`) on a message the bot posted (`team_id`: the clicker's team)."""
    ts = message_ts or new_ts()
    message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": ts, "text": ""}
    if thread_ts:
        message["thread_ts"] = thread_ts
    return {
        "type": "block_actions",
        "user": {"id": user, "username": f"user-{user.lower()}", "team_id": team_id},
        "api_app_id": APP_ID,
        "token": "verification-token",
        "container": {
            "type": "message",
            "message_ts": ts,
            "channel_id": channel,
            "is_ephemeral": False,
            **({"thread_ts": thread_ts} if thread_ts else {}),
        },
        "trigger_id": trigger_id or new_trigger_id(),
        "team": {"id": TEAM_ID, "domain": "emulator"},
        "channel": {"id": channel, "name": f"channel-{channel.lower()}"},
        "message": message,
        "response_url": response_url or f"https://hooks.slack.test/actions/{TEAM_ID}/1/x",
        "actions": [
            {"type": "button", "action_id": action_id, "block_id": block_id, "value": value, "action_ts": new_ts()}
        ],
    }


def view_submission_payload(
    callback_id: str,
    values: dict[str, dict[str, Any]],
    *,
    user: str = USER_ID,
    private_metadata: str = "",
    view_id: str = "V000VIEW",
) -> dict[str, Any]:
    """A modal submit; `values` is `{block_id: {action_id: {"type": ..., "value": ...}}}`."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "emulator"},
        "user": {"id": user, "username": f"user-{user.lower()}", "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "verification-token",
        "trigger_id": new_trigger_id(),
        "view": {
            "id": view_id,
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": private_metadata,
            "state": {"values": values},
            "hash": "h-1",
        },
        "response_urls": [],
    }


def slash_command_form(
    command: str,
    text: str = "",
    user_id: str = USER_ID,
    channel_id: str = CHANNEL_ID,
    trigger_id: str | None = None,
    response_url: str | None = None,
) -> dict[str, str]:
    """Slash command fields: `form_body(...)` them for HTTP, or send as a Socket Mode payload."""
    return {
        "token": "verification-token",
        "team_id": TEAM_ID,
        "team_domain": "emulator",
        "channel_id": channel_id,
        "channel_name": f"channel-{channel_id.lower()}",
        "user_id": user_id,
        "user_name": f"user-{user_id.lower()}",
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "response_url": response_url or f"https://hooks.slack.test/commands/{TEAM_ID}/1/x",
        "trigger_id": trigger_id or new_trigger_id(),
    }


def _channel_type(channel: str) -> str:
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")
