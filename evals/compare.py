"""Compare an eval report with a baseline report: which metrics fell, and by how much.

Quality metrics (retrieval, answer, escalation AUROC/precision/recall) regress when they drop by
more than an absolute `tolerance`. Latency is noisy on shared machines, so it regresses only
when it grows by more than a relative `latency_tolerance` plus an absolute noise floor.
Metrics missing on either side (e.g. AUROC on a set with no unanswerable case) are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HIGHER_IS_BETTER = [
    ("retrieval", "hit@k"), ("retrieval", "mrr@k"), ("retrieval", "recall@k"), ("retrieval", "ndcg@k"),
    ("answer", "faithfulness"), ("answer", "correctness"), ("answer", "correctness_cosine"),
    ("answer", "correctness_judge"),
    ("escalation", "auroc"), ("escalation", "precision"), ("escalation", "recall"),
    ("escalation", "answered_when_answerable"),
]
LOWER_IS_BETTER_LATENCY = [("latency_ms", "p50"), ("latency_ms", "p95")]


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


def metric(report: dict[str, Any], group: str, name: str) -> float | None:
    value = (report.get(group) or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare_reports(
    current: dict[str, Any], baseline: dict[str, Any], *, tolerance: float = 0.02,
    latency_tolerance: float = 0.5, latency_floor_ms: float = 50.0,
) -> list[Change]:
    """Every metric present in both reports, with whether it fell beyond its allowance."""
    changes: list[Change] = []
    for group, name in HIGHER_IS_BETTER:
        before, after = metric(baseline, group, name), metric(current, group, name)
        if before is not None and after is not None:
            allowed = before - tolerance
            changes.append(Change(f"{group}.{name}", before, after, allowed, after < allowed - 1e-9))
    for group, name in LOWER_IS_BETTER_LATENCY:
        before, after = metric(baseline, group, name), metric(current, group, name)
        if before is not None and after is not None:
            allowed = before * (1 + latency_tolerance) + latency_floor_ms
            changes.append(Change(f"{group}.{name}", before, after, allowed, after > allowed))
    return changes


def comparability_warnings(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Differences that make the comparison apples to oranges (reported, not fatal)."""
    warnings = []
    if current.get("cases") != baseline.get("cases"):
        warnings.append(f"case count differs: baseline {baseline.get('cases')}, now {current.get('cases')}")
    for key in ("dataset_sha256", "generator"):
        before, after = (baseline.get("config") or {}).get(key), (current.get("config") or {}).get(key)
        if before and after and before != after:
            warnings.append(f"{key} differs: baseline {before}, now {after}")
    return warnings
