"""Compare an eval report with a baseline report: which metrics fell, and by how much.

Quality metrics (retrieval, answer, escalation AUROC/precision/recall) regress when they drop by
more than an absolute `tolerance`. Latency is noisy on shared machines, so it regresses only
when it grows by more than a relative `latency_tolerance` plus an absolute noise floor.
Metrics missing on either side (e.g. AUROC on a set with no unanswerable case) are not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evals.schema import METRICS, EvalReport


@dataclass(frozen=True)
class Change:
    metric: str  # "retrieval.hit@k"
    baseline: float
    current: float
    allowed: float  # the worst value that still passes
    regressed: bool

    @property
    def delta(self) -> float:
        return self.current - self.baseline

    def __str__(self) -> str:
        verdict = "REGRESSED" if self.regressed else "ok"
        return f"{self.metric}: {self.baseline:.4g} -> {self.current:.4g} ({self.delta:+.4g}, limit {self.allowed:.4g}) {verdict}"


def compare_reports(
    current: EvalReport | Mapping[str, Any],
    baseline: EvalReport | Mapping[str, Any],
    *,
    tolerance: float | None = None,
    latency_tolerance: float | None = None,
    latency_floor_ms: float | None = None,
) -> list[Change]:
    """Every compared metric present in both reports, with whether it fell beyond its allowance.

    The allowances are the registry's (`evals.schema.METRICS`); `tolerance` overrides the quality
    metrics' absolute one, `latency_tolerance` and `latency_floor_ms` the latency ones.
    """
    now, before_report = EvalReport.of(current), EvalReport.of(baseline)
    changes: list[Change] = []
    for metric in METRICS:
        before, after = before_report.value(metric), now.value(metric)
        if before is None or after is None:
            continue
        if metric.direction == "lower":
            allowed = metric.allowed(before, latency_tolerance, latency_floor_ms)
        else:
            allowed = metric.allowed(before, tolerance)
        if allowed is not None:
            changes.append(Change(metric.key, before, after, allowed, metric.regressed(after, allowed)))
    return changes


def comparability_warnings(
    current: EvalReport | Mapping[str, Any], baseline: EvalReport | Mapping[str, Any]
) -> list[str]:
    """Differences that make the comparison apples to oranges (reported, not fatal)."""
    now, before_report = EvalReport.of(current), EvalReport.of(baseline)
    warnings = []
    if now.cases != before_report.cases:
        warnings.append(f"case count differs: baseline {before_report.cases}, now {now.cases}")
    for key in ("dataset_sha256", "generator"):
        before, after = getattr(before_report.config, key), getattr(now.config, key)
        if before and after and before != after:
            warnings.append(f"{key} differs: baseline {before}, now {after}")
    return warnings
