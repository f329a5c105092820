"""Escalation quality: does the confidence score separate answerable from unanswerable questions?

    python benchmarks/escalation.py ../shared/datasets/anthropic-docs [--fit] [--data-dir /tmp/...]

Runs cases-holdout.jsonl against kb-holdout.jsonl (26 of 100 questions have no answer there)
through the real offline pipeline and reports, next to "top vector similarity alone":
AUROC, % of unanswerable questions escalated and % of answerable ones answered at the default
threshold; then 5-fold cross-validation of the fitting procedure (repeated with 5 shuffles), and
the same constants on evals/datasets/sample.jsonl against examples/knowledge (another domain).

`--fit` refits the logistic coefficients on all holdout cases and prints them as the Python
constants to paste into bot/engine/confidence.py.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import SAMPLE_CASES, SAMPLE_KNOWLEDGE, answer_all, indexed_pipeline, load_jsonl, run  # noqa: E402

from bot.engine import confidence  # noqa: E402
from evals.metrics import auroc  # noqa: E402

FEATURES = list(confidence.COEFFICIENTS)
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


def rates(scores: list[float], answerable: list[bool], threshold: float) -> tuple[float, float]:
    """(share of unanswerable escalated, share of answerable answered) when escalating below `threshold`."""
    unanswerable = [s for s, a in zip(scores, answerable) if not a]
    answerable_scores = [s for s, a in zip(scores, answerable) if a]
    escalated = sum(s < threshold for s in unanswerable) / max(1, len(unanswerable))
    answered = sum(s >= threshold for s in answerable_scores) / max(1, len(answerable_scores))
    return escalated, answered


def best_threshold(scores: list[float], answerable: list[bool]) -> float:
    """The cut that maximises balanced accuracy (an optimistic threshold for the baseline)."""
    return max(sorted(set(scores)), key=lambda t: sum(rates(scores, answerable, t)))


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
        results.append((auroc(predicted, answerable), *rates(predicted, answerable, threshold)))
    return np.array(results)


def report_row(name: str, scores: list[float], answerable: list[bool], threshold: float) -> str:
    escalated, answered = rates(scores, answerable, threshold)
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
    swept = [rates(scores, answerable, t) for t in sweep]
    print("| unanswerable escalated | " + " | ".join(f"{e:.0%}" for e, _ in swept) + " |")
    print("| answerable answered | " + " | ".join(f"{a:.0%}" for _, a in swept) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="folder with kb-holdout.jsonl and cases-holdout.jsonl")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-escalation"))
    parser.add_argument("--fit", action="store_true", help="refit the coefficients and print them")
    parser.add_argument("--features", help="comma-separated signals to fit (default: those in COEFFICIENTS)")
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
              f"{rates(fitted, answerable, threshold)}")
        cv = cross_validate(signals, answerable, threshold)
        print(f"cross-validated AUROC {cv[:, 0].mean():.3f} (min {cv[:, 0].min():.3f})")
        return

    print(f"escalation: {len(cases)} cases, escalate below confidence {threshold} (settings.caveat_threshold)")
    evaluate("anthropic-docs holdout (fitting data)", answers, answerable, threshold)

    cv = cross_validate(signals, answerable, threshold)
    print("\n### 5-fold cross-validation on the holdout (refit per fold, 5 shuffles)\n")
    print("| | AUROC | unanswerable escalated | answerable answered |")
    print("| --- | --- | --- | --- |")
    print(f"| mean | {cv[:, 0].mean():.3f} | {cv[:, 1].mean():.0%} | {cv[:, 2].mean():.0%} |")
    print(f"| min | {cv[:, 0].min():.3f} | {cv[:, 1].min():.0%} | {cv[:, 2].min():.0%} |")

    sample = run(indexed_pipeline(args.data_dir / "sample", str(SAMPLE_KNOWLEDGE)))
    sample_cases = load_jsonl(SAMPLE_CASES)
    sample_answers = run(answer_all(sample, sample_cases))
    evaluate("sample.jsonl on examples/knowledge (other domain, same constants)", sample_answers,
             [bool(case["answerable"]) for case in sample_cases], threshold)


if __name__ == "__main__":
    main()
