"""The weekly loop: export last week's feedback, rerun the frozen eval set, write the report, digest.

`run_weekly` is the whole job (the CLI's cron equivalent runs the same steps as two commands);
`WeeklyScheduler` runs it inside the bot once a week at a configured weekday and hour (UTC).
The last run time is persisted in the data dir, so a restart neither re-runs a finished week
nor skips a week whose slot passed while the bot was down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.compare import compare_reports
from evals.metrics import meets_targets
from evals.report import load_history, threshold_summary, write_report
from evals.schema import METRICS, EvalReport

if TYPE_CHECKING:
    from bot.settings import Settings

log = logging.getLogger(__name__)

PostDigest = Callable[[str], Awaitable[Any]]


def reports_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "evals" / "reports"


@dataclass
class WeeklyResult:
    digest: str
    report: EvalReport
    paths: dict[str, Path]
    export_summary: str


def digest_text(
    report: EvalReport | Mapping[str, Any],
    previous: EvalReport | Mapping[str, Any] | None,
    export_summary: str,
    html_path: Path,
) -> str:
    """A few Slack lines: headline numbers (the registry's digest metrics) with the change since the previous run."""
    report = EvalReport.of(report)
    before_report = EvalReport.of(previous) if previous is not None else None
    parts = []
    for metric in METRICS:
        value = report.value(metric) if metric.digest else None
        if value is None:
            continue
        before = before_report.value(metric) if before_report else None
        change = f" ({value - before:+.2f})" if before is not None else ""
        parts.append(f"{metric.short_title(report.k)} {value:.2f}{change}")
    latency = report.latency_ms
    lines = [
        f"*Weekly eval* on {Path(report.config.dataset or 'dataset').name} ({report.cases} cases, {report.config.generator})",
        " · ".join(parts),
        f"latency p50 {latency.p50 or 0:.0f} ms, p95 {latency.p95 or 0:.0f} ms · cost ${report.usage.cost_usd:.4f}",
        f"Feedback export: {export_summary}",
        f"Report: {html_path}",
    ]
    advice = report.threshold_advice or {}
    if advice.get("suggested") is not None and not meets_targets(advice):
        lines.insert(-2, threshold_summary(advice) or "")  # only when the threshold misses: then it is news
    return "\n".join(lines)


async def run_weekly(
    settings: Settings,
    *,
    store=None,
    embedder=None,
    pipeline=None,
    since: str = "7d",
    report_dir: Path | None = None,
    progress: bool = False,
) -> WeeklyResult:
    """Export feedback, run the eval on `settings.eval_dataset`, write the report, return the digest."""
    from bot.store import open_store
    from evals.cases import load_cases
    from evals.export import default_candidates_path, default_review_path, export_feedback, parse_since
    from evals.runner import run_eval
    from knowledge.embeddings import Embedder

    embedder = embedder or Embedder.from_settings(settings)
    own_store = store is None
    store = store or open_store(settings)
    try:
        exported = await export_feedback(
            store,
            embedder,
            since=parse_since(since),
            candidates_path=default_candidates_path(settings),
            review_path=default_review_path(settings),
            frozen_paths=[Path(settings.eval_dataset)],
        )
    finally:
        if own_store:
            await store.aclose()
    cases = load_cases(settings.eval_dataset)
    report = EvalReport.of(
        await run_eval(
            settings,
            cases,
            k=settings.answer_k,
            embedder=embedder,
            pipeline=pipeline,
            progress=progress,
            dataset=settings.eval_dataset,
        )
    )
    out = Path(report_dir) if report_dir else reports_dir(settings)
    history = load_history(out / "history", str(settings.eval_dataset))
    previous = history[-1] if history else None
    changes = compare_reports(report, previous) if previous else []
    paths = await asyncio.to_thread(write_report, report, out, changes)
    summary = exported.summary()
    digest = digest_text(report, previous, summary, paths["html"])
    gaps = await asyncio.to_thread(weekly_gaps, store, settings, parse_since(since))
    costs = cost_summary(await asyncio.to_thread(store.interactions, parse_since(since)))
    text = "\n".join(part for part in (digest, gaps, costs) if part)
    return WeeklyResult(text, report, paths, summary)


def weekly_gaps(store, settings: Settings, since: datetime | None) -> str:
    """The digest's knowledge-gap lines from the week's escalations (the I/O edge of `evals.gaps`)."""
    from evals.gaps import gaps_text, knowledge_gaps
    from knowledge.learned import LearnedStore

    learned = LearnedStore(settings.data_dir).answered_interactions()
    return gaps_text(knowledge_gaps(store.interactions(), store.feedback(since), learned))


def cost_summary(interactions: list[Mapping[str, Any]]) -> str:
    """Claude spend per answer, by channel and by UTC day, from the interaction log ("" when
    nothing cost anything); and how many answers the daily budget sent to the extractive answerer."""
    by_channel: dict[str, list[float]] = {}
    by_day: dict[str, list[float]] = {}
    capped = 0
    for row in interactions:
        cost = float(row.get("cost_usd") or 0.0)
        by_channel.setdefault(str(row.get("channel") or "none"), []).append(cost)
        created = row.get("created_at")
        day = created.date().isoformat() if isinstance(created, datetime) else str(created)[:10]
        by_day.setdefault(day, []).append(cost)
        capped += row.get("generator") == "extractive-budget"
    if not any(cost for costs in by_channel.values() for cost in costs):
        return ""

    def per_answer(groups: dict[str, list[float]]) -> str:
        return ", ".join(f"{name} ${sum(c) / len(c):.4f}/answer (${sum(c):.2f})" for name, c in sorted(groups.items()))

    lines = [f"Claude cost by channel: {per_answer(by_channel)}", f"by day: {per_answer(by_day)}"]
    if capped:
        lines.append(f"{capped} answers were extractive because the daily budget was spent")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ scheduling


def latest_slot(now: datetime, weekday: int, hour: int) -> datetime:
    """The most recent weekly slot (weekday at hour:00 UTC) at or before `now`."""
    now = now.astimezone(timezone.utc)
    slot = now.replace(hour=hour, minute=0, second=0, microsecond=0) - timedelta(days=(now.weekday() - weekday) % 7)
    return slot if slot <= now else slot - timedelta(days=7)


def next_run_at(since: datetime, now: datetime, weekday: int, hour: int) -> datetime:
    """When to run next, given the last run (or the moment the scheduler was first armed).

    The latest slot when it passed after `since` (catch up after downtime), else next week's.
    """
    slot = latest_slot(now, weekday, hour)
    return slot if since < slot else slot + timedelta(days=7)


class WeeklyScheduler:
    """An asyncio task that runs `run_weekly` once a week and hands the digest to `post_digest`."""

    def __init__(
        self,
        settings: Settings,
        *,
        post_digest: PostDigest | None = None,
        job: Callable[..., Awaitable[WeeklyResult]] = run_weekly,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        max_sleep_seconds: float = 3600.0,
        claim_run: Callable[[str, str], Awaitable[bool]] | None = None,
        **job_options: Any,
    ) -> None:
        self.settings = settings
        self.post_digest = post_digest
        self.job = job
        self.clock = clock
        self.max_sleep_seconds = max_sleep_seconds  # wake up now and then: clocks jump, laptops sleep
        self.job_options = job_options
        # With replicas: `claim_run(job, period)` is True for one of them per week (bot.coordination),
        # so the digest is posted once however many replicas run a scheduler.
        self.claim_run = claim_run
        self.state_path = Path(settings.data_dir) / "evals" / "weekly-state.json"
        self._task: asyncio.Task | None = None

    # -------- persisted state

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _save_state(self, **fields: datetime) -> None:
        state = {**self._state(), **{name: moment.isoformat() for name, moment in fields.items()}}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, self.state_path)

    def last_run(self) -> datetime | None:
        value = self._state().get("last_run")
        return datetime.fromisoformat(value) if value else None

    def next_run(self) -> datetime:
        """The next slot; a scheduler that never ran counts from when it was first armed, not from now."""
        state = self._state()
        since = state.get("last_run") or state.get("armed_at")
        if since is None:
            since = self.clock().isoformat()
            self._save_state(armed_at=self.clock())
        return next_run_at(
            datetime.fromisoformat(since),
            self.clock(),
            self.settings.weekly_eval_weekday,
            self.settings.weekly_eval_hour,
        )

    # -------- running

    async def run_if_due(self) -> str | None:
        """Run the job when its slot has come; returns the digest posted, or None when not due."""
        now = self.clock()
        if self.next_run() > now:
            return None
        self._save_state(last_run=now)  # first, so a crash inside the job cannot loop on it
        period = latest_slot(now, self.settings.weekly_eval_weekday, self.settings.weekly_eval_hour).isoformat()
        if self.claim_run is not None and not await self.claim_run("weekly-eval", period):
            log.info("weekly eval of %s is run by another replica", period)
            return None
        try:
            result = await self.job(self.settings, **self.job_options)
            digest = result.digest
        except Exception as exc:  # the bot keeps serving; the team hears about it
            log.exception("weekly eval failed")
            digest = f"*Weekly eval failed*: {type(exc).__name__}: {exc}"
        if self.post_digest is not None:
            try:
                await self.post_digest(digest)
            except Exception:
                log.exception("posting the weekly eval digest failed")
        return digest

    async def _loop(self) -> None:
        while True:
            await self.run_if_due()
            wait = (self.next_run() - self.clock()).total_seconds()
            await asyncio.sleep(min(max(wait, 1.0), self.max_sleep_seconds))

    def start(self) -> asyncio.Task | None:
        """Start the task when `settings.weekly_eval` is on; None otherwise."""
        if not self.settings.weekly_eval or self._task is not None:
            return self._task
        self._task = asyncio.create_task(self._loop(), name="weekly-eval")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
