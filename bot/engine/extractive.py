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
from collections.abc import Sequence
from dataclasses import dataclass

from bot.engine.citations import Segment, Span, assemble
from bot.engine.draft import Draft, OnDelta
from bot.engine.terms import FRAMING, content_words, term_set
from bot.engine.types import Question, RetrievedChunk
from knowledge.text import FENCE, SENTENCE_END

HEADING_LINE = re.compile(r"^\s*#{1,6}\s")
TABLE_RULE = re.compile(r"^\s*\|?[\s:\-|]+\|[\s:\-|]*$")
LIST_MARKER = re.compile(r"^(?:[-*+•]|\d{1,2}[.)])\s+")
MIN_WORDS, MAX_WORDS = 4, 60
MAX_BLOCK_LINES, MAX_BLOCK_WORDS = 10, 150  # a lead-in sentence with its list or table
MIN_SENTENCES, MAX_SENTENCES = 2, 4
KEEP_RATIO = 0.5  # further sentences must score at least this share of the best one
LONG_UNIT_WORDS = 30
ASKS_FOR_NUMBER = re.compile(
    r"\b(?:how\s+(?:long|many|much|often|soon|fast|big|large|old)|when|what\s+time|max(?:imum)?|min(?:imum)?"
    r"|limits?|deadline|cost|price|fees?|rate|percent(?:age)?)\b",
    re.IGNORECASE,
)
HAS_NUMBER = re.compile(r"\d")
NUMBER_BONUS = 0.15  # "how long ...?" is answered by "180 days", which shares no word with it
DUPLICATE_SHARE = 0.8  # a sentence whose terms are this much inside a chosen one adds nothing
# A lower-case word running into the next heading with no space: "prompts?When", "promptsHow",
# "cases.GitHub". Brand names start with a capital (QuickBooks, SharePoint) and do not count.
GLUED_HEADING = re.compile(r"\b[a-z]{3,}([?:!.]?)[A-Z][a-z]")
CODE_HINT = re.compile(r"[=(){}\[\]<>`]|--|[a-z0-9]\.[a-z0-9_]")


@dataclass(frozen=True)
class Unit:
    """A quotable piece of a chunk: `text` is a verbatim substring of the chunk; `context` is what
    a reader needs to understand it and is scored but not quoted (a table row's header)."""

    text: str
    context: str = ""


@dataclass(frozen=True)
class Candidate:
    chunk: int  # index into the retrieved chunks
    order: int  # position of the unit inside its chunk
    text: str  # verbatim substring of the chunk text
    context: str = ""


def is_scraped_menu(text: str) -> bool:
    """A menu or table of contents that page scraping ran together ("Why chain prompts?When to chain
    promptsHow to chain prompts"): it repeats the knowledge's headings and answers nothing. Three
    glued headings, or two with one glued after punctuation; code (camelCase) never counts."""
    if CODE_HINT.search(text):
        return False
    glued = GLUED_HEADING.findall(text)
    return len(glued) >= 3 or (len(glued) >= 2 and any(glued))


def line_starts(lines: list[str]) -> list[int]:
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    return starts


def is_table_line(stripped: str) -> bool:
    return stripped.startswith("|") or bool(TABLE_RULE.match(stripped))


def block_end(lines: list[str], lead_in: int) -> int:
    """Last line of the list or table right after line `lead_in` (blank lines allowed), or `lead_in`."""
    last, items, kind = lead_in, 0, None
    for number in range(lead_in + 1, len(lines)):
        stripped = lines[number].strip()
        if not stripped:
            continue
        line_kind = "table" if is_table_line(stripped) else "list" if LIST_MARKER.match(stripped) else None
        if line_kind is None or kind not in (None, line_kind) or items == MAX_BLOCK_LINES:
            break
        last, items, kind = number, items + 1, line_kind
    return last


