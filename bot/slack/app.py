"""The Slack app: an `AsyncApp` factory, the aiohttp web app for HTTP mode, and `serve`.

HTTP mode serves `/slack/events` (events, commands and interactivity share the URL),
`/healthz` and `/metrics`; Socket Mode dials out instead, for development and locked-down networks. Every Slack
client the bot makes talks to `settings.slack_api_url`, so an emulator can stand in for Slack.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler, async_default_handlers
from slack_sdk.web.async_client import AsyncWebClient

from bot.observability import Metrics, render
from bot.slack.answering import Responder
from bot.slack.escalation import Escalations
from bot.slack.listeners import Listeners
from bot.slack.ratelimit import AnswerLimiter
from bot.slack.tasks import BackgroundTasks

if TYPE_CHECKING:
    from bot.engine.pipeline import Pipeline
    from bot.settings import Settings
    from bot.store import InteractionStore
    from knowledge.index import KnowledgeIndex

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
RATE_LIMIT_RETRIES = 3


class ConfigurationError(RuntimeError):
    """The bot cannot start safely with these settings."""


@dataclass
class SupportBot:
    """Everything the listeners share: settings, the engine, the logs, and the work in flight."""

    settings: "Settings"
    pipeline: "Pipeline"
    store: "InteractionStore"
    index: "KnowledgeIndex"
    client: AsyncWebClient
    metrics: Metrics = field(default_factory=Metrics)
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    responder: Responder = field(init=False)
    escalations: Escalations = field(init=False)

    def __post_init__(self) -> None:
        self.escalations = Escalations(self.settings, self.store, self.metrics)
        self.responder = Responder(self.settings, self.pipeline, self.store, self.escalations,
                                   AnswerLimiter.from_settings(self.settings), self.metrics)


def secret(value) -> str | None:
    return value.get_secret_value() if value is not None and value.get_secret_value() else None


def create_web_client(settings, token: str | None = None) -> AsyncWebClient:
    """A Web API client on `settings.slack_api_url` that waits out 429s (Retry-After) and retries."""
    base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(
        token=token or secret(settings.slack_bot_token), base_url=base_url,
        retry_handlers=[*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES)],
    )


def check_settings(settings, *, socket_mode: bool = False) -> None:
    """Refuse to start on settings that cannot work or are unsafe; called before anything heavy loads."""
    if not secret(settings.slack_bot_token):
        raise ConfigurationError("SLACK_BOT_TOKEN is not set")
    if socket_mode and not secret(settings.slack_app_token):
        raise ConfigurationError("Socket Mode needs SLACK_APP_TOKEN (an xapp- token)")
    if not socket_mode and not secret(settings.slack_signing_secret) and settings.production:
        raise ConfigurationError("SLACK_SIGNING_SECRET is required in production (SUPPORTBOT_PRODUCTION=true)")


def create_app(settings, pipeline, store, index, *, socket_mode: bool = False) -> AsyncApp:
    """The bolt app with every listener registered; `app.supportbot` holds the shared state."""
    check_settings(settings, socket_mode=socket_mode)
    token = secret(settings.slack_bot_token)
    signing_secret = secret(settings.slack_signing_secret)
    if not signing_secret and not socket_mode:
        log.warning("SLACK_SIGNING_SECRET is not set: request signatures are NOT verified (development only)")
    client = create_web_client(settings, token)
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret or "",
        request_verification_enabled=bool(signing_secret) and not socket_mode,
        process_before_response=True,  # listeners only ack and spawn tasks; no untracked futures
        name="supportbot",
    )
    bot = SupportBot(settings=settings, pipeline=pipeline, store=store, index=index, client=client)
    Listeners(bot).register(app)
    app.supportbot = bot
    return app


def create_web_app(app: AsyncApp) -> web.Application:
    """HTTP mode: Slack posts to `/slack/events`; `/healthz` for load balancers, `/metrics` for Prometheus."""

    async def slack_events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "tasks_in_flight": len(app.supportbot.tasks)})

    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = render(app.supportbot.metrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def stop_background_work(_web_app: web.Application) -> None:
        await app.supportbot.tasks.close()

    web_app = web.Application()
    web_app.router.add_post(EVENTS_PATH, slack_events)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", metrics)
    web_app.on_cleanup.append(stop_background_work)
    return web_app


def create_socket_mode_handler(app: AsyncApp, settings):
    """Socket Mode: bolt's aiohttp client, reusing the app's Web API client (same base URL)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    check_settings(settings, socket_mode=True)
    return AsyncSocketModeHandler(app, app_token=secret(settings.slack_app_token), web_client=app.client)


async def serve(settings, *, socket_mode: bool = False, host: str = "0.0.0.0", port: int = 3000) -> None:
    """Run the bot until cancelled (Ctrl-C / SIGTERM)."""
    check_settings(settings, socket_mode=socket_mode)
    from bot.engine.pipeline import Pipeline
    from bot.store import InteractionStore
    from knowledge.index import KnowledgeIndex

    index = KnowledgeIndex.from_settings(settings)
    pipeline = Pipeline.from_settings(settings, index=index)
    store = InteractionStore.from_settings(settings)
    app = create_app(settings, pipeline, store, index, socket_mode=socket_mode)
    if socket_mode:
        handler = create_socket_mode_handler(app, settings)
        try:
            await handler.connect_async()
            log.info("supportbot connected in Socket Mode")
            await asyncio.Event().wait()
        finally:
            await handler.close_async()
            await app.supportbot.tasks.close()
        return
    runner = web.AppRunner(create_web_app(app), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("supportbot listening on http://%s:%d%s", host, port, EVENTS_PATH)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
