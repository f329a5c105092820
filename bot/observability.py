"""Metrics and logs for running the bot in production.

Metrics: one `Metrics` object per app, on its own `CollectorRegistry` rather than the process-wide
one, so several apps (and tests) can live in one process; `/metrics` serves `render(metrics)`.

Logs: one JSON object per line, each tagged with the request id of the Slack event being handled
(a `ContextVar`, so tasks spawned for the event inherit it), and with credentials masked before
any handler formats the record. User text stays out of INFO logs: log `describe_text(text)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from bot.engine.types import Answer
    from bot.settings import Settings
    from knowledge.index import RefreshReport

# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

STAGES = ("retrieve", "generate", "judge", "total")  # the pipeline's latency_ms keys, pre-created
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0)  # Slack retries after 3 s
# Metric label -> `Usage` field. Anthropic's input_tokens excludes cached tokens, so the prompt
# is input + cache_read + cache_write.
TOKEN_FIELDS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_input_tokens",
    "cache_write": "cache_creation_input_tokens",
}
PROMPT_KINDS = ("input", "cache_read", "cache_write")
LOOP_LAG_INTERVAL = 0.01  # the monitor's timer: 10 ms
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REFRESH_CHANGES = ("added", "updated", "unchanged", "deleted", "failed")
REFRESH_OUTCOMES = ("ok", "partial", "failed")
FEEDBACK_RATINGS = ("up", "down")


class Metrics:
    """Every series the bot exports. Callers use the attributes directly for one-line events
    (`metrics.events.labels(type="app_mention").inc()`) and `record_*` for composite ones."""

    def __init__(self, namespace: str = "supportbot") -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # memory, CPU, open files: the global registry's defaults

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, doc, labels, namespace=namespace, registry=self.registry, buckets=buckets)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace=namespace, registry=self.registry)

        self.events = counter("events_received", "Slack requests received, by event/action type.", ("type",))
        self.event_ack_seconds = histogram("event_ack_seconds", "Receipt to ack of a Slack request.", ACK_BUCKETS)
        self.answers = counter("answers", "Answers produced, by decision and generator.", ("decision", "generator"))
        self.escalations = counter("escalations", "Hand-offs to humans posted, by trigger.", ("trigger",))
        self.feedback = counter("feedback", "Feedback votes, by rating (up, down).", ("rating",))
        self.stage_seconds = histogram(
            "stage_seconds",
            "Answer latency by pipeline stage (retrieve, generate, judge, total).",
            STAGE_BUCKETS,
            ("stage",),
        )
        self.llm_tokens = counter(
            "llm_tokens", "LLM tokens by kind (input, output, cache_read, cache_write).", ("kind",)
        )
        self.llm_cost_usd = counter("llm_cost_usd", "LLM spend in US dollars.")
        # per channel: cost per answer = answer_cost_usd / answers_costed; per day = increase(...[1d])
        self.answer_cost_usd = counter("answer_cost_usd", "LLM spend of answers, by Slack channel.", ("channel",))
        self.answers_costed = counter("answers_costed", "Answers whose spend is counted, by channel.", ("channel",))
        self.llm_cost_today_usd = gauge("llm_cost_today_usd", "LLM spend of this UTC day so far (the budget's count).")
        self.budget_fallbacks = counter(
            "budget_fallbacks", "Answers given by the extractive answerer because the daily budget was spent."
        )
        self.prompt_cache_read_ratio = gauge(
            "llm_prompt_cache_read_ratio", "Share of prompt tokens read from the prompt cache since start."
        )
        self.refreshes = counter("refreshes", "Knowledge refreshes, by outcome (ok, partial, failed).", ("outcome",))
        self.refresh_documents = counter("refresh_documents", "Documents seen by refreshes, by change.", ("change",))
        self.last_refresh_timestamp = gauge(
            "last_refresh_timestamp_seconds", "Unix time of the last refresh that completed (alert when stale)."
        )
        self.event_loop_lag = histogram(
            "event_loop_lag_seconds",
            "How late the event loop woke a 10 ms timer: time it was blocked (work that belongs in a thread).",
            LOOP_LAG_BUCKETS,
        )
        for stage in STAGES:  # present from the start, so rate() and dashboards see zeros, not gaps
            self.stage_seconds.labels(stage=stage)
        for kind in TOKEN_FIELDS:
            self.llm_tokens.labels(kind=kind)
        for rating in FEEDBACK_RATINGS:
            self.feedback.labels(rating=rating)
        for outcome in REFRESH_OUTCOMES:
            self.refreshes.labels(outcome=outcome)
        for change in REFRESH_CHANGES:
            self.refresh_documents.labels(change=change)
        self._prompt_tokens = 0
        self._cache_read_tokens = 0

    def observe_prompt(self, prompt_tokens: int, cache_read_tokens: int) -> None:
        """Update the cache read ratio; kept here because a gauge cannot read counters back."""
        self._prompt_tokens += prompt_tokens
        self._cache_read_tokens += cache_read_tokens
        if self._prompt_tokens:
            self.prompt_cache_read_ratio.set(self._cache_read_tokens / self._prompt_tokens)


def record_answer(metrics: Metrics, answer: Answer, *, channel: str = "", spent_today: float | None = None) -> None:
    """Count one engine answer: decision, stage latencies, tokens, cost (per channel, and the
    day's spend when given) and cache use; and an answer the daily budget sent to the extractive answerer.

    Call once per answer, wherever it was asked. Escalation hand-offs are counted separately,
    where they are posted, because a human can also be asked for without the engine deciding so.
    """
    metrics.answers.labels(decision=answer.decision.value, generator=answer.generator).inc()
    for stage, milliseconds in answer.latency_ms.items():
        metrics.stage_seconds.labels(stage=stage).observe(milliseconds / 1000)
    tokens = {kind: getattr(answer.usage, field) for kind, field in TOKEN_FIELDS.items()}
    for kind, count in tokens.items():
        if count:
            metrics.llm_tokens.labels(kind=kind).inc(count)
    if answer.usage.cost_usd:
        metrics.llm_cost_usd.inc(answer.usage.cost_usd)
    if answer.generator != "none":
        metrics.answer_cost_usd.labels(channel=channel or "none").inc(answer.usage.cost_usd)
        metrics.answers_costed.labels(channel=channel or "none").inc()
    if spent_today is not None:
        metrics.llm_cost_today_usd.set(spent_today)
    if answer.signals.get("budget_exhausted"):
        metrics.budget_fallbacks.inc()
    metrics.observe_prompt(sum(tokens[kind] for kind in PROMPT_KINDS), tokens["cache_read"])


def record_refresh(metrics: Metrics, report: RefreshReport | None) -> None:
    """Count one refresh; pass None when it raised, so failed refreshes show up as well."""
    if report is None:
        metrics.refreshes.labels(outcome="failed").inc()
        return
    metrics.refreshes.labels(outcome="partial" if report.failures else "ok").inc()
    for change in REFRESH_CHANGES:
        metrics.refresh_documents.labels(change=change).inc(report.total(change))
    metrics.last_refresh_timestamp.set_to_current_time()


async def watch_event_loop(metrics: Metrics, interval: float = LOOP_LAG_INTERVAL) -> None:
    """Sleep `interval` in a loop and record each overshoot; runs until cancelled.

    A healthy loop wakes within a millisecond or so; anything that blocks it (CPU work or disk
    I/O on the loop thread) shows up here as lag, and as Slack acks that arrive late.
    """
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        metrics.event_loop_lag.observe(max(0.0, loop.time() - started - interval))


def render(metrics: Metrics) -> tuple[bytes, str]:
    """Body and Content-Type header for a `/metrics` response (Prometheus text format)."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


# --------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------

request_id_var: ContextVar[str | None] = ContextVar("supportbot_request_id", default=None)

REDACTED = "[REDACTED]"
SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {REDACTED}"),  # first: it may wrap one below
    (re.compile(r"(xox[abprs]|xapp)-[A-Za-z0-9-]+"), rf"\1-{REDACTED}"),  # Slack bot/user/app tokens
    (re.compile(r"sk-ant-[A-Za-z0-9_-]+"), f"sk-ant-{REDACTED}"),  # Anthropic API keys
)
MIN_LITERAL_SECRET = 8  # shorter configured "secrets" would mask ordinary words
# Attributes every LogRecord has; anything else on a record came from `extra=`.
STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}


