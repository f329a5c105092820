"""The Slack app: an `AsyncApp` factory, the aiohttp web app for HTTP mode, and `serve`.

HTTP mode serves `/slack/events` (events, commands and interactivity share the URL, bodies over
1 MiB get 413), `/healthz` (alive, and the data directory takes a write), `/readyz` (index open,
embedding model loaded, data directory writable) and `/metrics`; Socket Mode dials out instead, for
development and locked-down networks. Every Slack client the bot makes talks to
`settings.slack_api_url`, so an emulator can stand in for Slack.

`create_app` returns the bot's state (`SupportBot`, whose `app` is the bolt app). `serve` runs a
built bot with the background jobs it is given: the CLI builds the weekly eval scheduler and passes
it in, so the Slack server knows nothing of `evals/`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.coordination import LocalCoordination
from bot.observability import render, request_context, watch_event_loop
from bot.slack.listeners import Listeners
from bot.slack.state import SupportBot

if TYPE_CHECKING:
    from pydantic import SecretStr
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.coordination import Coordination
    from bot.engine.pipeline import Pipeline
    from bot.settings import Settings
    from bot.store import Store
    from knowledge.index import KnowledgeIndex

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
RATE_LIMIT_RETRIES = 3
SERVER_ERROR_RETRIES = 2  # HTTP 500/503 from Slack: two more tries with backoff, then the fallback chain
SLACK_CONNECTIONS = 32  # kept-alive connections to the Web API, shared by every call the bot makes
# Slack's largest requests (view submissions, big block_actions) are tens of KB; anything near a
# megabyte is not Slack, and is refused (413) before it is read into memory, let alone verified.
MAX_REQUEST_BYTES = 1024 * 1024
PROBE_TIMEOUT_SECONDS = 3.0  # a data dir on a hung network disk must fail the probe, not hang it
WRITE_PROBE = ".supportbot-write-probe"


class ConfigurationError(RuntimeError):
    """The bot cannot start safely with these settings."""


class BackgroundJob(Protocol):
    """A process-level job `serve` starts after the bot and stops before it drains (the weekly eval)."""

    def start(self) -> object: ...

    async def stop(self) -> None: ...


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None and value.get_secret_value() else None


def create_web_client(settings: Settings, token: str | None = None) -> AsyncWebClient:
    """A Web API client on `settings.slack_api_url` that waits out 429s (Retry-After) and retries
    connection errors and HTTP 500/503 (slack_sdk retries neither 5xx by default)."""
    base_url = settings.slack_api_url if settings.slack_api_url.endswith("/") else settings.slack_api_url + "/"
    return AsyncWebClient(
        token=token or secret(settings.slack_bot_token),
        base_url=base_url,
        retry_handlers=[
            *async_default_handlers(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            AsyncServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
        ],
    )


def check_settings(settings: Settings, *, socket_mode: bool = False) -> None:
    """Refuse to start on settings that cannot work or are unsafe; called before anything heavy loads."""
    if not secret(settings.slack_bot_token):
        raise ConfigurationError("SLACK_BOT_TOKEN is not set")
    if socket_mode and not secret(settings.slack_app_token):
        raise ConfigurationError("Socket Mode needs SLACK_APP_TOKEN (an xapp- token)")
    if not socket_mode and not secret(settings.slack_signing_secret) and settings.production:
        raise ConfigurationError("SLACK_SIGNING_SECRET is required in production (SUPPORTBOT_PRODUCTION=true)")


def create_app(
    settings: Settings,
    pipeline: Pipeline,
    store: Store,
    index: KnowledgeIndex,
    *,
    socket_mode: bool = False,
    coordination: Coordination | None = None,
) -> SupportBot:
    """The bolt app (`.app` of the result) with every listener registered, and the state they share."""
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
        # A base logger of our own (level NOTSET): without one, bolt copies the root logger's level
        # *at that moment* onto its loggers (including "supportbot"), freezing them at it.
        logger=logging.getLogger("bot.slack.bolt"),
    )
    bot = SupportBot(
        settings=settings,
        pipeline=pipeline,
        store=store,
        index=index,
        app=app,
        client=client,
        socket_mode=socket_mode,
        signing_secret=signing_secret if signing_secret and not socket_mode else None,
        coordination=coordination or LocalCoordination(),
    )
    Listeners(bot).register(app)
    return bot


def signature_problem(signing_secret: str, raw: bytes, headers: Any) -> str | None:
    """None if Slack signed this body within the last 5 minutes; otherwise why not. Checked on
    the raw bytes, before parsing: a forged request must not reach any parser."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not timestamp.isdigit() or not signature:
        return "missing or malformed signature headers"
    if not SignatureVerifier(signing_secret).is_valid(raw, timestamp, signature):
        return "invalid or expired signature"
    return None


