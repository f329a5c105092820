"""The Slack layer's small parts: TTL dedupe, fair-use limiter, background tasks, and the manifest."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
import yaml

from bot.slack.ratelimit import AnswerLimiter
from bot.slack.tasks import BackgroundTasks
from bot.slack.ttlcache import TTLSet

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttlset_expires_and_stays_bounded():
    clock = Clock()
    seen = TTLSet(ttl_seconds=10, max_size=3, clock=clock)
    assert seen.first_time("a") and not seen.first_time("a")
    clock.now += 11
    assert seen.first_time("a")
    for key in "bcde":
        seen.add(key)
    assert len(seen) == 3 and "a" not in seen and "e" in seen


async def test_limiter_queues_a_user_over_the_rate_and_says_so():
    clock = Clock()
    limiter = AnswerLimiter(per_user_per_window=2, concurrency=5, window_seconds=0.2, clock=clock)
    told: list[float] = []

    async def on_queued(seconds: float) -> None:
        told.append(seconds)

    for _ in range(2):
        async with limiter.slot("U1", on_queued):
            pass
    async with limiter.slot("U2", on_queued):  # another user is not affected
        pass
    assert told == []
    async with limiter.slot("U1", on_queued):  # third within the window: waits for it, after being told
        pass
    assert told == [pytest.approx(0.2)]


async def test_limiter_global_concurrency_queues_instead_of_refusing():
    limiter = AnswerLimiter(per_user_per_window=100, concurrency=1)
    told: list[float] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with limiter.slot("U1", lambda s: asyncio.sleep(0)):
            await release.wait()

    async def second() -> str:
        async def on_queued(seconds: float) -> None:
            told.append(seconds)
            release.set()

        async with limiter.slot("U2", on_queued):
            return "answered"

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert await asyncio.wait_for(second(), 2) == "answered" and told == [0.0]
    await holder


async def test_background_tasks_log_failures_and_close(caplog):
    tasks = BackgroundTasks()

    async def boom() -> None:
        raise RuntimeError("kaput")

    with caplog.at_level(logging.ERROR):
        tasks.spawn(boom(), "boom")
        await tasks.drain(timeout=1)
    assert "background task boom failed" in caplog.text and len(tasks) == 0
    sleeper = tasks.spawn(asyncio.sleep(60), "sleeper")
    await tasks.close()
    assert sleeper.cancelled()


# --------------------------------------------------------------------------- manifest

# Web API methods the code calls -> the bot scope each needs (None: no scope needed).
METHOD_SCOPES = {
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "chat_stream": "chat:write",
    "chat_getPermalink": None,
    "views_open": None,
    "conversations_replies": "channels:history groups:history im:history mpim:history",
    "conversations_history": "channels:history groups:history",  # the escalation channel, searched by the sweep
    "views_update": None,
    "usergroups_users_list": "usergroups:read",
    "chat_stopStream": "chat:write",
    "reactions_add": "reactions:write",
    "reactions_remove": "reactions:write",
    "auth_test": None,
    "conversations_info": None,  # doctor only, optional: without channels:read it probes membership another way
}
# Bolt helpers used by the listeners -> scope.
BOLT_HELPER_SCOPES = {
    "set_status": "assistant:write",
    "set_title": "assistant:write",
    "set_suggested_prompts": "assistant:write",
    "say": "chat:write",
}
EVENT_SCOPES = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "assistant_thread_started": "assistant:write",
}


def test_manifest_lists_exactly_what_the_code_uses():
    manifest = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    source = "\n".join(p.read_text() for p in (ROOT / "bot" / "slack").glob("*.py"))
    called = set(re.findall(r"client\.(\w+)\(", source))
    assert called <= set(METHOD_SCOPES), f"add scopes for {called - set(METHOD_SCOPES)}"
    helpers = {name for name in BOLT_HELPER_SCOPES if re.search(rf"\b{name}\(", source)}
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    needed = {"commands"}
    for scopes in (
        [METHOD_SCOPES[m] for m in called]
        + [BOLT_HELPER_SCOPES[h] for h in helpers]
        + [EVENT_SCOPES[e] for e in events]
    ):
        needed.update((scopes or "").split())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed

    registered_commands = set(re.findall(r'app\.command\("([^"]+)"\)', source))
    assert {c["command"] for c in manifest["features"]["slash_commands"]} == registered_commands
    assert events == {"app_mention", "assistant_thread_started", "message.channels", "message.groups", "message.im"}
    assert 'app.event("app_mention")' in source and 'app.event("message")' in source
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert "app.action(" in source and "app.view(" in source
