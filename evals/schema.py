"""The eval report's schema and its one metric registry.

Four places read a report (the Markdown/HTML report, the weekly digest, the baseline comparison and
the CLI summary). They used to keep four tables of metric names, so a renamed or mistyped key
silently became None. Now `METRICS` says once what each headline metric is called, which way is
better, how it is printed and how much it may fall before a run counts as a regression, and
`EvalReport` gives the report typed sections.

Extra keys are allowed everywhere (older and newer reports must both load, and other modules add
their own sections), but our code reads metrics only through typed attributes or `EvalReport.value`,
and both fail loudly on a name that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["higher", "lower", "neither"]


@dataclass(frozen=True)
class Metric:
    """One headline metric: where it lives in the report and how to judge and print it."""

    key: str  # "retrieval.hit@k": section, then the contract's literal key
    label: str  # for tables: "Retrieval hit@k"
    short: str  # for one-line summaries: "hit@k"
    meaning: str
    direction: Direction
    digits: int = 3  # decimals when printed
    tolerance: float | None = None  # allowed drop (absolute) or growth (relative, for "lower"); None: not compared
    floor: float = 0.0  # absolute slack added to a relative tolerance (latency noise)
    digest: bool = False  # in the weekly Slack digest
    trend: bool = False  # in the trend plot

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    def title(self, k: int | str | None) -> str:
        return self.label.replace("@k", f"@{k if k is not None else 'k'}")

    def short_title(self, k: int | str | None) -> str:
        return self.short.replace("@k", f"@{k if k is not None else 'k'}")

    def format(self, value: float | None, none: str = "n/a") -> str:
        return none if value is None else f"{value:.{self.digits}f}"

    def allowed(self, baseline: float, tolerance: float | None = None, floor: float | None = None) -> float | None:
        """The worst value that still passes against `baseline`; None when the metric is not compared."""
        tolerance = self.tolerance if tolerance is None else tolerance
        if tolerance is None or self.direction == "neither":
            return None
        if self.direction == "higher":
            return baseline - tolerance
        return baseline * (1 + tolerance) + (self.floor if floor is None else floor)

    def regressed(self, value: float, allowed: float) -> bool:
        return value < allowed - 1e-9 if self.direction == "higher" else value > allowed


QUALITY_TOLERANCE = 0.02  # absolute drop of a 0..1 score
LATENCY_TOLERANCE = 0.5  # relative growth
LATENCY_FLOOR_MS = 50.0

METRICS: tuple[Metric, ...] = (
    Metric(
        "retrieval.hit@k",
        "Retrieval hit@k",
        "hit@k",
        "a gold document in the top k",
        "higher",
        tolerance=QUALITY_TOLERANCE,
        digest=True,
        trend=True,
    ),
    Metric(
        "retrieval.recall@k",
        "Retrieval recall@k",
        "recall@k",
        "share of gold documents in the top k",
        "higher",
        tolerance=QUALITY_TOLERANCE,
    ),
    Metric(
        "retrieval.mrr@k",
        "Retrieval MRR@k",
        "MRR@k",
        "1 / rank of the first gold document",
        "higher",
        tolerance=QUALITY_TOLERANCE,
        digest=True,
        trend=True,
    ),
    Metric(
        "retrieval.ndcg@k", "Retrieval nDCG@k", "nDCG@k", "rank-weighted recall", "higher", tolerance=QUALITY_TOLERANCE
    ),
    Metric(
        "answer.faithfulness",
        "Faithfulness",
        "faithfulness",
        "answer sentences backed by a verified citation",
        "higher",
        tolerance=QUALITY_TOLERANCE,
        digest=True,
        trend=True,
    ),
    Metric(
        "answer.correctness",
        "Correctness (token F1)",
        "correctness",
        "overlap with the reference answer",
        "higher",
        tolerance=QUALITY_TOLERANCE,
        digest=True,
        trend=True,
    ),
    Metric(
        "answer.correctness_cosine",
        "Correctness (cosine)",
        "cosine",
        "embedding similarity to the reference",
        "higher",
        tolerance=QUALITY_TOLERANCE,
    ),
    Metric(
        "answer.correctness_judge",
        "Correctness (LLM judge)",
        "judge",
        "Claude's grade against the reference",
        "higher",
        tolerance=QUALITY_TOLERANCE,
    ),
    # How much the bot leans on learned answers (knowledge.learned): shown, never a regression.
    Metric(
        "answer.learned_share",
        "Answers from learned entries",
        "from learned",
        "answered cases citing a human answer approved as knowledge",
        "neither",
    ),
    Metric(
        "escalation.auroc",
        "Escalation AUROC",
        "escalation AUROC",
        "confidence separates answerable from not",
        "higher",
        tolerance=QUALITY_TOLERANCE,
        digest=True,
        trend=True,
    ),
    Metric(
        "escalation.precision",
        "Escalation precision",
        "precision",
        "escalations that were unanswerable",
        "higher",
        tolerance=QUALITY_TOLERANCE,
    ),
    Metric(
        "escalation.recall",
        "Escalation recall",
        "recall",
        "unanswerable questions escalated",
        "higher",
        tolerance=QUALITY_TOLERANCE,
    ),
    # How often the bot escalates is a consequence of the set, not a quality: shown, never a regression.
    Metric(
        "escalation.escalation_rate",
        "Escalation rate",
        "escalation rate",
        "share of questions escalated",
        "neither",
        digest=True,
    ),
    Metric(
        "escalation.answered_when_answerable",
        "Answered when answerable",
        "answered-when-answerable",
        "answerable questions not escalated",
        "higher",
        tolerance=QUALITY_TOLERANCE,
    ),
    Metric(
        "latency_ms.p50",
        "Latency p50 (ms)",
        "p50",
        "end to end, per question",
        "lower",
        digits=1,
        tolerance=LATENCY_TOLERANCE,
        floor=LATENCY_FLOOR_MS,
    ),
    Metric(
        "latency_ms.p95",
        "Latency p95 (ms)",
        "p95",
        "",
        "lower",
        digits=1,
        tolerance=LATENCY_TOLERANCE,
        floor=LATENCY_FLOOR_MS,
    ),
)
_BY_KEY = {metric.key: metric for metric in METRICS}


def get_metric(key: str) -> Metric:
    """The registered metric; a KeyError naming the known ones for anything else (a typo must not pass)."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown eval metric {key!r}; known: {', '.join(_BY_KEY)}") from None


