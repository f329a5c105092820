"""The refresh gate: a new index version goes live only if the frozen eval set says it is no worse.

A refresh that drops or rewrites documents can make the bot worse without anyone noticing. So
every refresh path (`supportbot refresh`, `/kb-refresh`, a scheduled refresh) goes through
`refresh_gated`: it refreshes and calibrates as before (`refresh_calibrated`), then runs the
frozen eval set (`SUPPORTBOT_EVAL_DATASET`) against the new version and compares it with the
report of the version it replaces. The allowances are the metric registry's (`evals.schema.METRICS`,
via `evals.compare.compare_reports`): one source of truth. Latency is not guarded (a loaded box is
not a worse index). When a guarded metric falls by more than its tolerance, the index is rolled
back to the previous tagged version (with its own calibration) and the result names the metrics,
the cases that fell and the documents that changed; `force=True` keeps the new version anyway.

The gate always answers offline (the extractive answerer): it judges the knowledge, not the model,
costs no tokens, and gives the same answer twice. It skips the cosine correctness (embedding every
answer and reference was half its time); token F1 still guards correctness. Each accepted version's report is kept in
`<index>/gate/v<version>.json`, so the next refresh compares against it without a second run.
The new version is visible to readers while its eval runs (seconds; LanceDB has no staged
commit); a blocked version is rolled back before the gate returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evals.compare import Change, compare_reports
from evals.schema import EvalReport

if TYPE_CHECKING:
    from bot.settings import Settings
    from knowledge.connectors.registry import SourceSpec
    from knowledge.index import KnowledgeIndex, RefreshReport
    from knowledge.storage import Sidecar

log = logging.getLogger(__name__)

GATE_CONCURRENCY = 4  # cases answered at once (searches run in worker threads)
GATE_DIR = "gate"
GATE_LOG = "gate.jsonl"
Status = Literal["passed", "blocked", "forced", "skipped"]
DocKey = tuple[str, str]  # (source, doc_id)


@dataclass
class FallenCase:
    """One eval case that did worse on the new version, and why it matters."""

    id: str
    question: str
    what: list[str]  # "gold document no longer retrieved", "now escalated", ...
    gold_sources: list[str]
    before_top: str | None
    after_top: str | None


@dataclass
class DocumentChanges:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.added) + len(self.updated) + len(self.deleted)


@dataclass
class GateResult:
    status: Status
    reason: str
    baseline_version: int | None = None
    candidate_version: int | None = None
    serving_version: int | None = None  # what readers get after the gate
    regressions: list[str] = field(default_factory=list)  # Change lines of the guarded metrics that fell
    fallen: list[FallenCase] = field(default_factory=list)
    documents: DocumentChanges = field(default_factory=DocumentChanges)
    cases: int = 0
    seconds: float = 0.0

    @property
    def blocked(self) -> bool:
        return self.status == "blocked"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GatedRefresh:
    report: RefreshReport
    gate: GateResult

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "gate": self.gate.to_dict()}


# ------------------------------------------------------------------------------ judging (pure)


def guarded_changes(candidate: EvalReport, baseline: EvalReport) -> list[Change]:
    """The registry's comparisons, minus latency: a refresh is judged on quality only."""
    return [change for change in compare_reports(candidate, baseline) if not change.metric.startswith("latency_ms.")]


def _top(row: dict[str, Any]) -> str | None:
    retrieved = row.get("retrieved") or []
    return retrieved[0].get("doc_id") if retrieved else None


def fallen_cases(candidate: EvalReport, baseline: EvalReport) -> list[FallenCase]:
    """Cases that got worse: their gold document dropped out of (or down) the ranking, an answerable
    question is now escalated, or an unanswerable one is now answered."""
    before = {row["id"]: row for row in baseline.per_case}
    fallen = []
    for row in candidate.per_case:
        old = before.get(row["id"])
        if old is None:
            continue
        what = []
        old_retrieval, new_retrieval = old.get("retrieval") or {}, row.get("retrieval") or {}
        if old_retrieval.get("hit@k", 0) > new_retrieval.get("hit@k", 0):
            what.append("no gold document retrieved any more")
        elif old_retrieval.get("recall@k", 0) > new_retrieval.get("recall@k", 0) + 1e-9:
            what.append("a gold document no longer retrieved")
        elif old_retrieval.get("mrr@k", 0) > new_retrieval.get("mrr@k", 0) + 1e-9:
            what.append("gold document ranked lower")
        if row.get("answerable") and row.get("escalated") and not old.get("escalated"):
            what.append("now escalated")
        if not row.get("answerable") and old.get("escalated") and not row.get("escalated"):
            what.append("now answered though unanswerable")
        if what:
            fallen.append(
                FallenCase(
                    id=row["id"],
                    question=row.get("question", ""),
                    what=what,
                    gold_sources=list(row.get("gold_sources") or old.get("gold_sources") or []),
                    before_top=_top(old),
                    after_top=_top(row),
                )
            )
    return fallen


