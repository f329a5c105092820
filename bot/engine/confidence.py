"""Should the bot answer? Signals -> a calibrated score in [0, 1] -> a Decision with reasons. Pure.

No single signal is trustworthy: a question about a topic the knowledge covers *around* (the
right page, the wrong section) still retrieves similar chunks. What separates answerable from
unanswerable questions is whether one source says what the question asks, in its words:

- `top_similarity`, `second_similarity`, `margin`: cosine similarity of the best documents;
- `rank_agreement`: whether full-text and vector search agree on the top document;
- `term_coverage`: the share of the question's terms (weighted by rarity in the whole knowledge)
  that the best source contains;
- `phrase_match`: the same for ordered pairs of nearby question terms ("refund" near "fee"),
  which is what tells the right section from its neighbours;
- `heading_match`: how much of a source's title and heading the question repeats;
- `question_length`: log(1 + the question's distinct terms). Not evidence itself: the shares
  above mean different things for a six-word question and for one that pastes an error, and this
  lets the fit set their level by length (issue 10: coverage normalised by question length).

They are combined by a logistic function whose coefficients are fitted offline (see `COEFFICIENTS`);
the generator's own "cannot answer" caps the score and uncited answer text lowers it.

A follow-up in a thread is judged with the thread's terms, which its sources cover whatever the
follow-up asks ("connect quickbooks" -> "can we sync with netsuite too?"). So the words it adds
(`bot.engine.query.followup_new_terms`) are checked on their own: when most of their rarity weight
is words the retrieved sources never use, the score is capped below the escalation line
(`followup_novelty`, `unknown_followup_terms`). Not fitted: "most" is half, "rare" the judge's usual
5% of chunks. A first question never takes this path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bot.engine.terms import FRAMING, TermStats, content_words, term_set
from bot.engine.types import Decision, RetrievedChunk

QUESTION_WINDOW = 3  # question terms at most this far apart form a pair
SOURCE_WINDOW = 4  # ... and count as matched when they occur in order this close in a source

# Fitted with `python benchmarks/escalation.py ../shared/datasets/anthropic-docs --fit`: scikit-learn's
# L2 logistic regression (C 0.5 on standardised signals, classes balanced, converted back to raw
# units) on the labelled questions of three development domains of different shapes: the
# anthropic-docs holdout (audited labels), the sample help center and the technotes set (long
# questions with pasted errors). rank_agreement and second_similarity were tried and left out (no
# gain leaving one domain out). The level of this score still differs by domain; each index's
# self-calibration (bot/engine/calibration.py) places the escalation line. question_length was
# added on cached retrievals (left-out AUROC up on all three domains); sentence-level signals were
# tried and left out (RESULTS.md). benchmarks/RESULTS.md,
# "Escalation across domains", has every domain scored by constants fitted without it.
INTERCEPT = -5.511
COEFFICIENTS: dict[str, float] = {
    "top_similarity": 1.873,
    "margin": 9.495,
    "term_coverage": 3.955,
    "phrase_match": 7.083,
    "heading_match": 2.511,
    "question_length": -0.287,
}
CANNOT_ANSWER_CAP = 0.15  # the generator said the sources do not answer: escalate whatever retrieval says
UNKNOWN_SHARE = 0.5  # a follow-up whose new words are at least this unknown (rarity-weighted) is escalated

# Levels below which a signal is called out in the reasons: under them sit mostly unanswerable
# questions in both eval sets (holdout and sample), so the remark is usually a real warning.
LOW_SIMILARITY = 0.45
LOW_PHRASE = 0.12
LOW_COVERAGE = 0.4


@dataclass(frozen=True)
class Judgement:
    confidence: float
    decision: Decision
    reasons: list[str]


def ordered_pairs(terms: Sequence[str], window: int) -> set[tuple[str, str]]:
    return {(terms[i], terms[j]) for i in range(len(terms)) for j in range(i + 1, min(len(terms), i + window + 1))}


def source_text(chunk: RetrievedChunk) -> str:
    return f"{chunk.title}\n{chunk.heading}\n{chunk.text}"


def followup_novelty(new_terms: Sequence[str], seen: set[str], stats: TermStats) -> dict[str, Any]:
    """How much of what a follow-up adds the retrieved sources never use: the words (as written),
    those unknown to the sources and rare in the whole knowledge (most weighty first), and their
    share of the words' IDF weight, so a common word missing from the top chunks hardly counts."""
    written = dict(content_words(" ".join(new_terms)))  # stem -> the word as the user wrote it
    weight = {term: stats.idf(term) for term in written}
    unknown = sorted((t for t in written if t not in seen and stats.rare(t)), key=lambda t: -weight[t])
    total = sum(weight.values())
    return {
        "new_terms": list(written.values()),
        "new_terms_unknown": [written[t] for t in unknown],
        "new_terms_unknown_share": round(sum(weight[t] for t in unknown) / total, 4) if total > 0 else 0.0,
    }


