"""Escalation quality: does the confidence score separate answerable from unanswerable questions?

    python benchmarks/escalation.py ../shared/datasets/anthropic-docs [--fit] [--data-dir /tmp/...]

Runs cases-holdout.jsonl against kb-holdout.jsonl (26 of 100 questions labelled unanswerable there)
through the real offline pipeline and reports, next to "top vector similarity alone":
AUROC, % of unanswerable questions escalated and % of answerable ones answered at the default
threshold; then 5-fold cross-validation of the fitting procedure (repeated with 5 shuffles), and
the same constants on evals/datasets/sample.jsonl against examples/knowledge (another domain).

Every holdout figure is given twice: with the published labels, and with the labels of
`holdout_label_audit.json`, which lists the "unanswerable" questions whose reference answer
kb-holdout.jsonl does state (in a sibling of the removed gold section). Each audit entry's needle
is checked verbatim against the named section before it is used; `--no-audit` skips that part.

`--fit` refits the logistic coefficients on all holdout cases and prints them as the Python
constants to paste into bot/engine/confidence.py.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import SAMPLE_CASES, SAMPLE_KNOWLEDGE, answer_all, indexed_pipeline, load_jsonl, run  # noqa: E402

from bot.engine import confidence  # noqa: E402
from evals.metrics import auroc, operating_point  # noqa: E402

FEATURES = list(confidence.COEFFICIENTS)
AUDIT = Path(__file__).with_name("holdout_label_audit.json")
L2 = 2.0  # ridge penalty on standardised coefficients (= C 0.5): 100 cases, 7 correlated signals


def fit_logistic(X: np.ndarray, y: np.ndarray, *, l2: float = L2) -> tuple[float, np.ndarray]:
    """L2-regularised logistic regression by Newton's method, classes weighted to balance, on
    standardised features; returns (intercept, coefficients) in the features' raw units."""
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0
    Z = np.hstack([np.ones((len(X), 1)), (X - mean) / std])
    weights = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
    beta = np.zeros(Z.shape[1])
    penalty = np.eye(Z.shape[1]) * l2
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(100):
        p = 1 / (1 + np.exp(-Z @ beta))
        gradient = Z.T @ (weights * (p - y)) + penalty @ beta
        hessian = (Z * (weights * p * (1 - p))[:, None]).T @ Z + penalty
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    coefficients = beta[1:] / std
    return float(beta[0] - (coefficients * mean).sum()), coefficients


def matrix(signals: list[dict]) -> np.ndarray:
    return np.array([[float(s.get(name, 0.0)) for name in FEATURES] for s in signals])


def scores_with(signals: list[dict], intercept: float, coefficients: np.ndarray) -> list[float]:
    named = dict(zip(FEATURES, map(float, coefficients)))
    return [confidence.score(s, intercept=intercept, coefficients=named) for s in signals]


def best_threshold(scores: list[float], answerable: list[bool]) -> float:
    """The cut that maximises balanced accuracy (an optimistic threshold for the baseline)."""
    return max(sorted(set(scores)), key=lambda t: sum(operating_point(scores, answerable, t)))


def cross_validate(signals: list[dict], answerable: list[bool], threshold: float, folds: int = 5, repeats: int = 5):
    """Out-of-fold scores from refitting on the other folds (stratified, shuffled `repeats` times)."""
    X, y = matrix(signals), np.array(answerable, dtype=float)
    results = []
    for seed in range(repeats):
        rng = random.Random(seed)
        fold_of = {}
        for label in (True, False):
            members = [i for i, a in enumerate(answerable) if a is label]
            rng.shuffle(members)
            fold_of.update({i: n % folds for n, i in enumerate(members)})
        predicted = [0.0] * len(y)
        for fold in range(folds):
            train = [i for i in range(len(y)) if fold_of[i] != fold]
            test = [i for i in range(len(y)) if fold_of[i] == fold]
            intercept, coefficients = fit_logistic(X[train], y[train])
            for i, s in zip(test, scores_with([signals[i] for i in test], intercept, coefficients)):
                predicted[i] = s
        results.append((auroc(predicted, answerable), *operating_point(predicted, answerable, threshold)))
    return np.array(results)


def report_row(name: str, scores: list[float], answerable: list[bool], threshold: float) -> str:
    escalated, answered = operating_point(scores, answerable, threshold)
    return f"| {name} | {auroc(scores, answerable):.3f} | {threshold:.3f} | {escalated:.0%} | {answered:.0%} |"


