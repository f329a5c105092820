"""Escalation across domains: does the answer-or-escalate decision carry to knowledge it was not fitted on?

    python benchmarks/escalation.py ../shared/datasets/anthropic-docs [--technotes DIR] [--fit] [--data-dir DIR]

Three development domains of different shapes, each indexed through the real `refresh` (which
self-calibrates the index: bot/engine/calibration.py) and asked through the real offline pipeline:

| domain | knowledge | questions |
| --- | --- | --- |
| anthropic-docs | kb-holdout.jsonl (Claude docs sections) | cases-holdout.jsonl, labels audited by holdout_label_audit.json |
| sample | examples/knowledge (a help center) | evals/datasets/sample.jsonl (staff's informal questions) |
| technotes | evals/datasets/technotes/kb.jsonl (long technical notes) | cases.jsonl (pasted errors, real unanswerables) |

Reported per domain, as AUROC and the two rates a support lead trades (unanswerable escalated,
answerable answered):
- **before**: the v1 score (fitted on the anthropic holdout alone) with the fixed 0.35 threshold;
- **default settings**: what a deployment gets now (shipped constants + the index's own calibration);
- **leave-one-domain-out**: the score's coefficients and the calibration quantile refitted on the two
  other domains' labelled questions; the left-out domain contributes only its knowledge base, through
  its self-calibration probes, and none of its labels.

`--fit` fits the constants on all three domains and prints them for bot/engine/confidence.py and
bot/engine/calibration.py. Fitting uses scikit-learn (standardised L2 logistic regression, classes
balanced); the escalation quantile is the one whose worst domain is furthest inside the targets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import ROOT, SAMPLE_CASES, SAMPLE_KNOWLEDGE, answer_all, indexed_pipeline, load_jsonl, run  # noqa: E402

from bot.engine import calibration, confidence  # noqa: E402
from bot.engine.types import Decision  # noqa: E402
from evals.metrics import TARGET_ANSWERED, TARGET_ESCALATED, auroc, operating_point  # noqa: E402

FEATURES = list(confidence.COEFFICIENTS)
AUDIT = Path(__file__).with_name("holdout_label_audit.json")
TECHNOTES = ROOT / "evals" / "datasets" / "technotes"
C = 0.5  # inverse L2 strength on standardised signals: a few hundred questions, five correlated signals
QUANTILES = np.round(np.arange(0.50, 0.99, 0.01), 2)
# The v1 constants (fitted on the anthropic holdout alone), kept to show where we started.
V1_INTERCEPT, V1_COEFFICIENTS = (
    -6.873,
    {"top_similarity": 3.459, "margin": 3.381, "term_coverage": 1.860, "phrase_match": 7.402, "heading_match": 2.756},
)
V1_THRESHOLD = 0.35


@dataclass
class Domain:
    name: str
    signals: list[dict]  # per question, as the pipeline judged it
    answerable: list[bool]
    words: list[int]
    decisions: list[Decision]
    confidences: list[float]
    calibration: calibration.Calibration
    refresh_seconds: float


def audited_labels(cases: list[dict], kb_path: Path, audit_path: Path) -> list[bool]:
    """The published `answerable` labels, with the audit's corrections applied. An entry whose case is
    not labelled unanswerable, or whose needle its section does not contain, stops the run: a stale
    audit must not quietly move the figures."""
    sections = {row["id"]: row.get("text", "") for row in load_jsonl(kb_path)}
    corrected = {}
    for entry in json.loads(audit_path.read_text(encoding="utf-8"))["cases"]:
        case = next((c for c in cases if c["id"] == entry["id"]), None)
        if case is None or case["answerable"]:
            sys.exit(f"{audit_path.name}: case {entry['id']} is not an unanswerable case of this holdout")
        if entry["needle"] not in sections.get(entry["answered_by"], ""):
            sys.exit(f"{audit_path.name}: {entry['answered_by']} does not contain {entry['needle']!r}")
        corrected[entry["id"]] = True
    return [corrected.get(case["id"], bool(case["answerable"])) for case in cases]


async def measure(name: str, data_dir: Path, kb: str, cases: list[dict], labels: list[bool]) -> Domain:
    started = time.perf_counter()
    pipeline = await indexed_pipeline(data_dir, kb)
    refresh_seconds = time.perf_counter() - started
    found = await pipeline.calibration(pipeline.searcher.index.version)
    if found is None:
        sys.exit(f"{name}: the index has no calibration (too few sections?)")
    answers = await answer_all(pipeline, cases)
    return Domain(
        name=name,
        signals=[a.signals for a in answers],
        answerable=labels,
        words=[len(case["question"].split()) for case in cases],
        decisions=[a.decision for a in answers],
        confidences=[a.confidence for a in answers],
        calibration=found,
        refresh_seconds=refresh_seconds,
    )


# ------------------------------------------------------------------------------------------ fitting


def matrix(signals: list[dict]) -> np.ndarray:
    return np.array([[confidence.signal(s, name) for name in FEATURES] for s in signals])


def fit_coefficients(domains: list[Domain]) -> tuple[float, dict[str, float]]:
    """Logistic regression on the labelled questions of `domains`, back in the signals' raw units."""
    X = np.vstack([matrix(d.signals) for d in domains])
    y = np.concatenate([np.array(d.answerable, dtype=int) for d in domains])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=2000)).fit(X, y)
    scaler, regression = model[0], model[1]
    coefficients = regression.coef_[0] / scaler.scale_
    intercept = float(regression.intercept_[0] - (coefficients * scaler.mean_).sum())
    return intercept, dict(zip(FEATURES, map(float, coefficients)))