@contextlib.contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Tag every log record inside the block, and in tasks created inside it, with a request id.

    Use the Slack `event_id` when there is one, so log lines match Slack's retries of that event.
    """
    token = request_id_var.set(request_id or uuid.uuid4().hex[:16])
    try:
        yield request_id_var.get() or ""
    finally:
        request_id_var.reset(token)


def describe_text(text: str | None) -> str:
    """What INFO logs show instead of a user's message: its size, never its content."""
    return f"<{len(text or '')} chars>"


def secret_values(settings: Settings) -> list[str]:
    """Every configured `SecretStr`, for literal masking: the signing secret has no telltale shape."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    return [
        value.get_secret_value() for value in values if hasattr(value, "get_secret_value") and value.get_secret_value()
    ]


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a Slack event) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message, args, `extra` fields and traceback.

    Installed on the handler (a logger's filters do not see records from child loggers), it
    rewrites the record itself, so every formatter after it only ever sees masked text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        literals = sorted({s for s in secrets if len(s) >= MIN_LITERAL_SECRET}, key=len, reverse=True)
        self._literals = re.compile("|".join(map(re.escape, literals))) if literals else None

    def redact(self, text: str) -> str:
        if self._literals is not None:
            text = self._literals.sub(REDACTED, text)
        for pattern, replacement in SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def scrub(self, value: Any) -> Any:
        """`value` with secrets masked; containers are rebuilt, other objects kept unless they leak."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.scrub(item) for key, item in value.items()}
        if isinstance(value, (list, tuple, set)):
            return [self.scrub(item) for item in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        text = str(value)
        masked = self.redact(text)
        return value if masked == text else masked

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, Mapping):
            record.msg = self.scrub(record.msg)
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # bad %-args: keep the line, masked, rather than raise
                message = f"{record.msg} {record.args!r}"
            record.msg, record.args = self.redact(message), ()
        for key in record.__dict__.keys() - STANDARD_ATTRS:
            record.__dict__[key] = self.scrub(record.__dict__[key])
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            masked = self.redact(text)
            if masked != text:  # formatters re-render exc_info, so drop it for the masked text
                record.exc_info, record.exc_text = None, masked
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


HANDLER_NAME = "supportbot"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def configure_logging(
    level: int | str = "INFO", json: bool = True, *, secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Install the bot's root handler: JSON lines (or text for a terminal) to stderr, with request
    ids and masked secrets. Calling it again replaces it; other handlers (pytest's) are kept.

    Pass `secrets=secret_values(settings)` so configured secrets are masked wherever they appear.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter(secrets))
    if json:
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}{request_id}",
                style="{",
                timestamp="time",
                rename_fields={"levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
