"""Metrics exposition, request ids in JSON logs, and secret masking in every part of a record."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.engine.types import Answer, Decision, Usage
from bot.observability import (
    Metrics,
    configure_logging,
    describe_text,
    record_answer,
    record_refresh,
    render,
    request_context,
    secret_values,
)
from bot.settings import Settings
from knowledge.index import RefreshReport, SourceCounts

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PLANTED = {
    "xoxb-1234-5678-AbCdEfGh": "xoxb-[REDACTED]",
    "xapp-1-A0B1C2-3456-deadbeef": "xapp-[REDACTED]",
    "sk-ant-api03-Zz9_Yy8-Xx7": "sk-ant-[REDACTED]",
    "Bearer eyJhbGciOi.J9.x-y": "Bearer [REDACTED]",
    SIGNING_SECRET: "[REDACTED]",
}


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed back the way Prometheus reads it."""
    body, _ = render(metrics)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def answer(**changes) -> Answer:
    fields = dict(
        interaction_id="i1",
        question="How do I export invoices?",
        text="Use Export [1].",
        decision=Decision.ANSWER_WITH_CAVEAT,
        generator="claude",
        latency_ms={"retrieve": 40.0, "generate": 1200.0, "judge": 5.0, "total": 1250.0},
        usage=Usage(
            input_tokens=200,
            output_tokens=80,
            cache_read_input_tokens=600,
            cache_creation_input_tokens=200,
            cost_usd=0.0042,
        ),
    )
    return Answer(**{**fields, **changes})


def test_record_answer_exposes_every_series():
    metrics = Metrics()
    record_answer(metrics, answer())
    record_answer(
        metrics,
        answer(
            decision=Decision.ESCALATE,
            generator="extractive",
            usage=Usage(),
            latency_ms={"retrieve": 30.0, "total": 35.0},
        ),
    )
    got = samples(metrics)

    assert got[("supportbot_answers_total", (("decision", "answer_with_caveat"), ("generator", "claude")))] == 1
    assert got[("supportbot_answers_total", (("decision", "escalate"), ("generator", "extractive")))] == 1
    assert got[("supportbot_stage_seconds_count", (("stage", "retrieve"),))] == 2
    assert got[("supportbot_stage_seconds_sum", (("stage", "generate"),))] == pytest.approx(1.2)
    assert got[("supportbot_stage_seconds_bucket", (("le", "2.0"), ("stage", "total")))] == 2
    for kind, value in {"input": 200, "output": 80, "cache_read": 600, "cache_write": 200}.items():
        assert got[("supportbot_llm_tokens_total", (("kind", kind),))] == value
    assert got[("supportbot_llm_cost_usd_total", ())] == pytest.approx(0.0042)
    assert got[("supportbot_llm_prompt_cache_read_ratio", ())] == pytest.approx(600 / 1000)
    assert ("process_resident_memory_bytes", ()) in got or ("process_cpu_seconds_total", ()) in got


def test_content_type_is_prometheus_text():
    body, content_type = render(Metrics())
    assert content_type.startswith("text/plain; version=")
    assert b"# TYPE supportbot_event_ack_seconds histogram" in body


def test_registries_are_independent():
    """Two apps in one process (tests, or an eval runner next to the bot) must not collide."""
    first, second = Metrics(), Metrics()
    first.events.labels(type="app_mention").inc()
    first.feedback.labels(rating="down").inc()
    first.escalations.labels(trigger="asked for a human").inc()
    assert samples(first)[("supportbot_events_received_total", (("type", "app_mention"),))] == 1
    assert ("supportbot_events_received_total", (("type", "app_mention"),)) not in samples(second)