def data_dir_problem(data_dir: Path) -> str | None:
    """None if the data directory takes a small durable write (create, write, fsync, delete);
    otherwise what is wrong, in words an operator can act on (read-only, full, not a directory)."""
    data_dir = Path(data_dir)
    probe = data_dir / f"{WRITE_PROBE}-{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"supportbot write probe\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return f"data directory {data_dir} is not writable: {exc.strerror or exc}"
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
    return None


def index_problem(index: KnowledgeIndex) -> str | None:
    """None once the knowledge index table is open (opening it if it exists)."""
    try:
        index.table  # noqa: B018 (opens and caches the table; IndexNotReady when there is none)
    except Exception as exc:  # noqa: BLE001 (IndexNotReady, a missing/corrupt dir, an unreadable disk)
        return str(exc) or type(exc).__name__
    return None


async def in_thread(check: Callable[..., str | None], *args: Any) -> str | None:
    """Run a blocking probe off the event loop, bounded in time."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(check, *args), PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"{check.__name__} timed out after {PROBE_TIMEOUT_SECONDS:g} s"


async def warm_up(bot: SupportBot) -> None:
    """Load the embedding model and open the index before the first question (called by `serve`
    once the port is open, so /healthz answers while it runs and /readyz turns 200 after it)."""
    try:
        await bot.pipeline.warm_up()
    except Exception:  # noqa: BLE001 (/readyz names what is missing; the first question retries)
        log.exception("warm-up failed")
    problem = await in_thread(index_problem, bot.index)
    if problem:
        log.warning("not ready: %s", problem)
    else:
        log.info("ready: index version %s open, embedding model loaded", bot.index.version)


def create_web_app(
    bot: SupportBot, *, warm: bool = False, max_request_bytes: int = MAX_REQUEST_BYTES, events: bool = True
) -> web.Application:
    """HTTP mode: Slack posts to `/slack/events`; `/healthz` (liveness) and `/readyz` (readiness)
    for orchestrators, `/metrics` for Prometheus. `warm=True` loads the model in the background.
    `events=False` (Socket Mode) serves only the health and metrics routes: events come over the
    websocket, and an unsigned-by-design app must not accept them over HTTP.

    /healthz: 200 while the process serves and its data directory takes a write; 503 with the
    reason otherwise (a read-only or full disk), so an orchestrator replaces the instance or pages
    someone, while the process itself keeps running and explaining instead of crash-looping.
    /readyz: 503 until the index is open and the embedding model loaded (and, with replicas, while
    PostgreSQL does not answer), naming what is missing.
    """
    app = bot.app

    async def slack_events(request: web.Request) -> web.Response:
        received = time.perf_counter()
        if not bot.accepting:  # shutting down: Slack retries, and the next instance answers
            return web.Response(status=503, text="shutting down", headers={"Retry-After": "5"})
        raw = await request.read()  # aiohttp answers 413 past client_max_size
        if bot.signing_secret and (problem := signature_problem(bot.signing_secret, raw, request.headers)):
            return web.Response(status=401, text=problem)  # before any byte of the body is parsed
        try:
            bolt_request = AsyncBoltRequest(
                body=raw.decode("utf-8"), query=request.query_string, headers=dict(request.headers)
            )
        except UnicodeDecodeError:
            return web.Response(status=400, text="request body is not UTF-8")
        except Exception:  # noqa: BLE001 (a malformed JSON or form body: the sender's mistake, not ours)
            return web.Response(status=400, text="malformed request body")
        body = bolt_request.body if isinstance(bolt_request.body, dict) else {}
        # Around the whole dispatch: bolt runs listeners after its middleware, so only here do the
        # listeners' log lines and the tasks they spawn inherit the Slack event id.
        with request_context(body.get("event_id")):
            bolt_response = await app.async_dispatch(bolt_request)
        if bolt_response.status < 400:  # acked (forged and malformed requests are not acks)
            bot.metrics.event_ack_seconds.observe(time.perf_counter() - received)
        return await to_aiohttp_response(bolt_response)

    async def healthz(_request: web.Request) -> web.Response:
        problem = await in_thread(data_dir_problem, bot.settings.data_dir)
        body: dict[str, Any] = {"ok": problem is None, "tasks_in_flight": len(bot.tasks)}
        if problem:
            log.error("health check failed: %s", problem)
            body["error"] = problem
        return web.json_response(body, status=503 if problem else 200)

    async def readyz(_request: web.Request) -> web.Response:
        checks = {
            "index": await in_thread(index_problem, bot.index),
            "embedding_model": None if bot.index.embedder.loaded else "the embedding model is not loaded yet",
            "data_dir": await in_thread(data_dir_problem, bot.settings.data_dir),
            "store": await bot.store.problem(),  # PostgreSQL reachable and migrated, when configured
        }
        not_ready = [name for name, problem in checks.items() if problem]
        body = {
            "ready": not not_ready,
            "not_ready": not_ready,
            "checks": {name: problem or "ok" for name, problem in checks.items()},
        }
        return web.json_response(body, status=503 if not_ready else 200)

    async def metrics(_request: web.Request) -> web.Response:
        body, content_type = render(bot.metrics)
        return web.Response(body=body, headers={"Content-Type": content_type})

    # Process-level chores live outside `bot.tasks`, whose drain() waits for the work of events.
    chores: list[asyncio.Task[Any]] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start_background_work(_web_app: web.Application) -> None:
        if bot.client.session is None:
            # Without a session slack_sdk opens (TCP + TLS) and closes a connection for every call;
            # bolt's per-request clients copy this one's session, so all calls share the pool.
            bot.client.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SLACK_CONNECTIONS))
            sessions.append(bot.client.session)
        loop = asyncio.get_running_loop()
        chores.append(loop.create_task(watch_event_loop(bot.metrics), name="event loop lag monitor"))
        if warm:
            chores.append(loop.create_task(warm_up(bot), name="warm-up"))
            # questions and escalations a dead process left behind: on start, then every interval
            chores.append(loop.create_task(sweep_forever(bot), name="sweep"))

    async def stop_background_work(_web_app: web.Application) -> None:
        for chore in chores:
            chore.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        await shutdown(bot, bot.settings.shutdown_drain_seconds)
        for session in sessions:  # after the tasks: their last posts still use it
            bot.client.session = None
            await session.close()
        await bot.store.aclose()  # a shared store's pool and heartbeat (after the last write)

    web_app = web.Application(client_max_size=max_request_bytes)
    if events:
        web_app.router.add_post(EVENTS_PATH, slack_events)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)
    web_app.on_startup.append(start_background_work)
    web_app.on_cleanup.append(stop_background_work)
    return web_app


async def sweep_forever(bot: SupportBot) -> None:
    """Recover unfinished questions and pending escalations (a crashed process's, or this one's
    after a restart) and prune old records: now, then every `sweep_interval_seconds`."""
    while True:
        try:
            await bot.responder.sweep(bot.client, bot.tasks.spawn)
        except Exception:  # noqa: BLE001 (housekeeping must never stop; the next round retries)
            log.exception("sweep failed")
        await asyncio.sleep(bot.settings.sweep_interval_seconds)


async def shutdown(bot: SupportBot, timeout: float) -> int:
    """Stop taking events, let in-flight answers finish for up to `timeout` seconds, record the
    ones that did not (the next start answers them), then cancel them. Returns how many."""
    bot.accepting = False
    if len(bot.tasks):
        try:
            await bot.tasks.drain(timeout)
        except TimeoutError:
            log.warning("shutdown: %d task(s) still running after %.0f s", len(bot.tasks), timeout)
    unfinished = await bot.responder.record_unfinished()
    if unfinished:
        log.warning("shutdown: %d unfinished question(s) recorded; they are answered on the next start", unfinished)
    await bot.tasks.close()
    return unfinished


def create_socket_mode_handler(bot: SupportBot) -> AsyncSocketModeHandler:
    """Socket Mode: bolt's aiohttp client, reusing the app's Web API client (same base URL)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    check_settings(bot.settings, socket_mode=True)
    return AsyncSocketModeHandler(bot.app, app_token=secret(bot.settings.slack_app_token), web_client=bot.client)