def document_changes(before: dict[DocKey, str], after: dict[DocKey, str]) -> DocumentChanges:
    """Which documents a refresh added, updated or deleted (from the fingerprints on each side)."""
    return DocumentChanges(
        added=sorted(key[1] for key in after if key not in before),
        updated=sorted(key[1] for key in after if key in before and before[key] != after[key]),
        deleted=sorted(key[1] for key in before if key not in after),
    )


def describe_gate(gate: GateResult, *, limit: int = 10) -> str:
    """The lines admins read (terminal and Slack mrkdwn alike): what fell, which cases, which documents."""
    if gate.status == "skipped":
        return f"Refresh gate: skipped ({gate.reason})."
    if gate.status == "passed":
        return (
            f"Refresh gate: passed on {gate.cases} eval cases "
            f"(v{gate.baseline_version} -> v{gate.candidate_version}, {gate.seconds:.1f} s)."
        )
    head = (
        f"Refresh gate: BLOCKED v{gate.candidate_version}; still serving v{gate.serving_version}. "
        if gate.status == "blocked"
        else f"Refresh gate: metrics fell but --force kept v{gate.candidate_version}. "
    )
    lines = [head + gate.reason, "Metrics that fell:"]
    lines += [f"  • {line}" for line in gate.regressions]
    if gate.fallen:
        lines.append(f"Cases that fell ({len(gate.fallen)} of {gate.cases}):")
        for case in gate.fallen[:limit]:
            lines.append(f"  • {case.id} “{case.question[:120]}”: {', '.join(case.what)}")
        if len(gate.fallen) > limit:
            lines.append(f"  • … and {len(gate.fallen) - limit} more")
    docs = gate.documents
    lines.append(
        f"Documents changed: {len(docs.added)} added, {len(docs.updated)} updated, {len(docs.deleted)} deleted"
    )
    for name in ("deleted", "updated", "added"):
        names = getattr(docs, name)
        if names:
            shown = ", ".join(names[:limit]) + (f" … (+{len(names) - limit})" if len(names) > limit else "")
            lines.append(f"  {name}: {shown}")
    if gate.status == "blocked":
        lines.append("Run `supportbot refresh --force` to publish it anyway.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ storage


def report_name(version: int) -> str:
    return f"{GATE_DIR}/v{version}.json"


def save_report(sidecar: Sidecar, version: int, report: dict[str, Any]) -> None:
    """Atomically (the sidecar's promise): a crash never leaves half a baseline."""
    sidecar.write_text(report_name(version), json.dumps(report, default=str))


def load_report(sidecar: Sidecar, version: int, dataset_sha256: str | None) -> EvalReport | None:
    """The stored report of a version, if it was made on the same eval set."""
    try:
        text = sidecar.read_text(report_name(version))
        report = EvalReport.of(json.loads(text)) if text is not None else None
    except ValueError:
        return None
    return report if report is not None and report.config.dataset_sha256 == dataset_sha256 else None


def append_gate_log(sidecar: Sidecar, gate: GateResult) -> None:
    sidecar.append_line(f"{GATE_DIR}/{GATE_LOG}", json.dumps(gate.to_dict(), default=str))


# ------------------------------------------------------------------------------ running


def gate_settings(settings: Settings) -> Settings:
    """Offline, whatever the bot runs with: the gate judges knowledge, and spends no tokens."""
    return settings.model_copy(update={"anthropic_api_key": None})


async def evaluate_version(settings: Settings, index: KnowledgeIndex, dataset: Path) -> dict[str, Any]:
    """The frozen set against the index as it is now (the full report, rows included)."""
    from evals.cases import load_cases
    from evals.runner import run_eval

    cases = await asyncio.to_thread(load_cases, dataset)
    return await run_eval(
        gate_settings(settings),
        cases,
        k=settings.answer_k,
        embedder=index.embedder,
        progress=False,
        dataset=dataset,
        cosine_correctness=False,  # half the run's time; token F1 still guards correctness
        concurrency=GATE_CONCURRENCY,  # latency is not guarded, so cases may share the CPU
    )


def eval_set_covers(index: KnowledgeIndex, dataset: Path) -> bool:
    """Whether any case's gold source names a document of the index being served (by id, url or
    page url, anchors ignored, as the retrieval metrics match them)."""
    from evals.cases import load_cases
    from evals.metrics import normalise_source, source_keys

    names = {normalise_source(key) for name in index.document_names() for key in source_keys(name)}
    return any(normalise_source(gold) in names for case in load_cases(dataset) for gold in case.gold_sources)


async def refresh_gated(
    index: KnowledgeIndex,
    specs: Sequence[str | SourceSpec],
    settings: Settings,
    *,
    force: bool = False,
    show_progress: bool | None = None,
) -> GatedRefresh:
    """Every refresh path's one call: `refresh_calibrated`, then the eval gate on the new version."""
    from bot.engine.calibration import refresh_calibrated
    from evals.runner import file_sha256
    from knowledge.learned import with_learned

    specs = with_learned(specs, settings.data_dir)
    dataset = Path(settings.eval_dataset)
    if not settings.refresh_gate or not dataset.is_file():
        report = await refresh_calibrated(index, specs, settings, show_progress=show_progress)
        reason = "SUPPORTBOT_REFRESH_GATE=false" if not settings.refresh_gate else f"no eval set at {dataset}"
        return GatedRefresh(report, GateResult("skipped", reason))
    sha = await asyncio.to_thread(file_sha256, dataset)
    existed = await asyncio.to_thread(index.exists)
    if existed and not await asyncio.to_thread(eval_set_covers, index, dataset):
        # the default set (the sample help center's questions) says nothing about a team's own
        # knowledge: gating on it would block or pass refreshes at random
        report = await refresh_calibrated(index, specs, settings, show_progress=show_progress)
        reason = f"the eval set {dataset} names none of this index's documents: set SUPPORTBOT_EVAL_DATASET"
        return GatedRefresh(report, GateResult("skipped", reason))
    before_docs = await asyncio.to_thread(index.doc_hashes)
    baseline: EvalReport | None = None
    baseline_version: int | None = None
    started = 0.0
    if existed:
        baseline_version = await asyncio.to_thread(index.serving_version)
        baseline = await asyncio.to_thread(load_report, index.sidecar, baseline_version, sha)
        if baseline is None:  # an index from before the gate, or a new eval set: measure what is served now
            started = time.perf_counter()
            raw = await evaluate_version(settings, index, dataset)
            await asyncio.to_thread(save_report, index.sidecar, baseline_version, raw)
            baseline = EvalReport.of(raw)
            started = time.perf_counter() - started  # time spent, carried into the gate's seconds
    report = await refresh_calibrated(index, specs, settings, show_progress=show_progress)
    if report.version_after == report.version_before:
        return GatedRefresh(
            report, GateResult("skipped", "the refresh changed nothing", serving_version=baseline_version)
        )
    clock = time.perf_counter()
    candidate_version = await asyncio.to_thread(index.serving_version)
    raw = await evaluate_version(settings, index, dataset)
    candidate = EvalReport.of(raw)
    after_docs = await asyncio.to_thread(index.doc_hashes)
    gate = GateResult(
        "passed",
        "no guarded metric fell beyond its tolerance",
        baseline_version=baseline_version,
        candidate_version=candidate_version,
        serving_version=candidate_version,
        documents=document_changes(before_docs, after_docs),
        cases=candidate.cases or 0,
    )
    if baseline is None:
        gate.reason = "first version of this index: nothing to compare with; its report is the next baseline"
    else:
        fell = [change for change in guarded_changes(candidate, baseline) if change.regressed]
        if fell:
            gate.regressions = [str(change) for change in fell]
            gate.fallen = fallen_cases(candidate, baseline)
            gate.reason = f"{len(fell)} guarded metric(s) fell beyond tolerance: " + ", ".join(c.metric for c in fell)
            if force:
                gate.status = "forced"
            else:
                gate.status = "blocked"
                await asyncio.to_thread(index.rollback)
                gate.serving_version = await asyncio.to_thread(index.serving_version)
    if gate.status != "blocked":
        await asyncio.to_thread(save_report, index.sidecar, candidate_version, raw)
    gate.seconds = round(time.perf_counter() - clock + started, 2)
    await asyncio.to_thread(append_gate_log, index.sidecar, gate)
    if gate.status in ("blocked", "forced"):
        log.warning("refresh gate %s: %s", gate.status, gate.reason)
    return GatedRefresh(report, gate)