def test_record_refresh_counts_outcomes_and_documents():
    metrics = Metrics()
    record_refresh(
        metrics, RefreshReport(sources=[SourceCounts("a", added=3, unchanged=7, failed=1)], failures=["x: bad"])
    )
    record_refresh(metrics, RefreshReport(sources=[SourceCounts("a", unchanged=10)]))
    record_refresh(metrics, None)
    got = samples(metrics)
    assert [got[("supportbot_refreshes_total", (("outcome", o),))] for o in ("ok", "partial", "failed")] == [1, 1, 1]
    assert got[("supportbot_refresh_documents_total", (("change", "unchanged"),))] == 17
    assert got[("supportbot_refresh_documents_total", (("change", "added"),))] == 3
    assert got[("supportbot_last_refresh_timestamp_seconds", ())] > 0


@pytest.fixture
def log_lines():
    """Logs through the bot's handler into a buffer; returns a function giving the parsed lines."""
    stream = io.StringIO()
    root = logging.getLogger()
    previous_level = root.level
    handler = configure_logging("DEBUG", secrets=[SIGNING_SECRET, "short"], stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(previous_level)


@pytest.mark.parametrize("token", list(PLANTED))
def test_secret_masked_in_message_args_and_extra(log_lines, token):
    log = logging.getLogger("supportbot.test")
    log.info(f"in the message {token} end")
    log.info("in the args %s end", token)
    log.info("in extra", extra={"header": token, "nested": {"list": [f"x {token}"]}})
    message, args, extra = log_lines()
    masked = PLANTED[token]
    assert message["message"] == f"in the message {masked} end"
    assert args["message"] == f"in the args {masked} end"
    assert extra["header"] == masked and extra["nested"] == {"list": [f"x {masked}"]}
    assert token not in json.dumps([message, args, extra])


def test_secret_masked_in_traceback(log_lines):
    log = logging.getLogger("supportbot.test")
    try:
        raise RuntimeError("auth failed for xoxb-1234-5678-AbCdEfGh")
    except RuntimeError:
        log.exception("slack call failed")
    (line,) = log_lines()
    assert "xoxb-[REDACTED]" in line["exc_info"] and "AbCdEfGh" not in line["exc_info"]


def test_short_configured_secret_is_not_masked_everywhere(log_lines):
    logging.getLogger("supportbot.test").info("a short answer")
    assert log_lines()[0]["message"] == "a short answer"


def test_bad_format_args_are_logged_not_raised(log_lines):
    logging.getLogger("supportbot.test").info("two %s %s", "xoxb-1-2")
    assert "xoxb-[REDACTED]" in log_lines()[0]["message"]


def test_request_id_in_every_line_and_inherited_by_tasks(log_lines):
    log = logging.getLogger("supportbot.test")

    async def answer_later() -> None:
        await asyncio.sleep(0)
        log.info("in a task")

    async def handle_event() -> None:
        with request_context("Ev0ABC") as request_id:
            log.info("received")
            task = asyncio.create_task(answer_later())  # the listener acks, the task answers
            assert request_id == "Ev0ABC"
        log.info("after")
        await task

    asyncio.run(handle_event())
    with request_context() as generated:
        log.info("generated id")
    lines = [line for line in log_lines() if line["logger"] == "supportbot.test"]
    assert [line["message"] for line in lines] == ["received", "after", "in a task", "generated id"]
    assert [line["request_id"] for line in lines[:3]] == ["Ev0ABC", None, "Ev0ABC"]
    assert lines[3]["request_id"] == generated and len(generated) == 16
    assert {"time", "level", "logger", "message"} <= lines[0].keys()


def test_describe_text_hides_the_text():
    text = "my card number is 4111 1111 1111 1111, please refund " + "x" * 89
    assert describe_text(text) == "<142 chars>"
    assert describe_text(None) == "<0 chars>"


def test_secret_values_reads_every_configured_secret():
    settings = Settings(_env_file=None, slack_signing_secret=SIGNING_SECRET, anthropic_api_key="sk-ant-k")
    assert sorted(secret_values(settings)) == sorted([SIGNING_SECRET, "sk-ant-k"])


def test_configure_logging_replaces_its_own_handler_only(log_lines):
    root = logging.getLogger()
    before = len(root.handlers)
    handler = configure_logging("INFO", json=False, stream=io.StringIO())
    try:
        assert len(root.handlers) == before and handler in root.handlers
    finally:
        root.removeHandler(handler)