def build_bot(settings: Settings, *, socket_mode: bool = False) -> SupportBot:
    """The production bot: the index, pipeline and logs of `settings.data_dir` (checked first, so
    bad settings fail before the model loads). Called inside the event loop that will serve it."""
    check_settings(settings, socket_mode=socket_mode)
    from bot.coordination import open_coordination, open_index
    from bot.engine.pipeline import Pipeline
    from bot.store import open_store

    index = open_index(settings)
    pipeline = Pipeline.from_settings(settings, index=index)
    store = open_store(settings)  # PostgreSQL when SUPPORTBOT_DATABASE_URL is set
    return create_app(
        settings, pipeline, store, index, socket_mode=socket_mode, coordination=open_coordination(settings, store)
    )


async def serve(
    bot: SupportBot, *, host: str = "0.0.0.0", port: int = 3000, background: Sequence[BackgroundJob] = ()
) -> None:
    """Run the bot until cancelled or sent SIGTERM/SIGINT (what `docker stop` and Ctrl-C send):
    then it stops accepting events, drains in-flight answers (`SUPPORTBOT_SHUTDOWN_DRAIN_SECONDS`),
    records what is unfinished, and exits; the next start answers those. `background` jobs run
    alongside and are stopped first."""
    socket_mode = bot.socket_mode
    for job in background:
        job.start()
    # Both modes serve /healthz, /readyz and /metrics on the port (the container's HEALTHCHECK needs them).
    runner = web.AppRunner(create_web_app(bot, warm=True, events=not socket_mode), access_log=None)
    await runner.setup()
    handler = create_socket_mode_handler(bot) if socket_mode else None
    try:
        await web.TCPSite(runner, host, port).start()
        if handler is not None:
            await handler.connect_async()
            log.info("supportbot connected in Socket Mode; health and metrics on port %d", port)
        else:
            log.info("supportbot listening on http://%s:%d%s", host, port, EVENTS_PATH)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
                pass
        await stop.wait()
        log.info("supportbot: shutdown requested; draining in-flight answers")
    finally:
        bot.accepting = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                asyncio.get_running_loop().remove_signal_handler(signum)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        for job in background:
            await job.stop()
        if handler is not None:
            await handler.close_async()  # no new Socket Mode events
        await runner.cleanup()  # drains and records unfinished (stop_background_work)


def digest_poster(client: AsyncWebClient, channel: str | None) -> Callable[[str], Awaitable[None]]:
    """Posts the weekly eval digest to the report channel (only a warning when none is configured)."""

    async def post_digest(digest: str) -> None:
        if not channel:
            log.warning("weekly eval digest not posted: SUPPORTBOT_EVAL_REPORT_CHANNEL is not set")
            return
        await client.chat_postMessage(channel=channel, text=digest, unfurl_links=False, unfurl_media=False)

    return post_digest