def question_scores(domain: Domain, intercept: float, coefficients: dict[str, float]) -> list[float]:
    """Raw scores of the domain's questions under these constants, the generator's veto applied as in `judge`."""
    scores = []
    for values in domain.signals:
        raw = confidence.score(values, intercept=intercept, coefficients=coefficients)
        scores.append(min(raw, confidence.CANNOT_ANSWER_CAP) if values.get("cannot_answer") else raw)
    return scores


def twin_line(domain: Domain, intercept: float, coefficients: dict[str, float], q: float) -> float:
    twins = [
        confidence.score(p.masked, intercept=intercept, coefficients=coefficients) for p in domain.calibration.probes
    ]
    return calibration.quantile(twins, q)


def slack(scores: list[float], answerable: list[bool], threshold: float) -> float:
    """How far inside both targets (negative: how far outside the worse one)."""
    escalated, answered = operating_point(scores, answerable, threshold)
    return min(escalated - TARGET_ESCALATED, answered - TARGET_ANSWERED)


def fit_quantile(domains: list[Domain], intercept: float, coefficients: dict[str, float]) -> float:
    scored = [(question_scores(d, intercept, coefficients), d) for d in domains]
    return float(
        max(
            QUANTILES,
            key=lambda q: min(slack(s, d.answerable, twin_line(d, intercept, coefficients, q)) for s, d in scored),
        )
    )


# ------------------------------------------------------------------------------------------ report


def row(name: str, scores: list[float], answerable: list[bool], threshold: float, note: str = "") -> str:
    escalated, answered = operating_point(scores, answerable, threshold)
    met = "yes" if escalated >= TARGET_ESCALATED and answered >= TARGET_ANSWERED else "no"
    return f"| {name} | {auroc(scores, answerable):.3f} | {escalated:.0%} | {answered:.0%} | {met} | {note} |"