def unknown_followup_terms(values: dict[str, Any]) -> list[str]:
    """A follow-up's new words the sources never mention, when they are most of what it adds; else []."""
    if float(values.get("new_terms_unknown_share", 0.0)) < UNKNOWN_SHARE:
        return []
    return list(values.get("new_terms_unknown", []))


def signals(
    question: str,
    chunks: Sequence[RetrievedChunk],
    *,
    stats: TermStats | None = None,
    citation_coverage: float = 1.0,
    cannot_answer: bool = False,
    new_terms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every input of the score, plus what the reasons need (missing terms). `new_terms`: what a
    follow-up adds to its thread (None for a first question, whose values stay as they were)."""
    stats = stats or TermStats.from_texts(source_text(c) for c in chunks)
    written = dict(content_words(question))  # stem -> the word as the user wrote it
    terms = [stem for stem, _ in content_words(question)]
    unique = set(terms)
    weight = {term: stats.idf(term) for term in unique}
    total = sum(weight.values()) or 1.0
    pairs = ordered_pairs(terms, QUESTION_WINDOW)
    pair_total = sum(weight[a] + weight[b] for a, b in pairs) or 1.0

    coverage = phrase = heading = 0.0
    seen: set[str] = set()
    for chunk in chunks:
        source_terms = [stem for stem, _ in content_words(source_text(chunk))]
        present = set(source_terms)
        seen |= present
        coverage = max(coverage, sum(weight[t] for t in unique & present) / total)
        if pairs:
            matched = pairs & ordered_pairs(source_terms, SOURCE_WINDOW)
            phrase = max(phrase, sum(weight[a] + weight[b] for a, b in matched) / pair_total)
        head = term_set(f"{chunk.title} {chunk.heading}")
        if head:
            heading = max(heading, len(head & unique) / len(head))

    by_doc: dict[str, float] = {}
    for chunk in chunks:
        by_doc[chunk.doc_id] = max(by_doc.get(chunk.doc_id, 0.0), chunk.vector_similarity or 0.0)
    sims = sorted(by_doc.values(), reverse=True) + [0.0, 0.0]
    top = chunks[0] if chunks else None
    agreement = 0.0
    if top is not None:
        agreement = 0.5 * (1.0 / (top.vector_rank or math.inf)) + 0.5 * (1.0 / (top.fts_rank or math.inf))
    missing = sorted((t for t in unique - seen), key=lambda t: -weight[t])
    followup = followup_novelty(new_terms, seen, stats) if new_terms is not None else {}
    return {
        "top_similarity": round(sims[0], 4),
        "second_similarity": round(sims[1], 4),
        "margin": round(sims[0] - sims[1], 4),
        "rank_agreement": round(agreement, 4),
        "term_coverage": round(coverage, 4),
        "phrase_match": round(phrase, 4),
        "heading_match": round(heading, 4),
        "citation_coverage": round(citation_coverage, 4),
        "cannot_answer": cannot_answer,
        "question_terms": len(unique),
        "question_length": round(math.log1p(len(unique)), 4),
        "missing_terms": [written[t] for t in missing if stats.rare(t) and written[t].lower() not in FRAMING][:5],
        "sources": len(chunks),
        **followup,
    }


def signal(values: dict[str, Any], name: str) -> float:
    """One input of the score; `question_length` is derived from `question_terms` when missing
    (probes a calibration stored before it existed are rescored without a new search)."""
    if name == "question_length" and name not in values:
        return round(math.log1p(float(values.get("question_terms", 0.0))), 4)
    return float(values.get(name, 0.0))


def score(
    values: dict[str, Any], *, intercept: float = INTERCEPT, coefficients: dict[str, float] = COEFFICIENTS
) -> float:
    """Logistic combination of the fitted signals, lowered for uncited text: the raw score, before
    the index's calibration and the generator's own verdict (`judge` applies both).
    (`intercept`/`coefficients` are parameters so the fitting script scores folds the same way.)"""
    if not values.get("sources"):
        return 0.0
    z = intercept + sum(weight * signal(values, name) for name, weight in coefficients.items())
    probability = 1.0 / (1.0 + math.exp(-z))
    probability *= min(1.0, 0.5 + float(values.get("citation_coverage", 1.0)))  # mostly uncited: up to halved
    return round(probability, 4)


def decide(confidence: float, answer_threshold: float, caveat_threshold: float) -> Decision:
    if confidence >= answer_threshold:
        return Decision.ANSWER
    if confidence >= caveat_threshold:
        return Decision.ANSWER_WITH_CAVEAT
    return Decision.ESCALATE


def reasons(values: dict[str, Any], confidence: float, decision: Decision, caveat_threshold: float) -> list[str]:
    """Why, in words a support lead can check against the sources."""
    found: list[str] = []
    if not values.get("sources"):
        return ["no source in the knowledge matches the question"]
    if values.get("cannot_answer"):
        found.append("the answerer said the sources don't contain the answer")
    unknown = unknown_followup_terms(values)
    if unknown:
        found.append(f"follow-up asks about {quoted(unknown[:3])}, which the sources never mention")
    said = {t.lower() for t in unknown}
    missing = [t for t in values.get("missing_terms", []) if t.lower() not in said]
    if missing:
        found.append("the sources don't mention " + ", ".join(f"'{t}'" for t in missing[:3]))
    similarity = values["top_similarity"]
    found.append(f"top source similarity {similarity:.2f}" + (" is low" if similarity < LOW_SIMILARITY else ""))
    if values["phrase_match"] < LOW_PHRASE:
        found.append(f"the sources barely use the question's wording (phrase match {values['phrase_match']:.2f})")
    if values["term_coverage"] < LOW_COVERAGE:
        found.append(f"the best source covers only {values['term_coverage']:.0%} of the question's key terms")
    if values["citation_coverage"] < 0.9:
        found.append(f"only {values['citation_coverage']:.0%} of the answer is backed by a citation")
    calibrated = " (calibrated on this index)" if values.get("calibration") else ""
    if decision is Decision.ESCALATE:
        found.append(
            f"confidence {confidence:.2f} is below the escalation threshold {caveat_threshold:.2f}{calibrated}"
        )
    else:
        found.append(f"confidence {confidence:.2f}{calibrated}")
    return found


def quoted(terms: Sequence[str]) -> str:
    """'a', 'a' and 'b', 'a', 'b' and 'c'."""
    marked = [f"'{t}'" for t in terms]
    return marked[0] if len(marked) == 1 else ", ".join(marked[:-1]) + " and " + marked[-1]


class Scale(Protocol):
    """Maps a raw score onto the common scale (bot/engine/calibration.py's Calibration)."""

    def to_scale(self, raw: float, *, caveat_at: float, answer_at: float) -> float: ...


def judge(
    values: dict[str, Any], *, answer_threshold: float, caveat_threshold: float, calibration: Scale | None = None
) -> Judgement:
    """Raw score -> this index's calibrated scale (when it has one) -> the generator's veto and the
    follow-up check -> decision.
    `values` gains `raw_score`, so evals and the next calibration can read the unscaled score."""
    raw = score(values)
    values["raw_score"] = raw
    confidence = raw
    if calibration is not None:
        confidence = calibration.to_scale(raw, caveat_at=caveat_threshold, answer_at=answer_threshold)
    if values.get("cannot_answer"):  # the generator said the sources do not answer: escalate whatever retrieval says
        confidence = min(confidence, CANNOT_ANSWER_CAP, caveat_threshold - 0.01)
    if unknown_followup_terms(values):  # a follow-up about what the sources never mention: escalate
        confidence = min(confidence, caveat_threshold - 0.01)
    decision = decide(confidence, answer_threshold, caveat_threshold)
    return Judgement(confidence, decision, reasons(values, confidence, decision, caveat_threshold))