def evaluate(name: str, answers, answerable: list[bool], threshold: float) -> None:
    scores = [a.confidence for a in answers]
    top = [a.signals.get("top_similarity", 0.0) for a in answers]
    print(f"\n### {name}: {sum(answerable)} answerable, {len(answerable) - sum(answerable)} unanswerable\n")
    print("| score | AUROC | threshold | unanswerable escalated | answerable answered |")
    print("| --- | --- | --- | --- | --- |")
    print(report_row("confidence (default threshold)", scores, answerable, threshold))
    print(report_row("top vector similarity alone (best threshold)", top, answerable, best_threshold(top, answerable)))
    sweep = [round(0.30 + 0.05 * i, 2) for i in range(7)]
    print("\n| escalate below | " + " | ".join(f"{t:.2f}" for t in sweep) + " |")
    print("| --- |" + " --- |" * len(sweep))
    swept = [operating_point(scores, answerable, t) for t in sweep]
    print("| unanswerable escalated | " + " | ".join(f"{e:.0%}" for e, _ in swept) + " |")
    print("| answerable answered | " + " | ".join(f"{a:.0%}" for _, a in swept) + " |")


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


def report_cv(signals: list[dict], answerable: list[bool], threshold: float, name: str) -> None:
    cv = cross_validate(signals, answerable, threshold)
    print(f"\n### 5-fold cross-validation, {name} (refit per fold, 5 shuffles)\n")
    print("| | AUROC | unanswerable escalated | answerable answered |")
    print("| --- | --- | --- | --- |")
    print(f"| mean | {cv[:, 0].mean():.3f} | {cv[:, 1].mean():.0%} | {cv[:, 2].mean():.0%} |")
    print(f"| min | {cv[:, 0].min():.3f} | {cv[:, 1].min():.0%} | {cv[:, 2].min():.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="folder with kb-holdout.jsonl and cases-holdout.jsonl")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-escalation"))
    parser.add_argument("--fit", action="store_true", help="refit the coefficients and print them")
    parser.add_argument("--features", help="comma-separated signals to fit (default: those in COEFFICIENTS)")
    parser.add_argument("--no-audit", action="store_true", help="report the published labels only")
    args = parser.parse_args()
    if args.features:
        FEATURES[:] = args.features.split(",")

    holdout = run(indexed_pipeline(args.data_dir / "holdout", str(args.dataset / "kb-holdout.jsonl")))
    cases = load_jsonl(args.dataset / "cases-holdout.jsonl")
    answers = run(answer_all(holdout, cases))
    answerable = [bool(case["answerable"]) for case in cases]
    signals = [a.signals for a in answers]
    threshold = holdout.settings.caveat_threshold

    if args.fit:
        intercept, coefficients = fit_logistic(matrix(signals), np.array(answerable, dtype=float))
        print("INTERCEPT = %.3f\nCOEFFICIENTS: dict[str, float] = {" % intercept)
        for name, value in zip(FEATURES, coefficients):
            print(f'    "{name}": {value:.3f},')
        print("}")
        fitted = scores_with(signals, intercept, coefficients)
        print(f"in-sample AUROC {auroc(fitted, answerable):.3f}, escalated/answered at {threshold}: "
              f"{operating_point(fitted, answerable, threshold)}")
        cv = cross_validate(signals, answerable, threshold)
        print(f"cross-validated AUROC {cv[:, 0].mean():.3f} (min {cv[:, 0].min():.3f})")
        return

    print(f"escalation: {len(cases)} cases, escalate below confidence {threshold} (settings.caveat_threshold)")
    evaluate("anthropic-docs holdout, published labels (fitting data)", answers, answerable, threshold)
    report_cv(signals, answerable, threshold, "published labels")
    if not args.no_audit:
        audited = audited_labels(cases, args.dataset / "kb-holdout.jsonl", AUDIT)
        changed = sum(a != b for a, b in zip(audited, answerable))
        evaluate(f"anthropic-docs holdout, audited labels ({changed} relabelled answerable, see {AUDIT.name})",
                 answers, audited, threshold)
        report_cv(signals, audited, threshold, "audited labels")

    sample = run(indexed_pipeline(args.data_dir / "sample", str(SAMPLE_KNOWLEDGE)))
    sample_cases = load_jsonl(SAMPLE_CASES)
    sample_answers = run(answer_all(sample, sample_cases))
    evaluate("sample.jsonl on examples/knowledge (other domain, same constants)", sample_answers,
             [bool(case["answerable"]) for case in sample_cases], threshold)


if __name__ == "__main__":
    main()