def decision_row(name: str, domain: Domain) -> str:
    """The pipeline's own decisions at default settings (answers with a caveat count as answered)."""
    escalated = [d is Decision.ESCALATE for d in domain.decisions]
    esc = (
        np.mean([e for e, a in zip(escalated, domain.answerable) if not a])
        if not all(domain.answerable)
        else float("nan")
    )
    ans = np.mean([not e for e, a in zip(escalated, domain.answerable) if a])
    met = "yes" if esc >= TARGET_ESCALATED and ans >= TARGET_ANSWERED else "no"
    summary = domain.calibration.summary()
    note = f"calibration: {summary['pairs']} pairs, separation AUROC {summary['separation_auroc']:.2f}, line {summary['escalate_below_raw']:.3f}"
    return f"| {name} | {auroc(domain.confidences, domain.answerable):.3f} | {esc:.0%} | {ans:.0%} | {met} | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="the anthropic-docs folder (kb-holdout.jsonl, cases-holdout.jsonl)")
    parser.add_argument("--technotes", type=Path, default=TECHNOTES, help="folder with kb.jsonl and cases.jsonl")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-escalation"))
    parser.add_argument(
        "--fit", action="store_true", help="fit the shipped constants on all three domains and print them"
    )
    args = parser.parse_args()

    holdout_cases = load_jsonl(args.dataset / "cases-holdout.jsonl")
    sample_cases = load_jsonl(SAMPLE_CASES)
    technote_cases = load_jsonl(args.technotes / "cases.jsonl")
    specs = [
        (
            "anthropic-docs",
            str(args.dataset / "kb-holdout.jsonl"),
            holdout_cases,
            audited_labels(holdout_cases, args.dataset / "kb-holdout.jsonl", AUDIT),
        ),
        ("sample", str(SAMPLE_KNOWLEDGE), sample_cases, [bool(c["answerable"]) for c in sample_cases]),
        (
            "technotes",
            str(args.technotes / "kb.jsonl"),
            technote_cases,
            [bool(c["answerable"]) for c in technote_cases],
        ),
    ]
    domains = [run(measure(name, args.data_dir / name, kb, cases, labels)) for name, kb, cases, labels in specs]

    if args.fit:
        intercept, coefficients = fit_coefficients(domains)
        q = fit_quantile(domains, intercept, coefficients)
        print(f"INTERCEPT = {intercept:.3f}\nCOEFFICIENTS: dict[str, float] = {{")
        for name, value in coefficients.items():
            print(f'    "{name}": {value:.3f},')
        print(f"}}\nESCALATE_QUANTILE = {q:.2f}")
        return

    print(
        "| domain | questions | answerable | unanswerable | median words | probe pairs | refresh + calibration s | calibration s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in domains:
        print(
            f"| {d.name} | {len(d.answerable)} | {sum(d.answerable)} | {len(d.answerable) - sum(d.answerable)} | "
            f"{int(np.median(d.words))} | {d.calibration.pairs} | {d.refresh_seconds:.1f} | {d.calibration.seconds:.1f} |"
        )

    print("\n| domain: score | AUROC | unanswerable escalated | answerable answered | both targets | note |")
    print("| --- | --- | --- | --- | --- | --- |")
    lodo = {}
    for d in domains:
        others = [o for o in domains if o is not d]
        intercept, coefficients = fit_coefficients(others)
        q = fit_quantile(others, intercept, coefficients)
        scores = question_scores(d, intercept, coefficients)
        line = twin_line(d, intercept, coefficients, q)
        lodo[d.name] = (scores, line, q)
        print(
            row(
                f"{d.name}: before (v1 score, fixed {V1_THRESHOLD})",
                question_scores(d, V1_INTERCEPT, V1_COEFFICIENTS),
                d.answerable,
                V1_THRESHOLD,
                "v1 was fitted on anthropic-docs" if d.name == "anthropic-docs" else "",
            )
        )
        print(decision_row(f"{d.name}: default settings", d))
        print(
            row(
                f"**{d.name}: left out**",
                scores,
                d.answerable,
                line,
                f"fitted on {' + '.join(o.name for o in others)}; twin quantile {q:.2f} -> line {line:.3f}",
            )
        )

    print("\n### Left out, by question length (answerable answered / unanswerable escalated)\n")
    print("| domain | < 30 words | >= 30 words |")
    print("| --- | --- | --- |")
    for d in domains:
        scores, line, _ = lodo[d.name]
        cells = []
        for keep in (lambda w: w < 30, lambda w: w >= 30):
            picked = [(s, a) for s, a, w in zip(scores, d.answerable, d.words) if keep(w)]
            if not picked:
                cells.append("-")
                continue
            answered = [s >= line for s, a in picked if a]
            escalated = [s < line for s, a in picked if not a]
            cells.append(
                f"{np.mean(answered):.0%} of {len(answered)} / "
                + (f"{np.mean(escalated):.0%} of {len(escalated)}" if escalated else "-")
            )
        print(f"| {d.name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
