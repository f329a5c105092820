"""The offline answerer: the sentences of the retrieved chunks that best answer the question, cited.

No API key, no network, nothing invented: every sentence of the answer is copied verbatim from
a chunk and carries its marker, so the answer is exactly as faithful as the knowledge.
Sentences are scored lexically (question terms weighted by how rare they are among the
retrieved chunks) plus a prior from the chunk's own retrieval strength. Embedding every
candidate sentence would read better on paraphrases but costs more than the search itself on
a small CPU, and the chunk's vector similarity already carries most of that meaning.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from bot.engine.citations import Segment, Span, assemble
from bot.engine.draft import Draft, OnDelta
from bot.engine.terms import content_terms, term_set
from bot.engine.types import Question, RetrievedChunk

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING_LINE = re.compile(r"^\s*#{1,6}\s")
TABLE_RULE = re.compile(r"^\s*\|?[\s:\-|]+\|[\s:\-|]*$")
LIST_MARKER = re.compile(r"^(?:[-*+•]|\d{1,2}[.)])\s+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“‘(\[*_])")
MIN_WORDS, MAX_WORDS = 4, 60
MIN_SENTENCES, MAX_SENTENCES = 2, 4
KEEP_RATIO = 0.5  # further sentences must score at least this share of the best one
DUPLICATE_SHARE = 0.8  # a sentence whose terms are this much inside a chosen one adds nothing


@dataclass(frozen=True)
class Candidate:
    chunk: int  # index into the retrieved chunks
    order: int  # position of the sentence inside its chunk
    text: str  # verbatim substring of the chunk text


def sentences(text: str) -> list[str]:
    """The chunk's sentences, list items and table rows; each one a verbatim substring of `text`.

    Headings, code blocks and table rules are skipped: they read badly as an answer.
    """
    found: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        stripped = line.strip()
        if in_fence or not stripped or HEADING_LINE.match(stripped) or TABLE_RULE.match(stripped):
            continue
        if stripped.startswith("|"):
            found.append(stripped.strip("|").strip())
            continue
        body = LIST_MARKER.sub("", stripped)
        found.extend(piece.strip() for piece in SENTENCE_END.split(body) if piece.strip())
    return [s for s in found if MIN_WORDS <= len(s.split()) <= MAX_WORDS and s in text]


def term_weights(question: str, chunks: Sequence[RetrievedChunk]) -> dict[str, float]:
    """IDF of each question term over the retrieved chunks: a term every chunk shares says little."""
    docs = [term_set(f"{c.title} {c.heading} {c.text}") for c in chunks]
    total = len(docs)
    weights: dict[str, float] = {}
    for term in set(content_terms(question)):
        df = sum(1 for doc in docs if term in doc)
        if df:
            weights[term] = math.log(1.0 + total / df)
    return weights


def candidates(chunks: Sequence[RetrievedChunk]) -> list[Candidate]:
    """Every usable sentence once (overlapping chunks repeat sentences; the first copy wins)."""
    seen: set[str] = set()
    found: list[Candidate] = []
    for index, chunk in enumerate(chunks):
        for order, text in enumerate(sentences(chunk.text)):
            key = " ".join(text.lower().split())
            if key not in seen:
                seen.add(key)
                found.append(Candidate(index, order, text))
    return found


def score_sentence(candidate: Candidate, chunk: RetrievedChunk, weights: dict[str, float], rank: int) -> float:
    """Share of the question's (rarity-weighted) terms in the sentence, a little credit for its
    section's heading, and a prior for strong, highly ranked chunks and early sentences."""
    total = sum(weights.values()) or 1.0
    own = term_set(candidate.text)
    context = term_set(f"{chunk.title} {chunk.heading}") - own
    lexical = sum(w for t, w in weights.items() if t in own) / total
    heading = 0.3 * sum(w for t, w in weights.items() if t in context) / total
    prior = 0.3 * (chunk.vector_similarity or 0.0) + 0.1 / rank - 0.01 * min(candidate.order, 10)
    return lexical + heading + prior


def near_duplicate(text: str, others: list[str]) -> bool:
    """Most of its words already said by a chosen sentence (overlapping chunks, repeated pages)."""
    own = term_set(text)
    return any(len(own & term_set(other)) >= DUPLICATE_SHARE * max(1, len(own)) for other in others)


def choose(scored: list[tuple[float, Candidate]]) -> list[Candidate]:
    """The best 2-4 distinct sentences, then in reading order: sources by their best sentence,
    and inside a source the document's own order."""
    ranked = sorted(scored, key=lambda pair: -pair[0])
    if not ranked:
        return []
    best = ranked[0][0]
    chosen: list[Candidate] = []
    for value, candidate in ranked:
        if len(chosen) == MAX_SENTENCES or (len(chosen) >= MIN_SENTENCES and value < KEEP_RATIO * best):
            break
        if not near_duplicate(candidate.text, [c.text for c in chosen]):
            chosen.append(candidate)
    source_rank = {c.chunk: i for i, c in reversed(list(enumerate(chosen)))}
    return sorted(chosen, key=lambda c: (source_rank[c.chunk], c.chunk, c.order))


def extract(question: str, chunks: Sequence[RetrievedChunk]) -> tuple[list[Segment], float]:
    """Cited segments for the answer and the best sentence's share of question terms."""
    weights = term_weights(question, chunks)
    scored = [
        (score_sentence(c, chunks[c.chunk], weights, c.chunk + 1), c) for c in candidates(chunks)
    ]
    chosen = choose(scored)
    segments: list[Segment] = []
    for i, candidate in enumerate(chosen):
        follows_same_source = i > 0 and chosen[i - 1].chunk == candidate.chunk
        prefix = "" if i == 0 else (" " if follows_same_source else "\n\n")
        segments.append(Segment(prefix + candidate.text, [Span(candidate.chunk, candidate.text)]))
    total = sum(weights.values()) or 1.0
    support = max((sum(w for t, w in weights.items() if t in term_set(c.text)) / total for c in chosen), default=0.0)
    return segments, support


class ExtractiveAnswerer:
    """Generator interface over `extract`; pure CPU, fast enough to run on the event loop."""

    name = "extractive"

    async def generate(
        self, question: Question, text: str, chunks: Sequence[RetrievedChunk], *, on_delta: OnDelta | None = None
    ) -> Draft:
        segments, support = extract(text, chunks)
        answer_text, citations = assemble(segments, chunks)
        if not answer_text:
            return Draft(text=NOTHING_FOUND, generator=self.name, cannot_answer=True)
        return Draft(text=answer_text, citations=citations, generator=self.name, cannot_answer=support == 0.0)


NOTHING_FOUND = "I couldn't find anything about this in the knowledge base."