def metrics_in(section: str) -> list[Metric]:
    return [metric for metric in METRICS if metric.section == section]


# ------------------------------------------------------------------------------ the report


class _Section(BaseModel):
    """A report section: unknown keys are kept (and written back), known ones are typed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class RetrievalMetrics(_Section):
    hit_at_k: float | None = Field(None, alias="hit@k")
    mrr_at_k: float | None = Field(None, alias="mrr@k")
    recall_at_k: float | None = Field(None, alias="recall@k")
    ndcg_at_k: float | None = Field(None, alias="ndcg@k")


class AnswerMetrics(_Section):
    faithfulness: float | None = None
    correctness: float | None = None
    correctness_metric: str | None = None
    correctness_cosine: float | None = None
    correctness_judge: float | None = None
    answered: int | None = None
    learned_share: float | None = None


class EscalationMetrics(_Section):
    auroc: float | None = None
    precision: float | None = None
    recall: float | None = None
    escalation_rate: float | None = None
    answered_when_answerable: float | None = None
    calibration_error: float | None = None
    unanswerable_cases: int | None = None


class LatencyMetrics(_Section):
    p50: float | None = None
    p95: float | None = None
    mean: float | None = None
    stages_p50: dict[str, float] = Field(default_factory=dict)


class JudgeUsage(_Section):
    calls: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class UsageSummary(_Section):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    cost_per_case_usd: float = 0.0
    judge: JudgeUsage = Field(default_factory=JudgeUsage)


class RunConfig(_Section):
    dataset: str | None = None
    dataset_sha256: str | None = None
    kb: str | None = None
    k: int | None = None
    mode: str | None = None
    generator: str | None = None
    model: str | None = None
    judge: bool | None = None
    answer_threshold: float | None = None
    caveat_threshold: float | None = None
    data_dir: str | None = None


_SECTIONS = {"retrieval", "answer", "escalation", "latency_ms"}


class EvalReport(_Section):
    """A run's report: the ARCHITECTURE.md contract plus config, provenance and per-case rows.

    `per_case` rows, `calibration` and `threshold_advice` stay plain mappings: their shapes belong to
    `evals.runner` and `evals.metrics` and are still changing.
    """

    retrieval: RetrievalMetrics = Field(default_factory=RetrievalMetrics)
    answer: AnswerMetrics = Field(default_factory=AnswerMetrics)
    escalation: EscalationMetrics = Field(default_factory=EscalationMetrics)
    latency_ms: LatencyMetrics = Field(default_factory=LatencyMetrics)
    usage: UsageSummary = Field(default_factory=UsageSummary)
    calibration: dict[str, Any] | None = None  # reliability bins (the contract's name)
    self_calibration: dict[str, Any] | None = None  # the index's calibration the answers were judged with
    followups: dict[str, Any] | None = None  # single-turn vs follow-up figures (evals.runner), None without threads
    threshold_advice: dict[str, Any] | None = None
    cases: int | None = None
    k: int | None = None
    config: RunConfig = Field(default_factory=RunConfig)
    timestamp: str | None = None
    git_commit: str | None = None
    seconds: float | None = None
    version: int | None = None
    per_case: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def of(cls, report: EvalReport | Mapping[str, Any]) -> EvalReport:
        """Accept a report or the plain dict the runner and older JSON files produce."""
        return report if isinstance(report, EvalReport) else cls.model_validate(report)

    @classmethod
    def load(cls, path: str | Path) -> EvalReport:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def value(self, metric: Metric | str) -> float | None:
        """A registered metric's value (None when the run did not measure it); KeyError for an unknown name."""
        metric = metric if isinstance(metric, Metric) else get_metric(metric)
        if metric.section not in _SECTIONS:
            raise KeyError(f"metric {metric.key!r} is not in a metric section")
        section: _Section = getattr(self, metric.section)
        field = _field_name(type(section), metric.name)
        value = getattr(section, field) if field else (section.model_extra or {}).get(metric.name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def to_dict(self, *, per_case: bool = True) -> dict[str, Any]:
        """The JSON shape, literal contract keys ("hit@k"); only the keys the report really has."""
        return self.model_dump(by_alias=True, exclude_unset=True, exclude=None if per_case else {"per_case"})


def _field_name(model: type[BaseModel], key: str) -> str | None:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return name
    return None