def units(text: str) -> list[Unit]:
    """The chunk's sentences, list items and table rows, in order; each a verbatim substring of `text`.

    A sentence that introduces a list or table ("... when all of the following are true:") keeps
    it, since alone it answers nothing; a lead-in with nothing after it is dropped. A table's
    header row is not quoted on its own but is the context of its rows. Headings, code blocks
    and table rules are skipped.
    """
    lines = text.split("\n")
    starts = line_starts(lines)
    found: list[Unit] = []
    in_fence, skip_until, header = False, -1, ""
    for number, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        stripped = line.strip()
        if (
            number <= skip_until
            or in_fence
            or not stripped
            or HEADING_LINE.match(stripped)
            or TABLE_RULE.match(stripped)
        ):
            continue
        if stripped.startswith("|"):
            following = next((later.strip() for later in lines[number + 1 :] if later.strip()), "")
            if TABLE_RULE.match(following):
                header = stripped
            else:
                found.append(Unit(stripped.strip("|").strip(), header))
            continue
        header = ""
        pieces = [p.strip() for p in SENTENCE_END.split(LIST_MARKER.sub("", stripped)) if p.strip()]
        if pieces and pieces[-1].endswith(":"):
            last = block_end(lines, number)
            found.extend(Unit(piece) for piece in pieces[:-1])
            if last > number:
                begin = text.find(pieces[-1], starts[number])
                found.append(Unit(text[begin : starts[last] + len(lines[last].rstrip())]))
                skip_until = last
            continue
        found.extend(Unit(piece) for piece in pieces)
    return [
        u
        for u in found
        if MIN_WORDS <= len(u.text.split()) <= max_words(u.text) and u.text in text and not is_scraped_menu(u.text)
    ]


def max_words(unit: str) -> int:
    return MAX_BLOCK_WORDS if "\n" in unit else MAX_WORDS


def term_weights(question: str, chunks: Sequence[RetrievedChunk]) -> dict[str, float]:
    """IDF of each question term over the retrieved chunks: a term every chunk shares says little."""
    docs = [term_set(f"{c.title} {c.heading} {c.text}") for c in chunks]
    total = len(docs)
    weights: dict[str, float] = {}
    for term in {stem for stem, word in content_words(question) if word.lower() not in FRAMING}:
        df = sum(1 for doc in docs if term in doc)
        if df:
            weights[term] = math.log(1.0 + total / df)
    return weights


def candidates(chunks: Sequence[RetrievedChunk]) -> list[Candidate]:
    """Every usable sentence once (overlapping chunks repeat sentences; the first copy wins)."""
    seen: set[str] = set()
    found: list[Candidate] = []
    for index, chunk in enumerate(chunks):
        for order, unit in enumerate(units(chunk.text)):
            key = " ".join(unit.text.lower().split())
            if key not in seen:
                seen.add(key)
                found.append(Candidate(index, order, unit.text, unit.context))
    return found


def score_sentence(
    candidate: Candidate, chunk: RetrievedChunk, weights: dict[str, float], rank: int, wants_number: bool = False
) -> float:
    """Share of the question's (rarity-weighted) terms in the sentence, a little credit for its
    section's heading (and table header), and a prior for strong, highly ranked chunks and early
    sentences."""
    total = sum(weights.values()) or 1.0
    own = term_set(candidate.text)
    context = term_set(f"{chunk.title} {chunk.heading} {candidate.context}") - own
    lexical = sum(w for t, w in weights.items() if t in own) / total
    heading = 0.3 * sum(w for t, w in weights.items() if t in context) / total
    prior = 0.3 * (chunk.vector_similarity or 0.0) + 0.1 / rank - 0.01 * min(candidate.order, 10)
    length = 0.002 * max(0, len(candidate.text.split()) - LONG_UNIT_WORDS)  # long blocks match by sheer size
    number = NUMBER_BONUS if wants_number and HAS_NUMBER.search(candidate.text) else 0.0
    return lexical + heading + prior + number - length


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
    wants_number = bool(ASKS_FOR_NUMBER.search(question))
    scored = [(score_sentence(c, chunks[c.chunk], weights, c.chunk + 1, wants_number), c) for c in candidates(chunks)]
    chosen = choose(scored)
    segments: list[Segment] = []
    for i, candidate in enumerate(chosen):
        inline = i > 0 and chosen[i - 1].chunk == candidate.chunk and "\n" not in chosen[i - 1].text + candidate.text
        prefix = "" if i == 0 else (" " if inline else "\n\n")  # a new source or a list starts a paragraph
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
