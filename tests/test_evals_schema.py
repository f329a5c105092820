"""The eval report schema: old reports load, extra sections survive, typos fail loudly, one registry."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from bot.cli import eval_summary_lines
from evals.compare import compare_reports
from evals.report import headline_rows, history_entry, load_history
from evals.schema import METRICS, EvalReport, get_metric
from evals.weekly import digest_text

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "evals" / "datasets" / "baseline-sample.json"


def test_the_committed_baseline_loads_and_round_trips():
    raw = json.loads(BASELINE.read_text(encoding="utf-8"))
    report = EvalReport.load(BASELINE)
    assert report.retrieval.hit_at_k == raw["retrieval"]["hit@k"] and report.k == 5 and report.cases == 55
    assert report.value("escalation.auroc") == raw["escalation"]["auroc"]
    assert report.config.generator == "extractive" and report.threshold_advice == raw["threshold_advice"]
    assert report.self_calibration is not None and report.self_calibration["pairs"] == 150
    assert report.to_dict() == raw  # nothing added, nothing lost: the contract's literal keys come back


def test_extra_keys_are_kept_but_typos_in_code_fail():
    report = EvalReport.of({"retrieval": {"hit@k": 0.9, "hit@k_followups": 0.7}, "followups": {"cases": 3}})
    assert report.to_dict()["followups"] == {"cases": 3}
    assert report.to_dict()["retrieval"]["hit@k_followups"] == 0.7
    with pytest.raises(KeyError, match="unknown eval metric 'retrieval.hit@kk'"):
        report.value("retrieval.hit@kk")
    with pytest.raises(AttributeError):
        report.retrieval.hit_at_kk  # noqa: B018 - the attribute access is the test
    with pytest.raises(pydantic.ValidationError):
        EvalReport.of({"retrieval": {"hit@k": "most of them"}})


def test_one_registry_drives_compare_report_digest_and_cli():
    keys = {metric.key for metric in METRICS}
    assert len(keys) == len(METRICS)
    report = EvalReport.load(BASELINE)
    worse = report.model_copy(update={"latency_ms": report.latency_ms.model_copy(update={"p95": 1000.0})})
    compared = {change.metric for change in compare_reports(worse, report)}
    assert compared == {m.key for m in METRICS if m.tolerance is not None and report.value(m) is not None}
    assert {change.metric for change in compare_reports(worse, report) if change.regressed} == {"latency_ms.p95"}
    assert [row["label"] for row in headline_rows(report)][:2] == ["Retrieval hit@5", "Retrieval recall@5"]
    digest = digest_text(report, None, "", Path("r.html"))
    assert all(m.short_title(5) in digest for m in METRICS if m.digest)
    summary = "\n".join(eval_summary_lines(report))
    p95 = f"p95 {report.latency_ms.p95:.0f} ms"
    assert "hit@5 1.000" in summary and "MRR@5 0.975" in summary and p95 in summary
    assert "calibration calibrated on index v2: 150 probe pairs" in summary
    assert (
        get_metric("latency_ms.p95").direction == "lower" and get_metric("escalation.escalation_rate").tolerance is None
    )


def test_history_skips_invalid_reports(tmp_path):
    good = EvalReport.load(BASELINE)
    (tmp_path / "a.json").write_text(json.dumps(history_entry(good)), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"retrieval": {"hit@k": "n/a"}}), encoding="utf-8")
    (tmp_path / "c.json").write_text("{not json", encoding="utf-8")
    [loaded] = load_history(tmp_path)
    assert loaded.retrieval.mrr_at_k == 0.975 and "per_case" not in history_entry(good)
