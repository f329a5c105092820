"""Pure metric functions: retrieval, answer, escalation, latency. No I/O, no models.

Retrieval metrics are document-level: a retrieved chunk counts when its document id or its
document url (or chunk url) is among the gold sources, so a case's gold list may name either.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from knowledge.text import FUNCTION_WORDS, MARKERS, split_answer_sentences
from knowledge.text import strip_markers as _strip_markers


def normalise_source(value: str) -> str:
    return value.strip().rstrip("/").lower()


def gold_match(retrieved_keys: Iterable[str], gold: set[str]) -> str | None:
    """The gold source that any of a hit's keys (id, url, doc url) names, if one does."""
    for key in retrieved_keys:
        if key and normalise_source(key) in gold:
            return normalise_source(key)
    return None


def ranked_gold(hits: Sequence[Sequence[str]], gold_sources: Iterable[str]) -> list[str | None]:
    """For each hit in rank order, the gold source it matches (each gold counted once)."""
    gold = {normalise_source(source) for source in gold_sources}
    seen: set[str] = set()
    ranked: list[str | None] = []
    for keys in hits:
        match = gold_match(keys, gold)
        if match in seen:
            match = None
        if match:
            seen.add(match)
        ranked.append(match)
    return ranked


def retrieval_scores(hits: Sequence[Sequence[str]], gold_sources: Sequence[str], k: int) -> dict[str, float]:
    """hit@k, recall@k, MRR@k and nDCG@k for one query; each hit is its list of keys."""
    gold = {normalise_source(source) for source in gold_sources}
    if not gold:
        return {}
    matches = ranked_gold(hits[:k], gold)
    found = [m for m in matches if m]
    first = next((rank for rank, m in enumerate(matches, start=1) if m), None)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, m in enumerate(matches, start=1) if m)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return {
        f"hit@{k}": 1.0 if found else 0.0,
        f"recall@{k}": len(found) / len(gold),
        f"mrr@{k}": 1.0 / first if first else 0.0,
        f"ndcg@{k}": dcg / ideal if ideal else 0.0,
    }


