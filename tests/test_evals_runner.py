"""`supportbot evals run` through the real pipeline on the sample set: contract, regression, --kb cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from evals.cases import EvalCase
from tests.conftest import SAMPLE_EVALS

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "evals" / "datasets" / "baseline-sample.json"
CONTRACT = {
    "retrieval": {"hit@k", "mrr@k", "recall@k", "ndcg@k"},
    "escalation": {"auroc", "precision", "recall", "escalation_rate"},
    "answer": {"faithfulness", "correctness"},
    "latency_ms": {"p50", "p95"},
}


def run(*args: str):
    return CliRunner().invoke(main, ["evals", "run", "--offline", "--no-progress", *args])


@pytest.fixture(scope="module")
def sample_report(sample_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "r.json"
    report_dir = out.parent / "report"
    result = run(
        "--dataset",
        str(SAMPLE_EVALS),
        "--data-dir",
        str(sample_data_dir),
        "--json-out",
        str(out),
        "--report",
        str(report_dir),
    )
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result, report_dir


def test_sample_run_writes_every_contract_metric(sample_report):
    report, result, report_dir = sample_report
    for group, keys in CONTRACT.items():
        assert keys <= set(report[group]), group
        assert all(report[group][key] is not None for key in keys), (group, report[group])
    assert report["cases"] == 55 and report["k"] == 5 and len(report["per_case"]) == 55
    assert report["config"]["generator"] and report["config"]["mode"] == "hybrid" and report["timestamp"]
    assert report["retrieval"]["hit@k"] >= 0.8  # the sample set is easy for hybrid retrieval
    assert 0.5 <= report["escalation"]["auroc"] <= 1.0
    assert report["latency_ms"]["p95"] >= report["latency_ms"]["p50"] > 0
    advice = report["threshold_advice"]  # computed from the same rows as the escalation metrics
    assert advice["current"] == report["config"]["caveat_threshold"]
    assert advice["escalated"] == pytest.approx(report["escalation"]["recall"], abs=1e-4)
    assert advice["answered"] == pytest.approx(report["escalation"]["answered_when_answerable"], abs=1e-4)
    assert advice["suggested"] is not None
    assert "retrieval   hit@5" in result.stdout
    html = (report_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and (report_dir / "report.md").exists()


def test_committed_baseline_has_the_contract_shape():
    baseline = json.loads(BASELINE.read_text())
    for group, keys in CONTRACT.items():
        assert keys <= set(baseline[group])
    assert baseline["cases"] == 55 and baseline["config"]["kb"] == "examples/knowledge"


def test_a_worse_configuration_fails_against_the_baseline_naming_the_metrics(sample_data_dir, tmp_path):
    result = run(
        "--dataset", str(SAMPLE_EVALS), "--data-dir", str(sample_data_dir), "-k", "1", "--baseline", str(BASELINE)
    )
    assert result.exit_code == 1, result.output
    verdict = [line for line in result.stderr.splitlines() if line.startswith("regression against")]
    assert verdict and "retrieval.recall@k" in verdict[0] and "retrieval.hit@k" in verdict[0]
    assert "REGRESSED" in result.stderr


def test_invalid_dataset_is_refused_with_line_numbers(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q"}\n{"id": "a", "question": "again"}\n', encoding="utf-8")
    result = run("--dataset", str(bad), "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and "line 2: duplicate id 'a'" in result.output


def test_kb_is_indexed_once_into_a_cached_data_dir(tmp_path, embedder, settings):
    from evals.runner import kb_data_dir, run_eval

    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "refunds.md").write_text(
        "---\ntitle: Refunds\nurl: https://help.example/refunds\n---\n"
        "Card payments can be refunded within 180 days of the payment.",
        encoding="utf-8",
    )
    (kb / "sso.md").write_text(
        "---\ntitle: SSO\nurl: https://help.example/sso\n---\n"
        "SAML single sign-on is available on the Enterprise plan only.",
        encoding="utf-8",
    )
    cases = [
        EvalCase(
            id="1",
            question="How long can a card payment be refunded?",
            reference_answer="180 days.",
            gold_sources=["https://help.example/refunds"],
        ),
        EvalCase(
            id="2",
            question="Which plan has SAML SSO?",
            reference_answer="Enterprise.",
            gold_sources=["https://help.example/sso"],
        ),
        EvalCase(id="3", question="Do you support carrier pigeons?", answerable=False),
    ]
    settings = settings.model_copy(update={"anthropic_api_key": None})
    first = asyncio.run(run_eval(settings, cases, k=2, kb=str(kb), embedder=embedder, progress=False))
    second = asyncio.run(run_eval(settings, cases, k=2, kb=str(kb), embedder=embedder, progress=False))
    log = kb_data_dir(settings, str(kb)) / "index" / "refreshes.jsonl"
    refreshes = [json.loads(line) for line in log.read_text().splitlines()]
    assert [entry["chunks_embedded"] > 0 for entry in refreshes] == [True, False]  # reused, nothing re-embedded
    assert first["retrieval"]["hit@k"] == second["retrieval"]["hit@k"] == 1.0
    assert first["config"]["kb"] == str(kb) and first["cases"] == 3


async def test_claude_path_counts_tokens_cost_and_judges(sample_settings, embedder):
    """With a key, answers come from Claude (here the emulator) and an LLM judge grades correctness."""
    from pydantic import SecretStr

    from evals.cases import load_cases
    from evals.judge import PROMPT, make_claude_judge
    from evals.runner import run_eval
    from tests.emulators.anthropic_api import AnthropicEmulator, Failure, Reply

    judge_marker = PROMPT.split("\n", 1)[0]
    async with AnthropicEmulator() as emulator:
        emulator.when(lambda body: judge_marker in json.dumps(body), Reply(text="SCORE: 80"))
        settings = sample_settings.model_copy(
            update={
                "anthropic_api_key": SecretStr("test-key"),
                "anthropic_base_url": emulator.base_url,
                "anthropic_max_retries": 0,
            }
        )
        cases = [case for case in load_cases(SAMPLE_EVALS) if case.answerable][:4]
        report = await run_eval(
            settings, cases, k=3, embedder=embedder, judge=make_claude_judge(settings), progress=False
        )
        emulator.reset()  # now every judge call is overloaded: those cases go ungraded, the run completes
        emulator.when(lambda body: judge_marker in json.dumps(body), Failure(529))
        overloaded = await run_eval(
            settings, cases, k=3, embedder=embedder, judge=make_claude_judge(settings), progress=False
        )
    assert report["config"]["generator"] == "claude" and report["config"]["model"] == settings.anthropic_model
    assert report["usage"]["input_tokens"] > 0 and report["usage"]["output_tokens"] > 0
    assert report["usage"]["cost_usd"] > 0
    answered = [row for row in report["per_case"] if not row["escalated"]]
    assert answered and all(row["judge"] == 0.8 for row in answered)
    assert report["answer"]["correctness_judge"] == 0.8
    judge = report["usage"]["judge"]  # the judge's own tokens, priced apart from the bot's
    assert judge["calls"] == len(answered) and judge["failed"] == 0
    assert judge["input_tokens"] > 0 and judge["cost_usd"] > 0
    assert report["usage"]["cost_usd"] == pytest.approx(
        sum(row["usage"]["cost_usd"] for row in report["per_case"]), abs=1e-6
    )

    graded = [row for row in overloaded["per_case"] if "judge_usage" in row]
    assert graded and all(row["judge"] is None and row["judge_error"] == "OverloadedError" for row in graded)
    assert overloaded["usage"]["judge"]["failed"] == len(graded)
    assert overloaded["answer"]["correctness_judge"] is None and overloaded["answer"]["correctness"] is not None