def mean_scores(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for row in rows:
        for name, value in row.items():
            totals[name] = totals.get(name, 0.0) + value
            counts[name] += 1
    return {name: round(totals[name] / counts[name], 4) for name in totals}


# ---------------------------------------------------------------------------- answers

TOKEN = re.compile(r"[a-z0-9]+")


def content_tokens(text: str) -> list[str]:
    return [token for token in TOKEN.findall(text.lower()) if token not in FUNCTION_WORDS]


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token overlap F1, stop words removed."""
    predicted, expected = content_tokens(prediction), content_tokens(reference)
    if not predicted or not expected:
        return 0.0
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------- escalation


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    positives = [s for s, label in zip(scores, labels) if label]
    negatives = [s for s, label in zip(scores, labels) if not label]
    if not positives or not negatives:
        return None
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def escalation_scores(escalated: Sequence[bool], answerable: Sequence[bool]) -> dict[str, float | None]:
    """Escalation as a detector of unanswerable questions: precision, recall, rate.

    Precision is None when nothing was escalated and recall None when every question is
    answerable: a 0 there would read as a failure (and fail a baseline check) when it is undefined.
    """
    true_positive = sum(1 for e, a in zip(escalated, answerable) if e and not a)
    predicted = sum(1 for e in escalated if e)
    actual = sum(1 for a in answerable if not a)
    return {
        "precision": round(true_positive / predicted, 4) if predicted and actual else None,
        "recall": round(true_positive / actual, 4) if actual else None,
        "escalation_rate": round(predicted / len(escalated), 4) if escalated else 0.0,
        "answered_when_answerable": round(
            sum(1 for e, a in zip(escalated, answerable) if a and not e) / max(1, sum(answerable)), 4
        ),
    }


TARGET_ESCALATED = 0.80  # of unanswerable questions, handed to a human
TARGET_ANSWERED = 0.85  # of answerable questions, answered


def operating_point(confidences: Sequence[float], answerable: Sequence[bool], threshold: float) -> tuple[float, float]:
    """(share of unanswerable questions escalated, share of answerable ones answered) when the bot
    escalates below `threshold`: the two rates a support lead trades against each other."""
    unanswerable = [c for c, a in zip(confidences, answerable) if not a]
    answerable_scores = [c for c, a in zip(confidences, answerable) if a]
    escalated = sum(c < threshold for c in unanswerable) / max(1, len(unanswerable))
    answered = sum(c >= threshold for c in answerable_scores) / max(1, len(answerable_scores))
    return escalated, answered


def threshold_advice(
    confidences: Sequence[float],
    answerable: Sequence[bool],
    current: float,
    *,
    min_escalated: float = TARGET_ESCALATED,
    min_answered: float = TARGET_ANSWERED,
) -> dict[str, Any]:
    """Where the escalation threshold should sit on this eval set: the rates at `current`, the range
    of thresholds (on a 0.05 grid) that meet both targets, and a suggestion. The suggestion is the
    meeting threshold with the most room on its tighter target or, when none meets both, the one
    closest to meeting them; None without both kinds of question."""
    escalated, answered = operating_point(confidences, answerable, current)
    advice: dict[str, Any] = {
        "current": current,
        "escalated": round(escalated, 4),
        "answered": round(answered, 4),
        "targets": [min_escalated, min_answered],
        "meeting": None,
        "suggested": None,
    }
    if all(answerable) or not any(answerable):
        return advice
    grid = [round(0.05 * i, 2) for i in range(1, 20)]
    room = {
        t: min(e - min_escalated, a - min_answered)
        for t, (e, a) in ((t, operating_point(confidences, answerable, t)) for t in grid)
    }
    meeting = [t for t in grid if room[t] >= 0]
    if meeting:
        advice["meeting"] = [meeting[0], meeting[-1]]
    suggested = max(grid, key=lambda t: (room[t], -abs(t - current)))
    advice["suggested"] = suggested
    advice["suggested_rates"] = [round(rate, 4) for rate in operating_point(confidences, answerable, suggested)]
    return advice


def meets_targets(advice: dict[str, Any]) -> bool:
    """Whether the configured threshold itself reaches both targets (the rates at it, not the grid)."""
    low_escalated, low_answered = advice["targets"]
    return advice["escalated"] >= low_escalated and advice["answered"] >= low_answered


# ---------------------------------------------------------------------------- latency


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------------- documents


def source_keys(*values: str | None) -> list[str]:
    """Keys a retrieved chunk may match a gold source by: each value, and each url without its anchor.

    Chunk urls carry a section anchor (`.../refunds#partial-refunds`) while gold lists may name
    the page; sets whose gold names a section still match on the full url or the document id.
    """
    keys: list[str] = []
    for value in values:
        if not value:
            continue
        for key in (value, value.split("#", 1)[0]):
            if key and key not in keys:
                keys.append(key)
    return keys


def unique_documents(hits: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """Collapse a chunk ranking to a document ranking (first key = document id), best chunk first."""
    seen: set[str] = set()
    documents: list[Sequence[str]] = []
    for keys in hits:
        if keys and keys[0] not in seen:
            seen.add(keys[0])
            documents.append(keys)
    return documents


# ---------------------------------------------------------------------------- faithfulness


def strip_markers(text: str | None) -> str:
    """Answer text without its citation markers, white space folded, for comparing it with a reference."""
    return _strip_markers(text, tidy=True)


def citation_numbers(sentence: str) -> list[int]:
    return [int(number) for group in MARKERS.findall(sentence) for number in group.split(",")]


def normalise_text(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .…")


def citation_supported(cited_text: str, source_text: str) -> bool:
    """Whether a citation's quoted text really occurs in the chunk it points at."""
    quote = normalise_text(cited_text or "")
    return bool(quote) and quote in normalise_text(source_text or "")


MARKER_RUN = re.compile(r"(?:\s*\[\d+(?:\s*,\s*\d+)*\])+")
DECORATION = re.compile(r"^[\s*\-+•>#]+|\*\*|__|`")


def cited_segments(text: str) -> list[tuple[list[str], list[int]]]:
    """The answer cut at its citation markers: (sentences, numbers of the markers that close them).

    Both generators put a marker right after the text it supports (bot/engine/citations.py),
    so a marker closes the segment of text since the previous marker; text after the last
    marker is a segment with no citation.
    """
    segments: list[tuple[list[str], list[int]]] = []
    start = 0
    for match in MARKER_RUN.finditer(text or ""):
        segments.append((split_answer_sentences(text[start : match.start()]), citation_numbers(match.group())))
        start = match.end()
    segments.append((split_answer_sentences((text or "")[start:]), []))
    return [(sentences, numbers) for sentences, numbers in segments if sentences]


def quoted_in(sentence: str, quotes: Sequence[str]) -> bool:
    body = normalise_text(DECORATION.sub("", sentence))
    return bool(body) and any(body in normalise_text(DECORATION.sub("", quote)) for quote in quotes)


def faithfulness(text: str, verified: Mapping[int, Sequence[str]]) -> float | None:
    """Share of answer sentences backed by a verified citation; None when there are no sentences.

    `verified` maps a citation number to its cited texts that really occur in the cited chunk
    (`citation_supported`). The sentence a marker directly follows is backed when that number
    has a verified citation; earlier sentences of the same segment (a quoted list or paragraph
    with one marker at its end) are backed only when quoted verbatim in one of those citations,
    so an uncited "Great question!" before a cited sentence does not count.
    """
    total = backed = 0
    for sentences, numbers in cited_segments(text):
        quotes = [quote for number in numbers for quote in verified.get(number, ())]
        total += len(sentences)
        if quotes:
            backed += 1 + sum(1 for sentence in sentences[:-1] if quoted_in(sentence, quotes))
    return backed / total if total else None


# ---------------------------------------------------------------------------- similarity and calibration


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    norm = math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b))
    return dot / norm if norm else 0.0


def reliability_bins(confidences: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width confidence bins with the observed rate of `outcomes` in each (reliability diagram)."""
    members: dict[int, list[tuple[float, bool]]] = {}
    for confidence, outcome in zip(confidences, outcomes):
        index = min(bins - 1, max(0, int(confidence * bins)))
        members.setdefault(index, []).append((confidence, outcome))
    return [
        {
            "lower": index / bins,
            "upper": (index + 1) / bins,
            "count": len(pairs),
            "mean_confidence": round(sum(c for c, _ in pairs) / len(pairs), 4),
            "observed": round(sum(o for _, o in pairs) / len(pairs), 4),
        }
        for index, pairs in sorted(members.items())
    ]


def expected_calibration_error(bins: Sequence[dict[str, float]]) -> float | None:
    total = sum(row["count"] for row in bins)
    if not total:
        return None
    return round(sum(row["count"] * abs(row["mean_confidence"] - row["observed"]) for row in bins) / total, 4)
