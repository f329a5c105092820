"""What the user's message asks for: a human, or a search query (made self-contained). Pure.

In a thread, "and for ACH?" or "how long does it take?" retrieves nothing useful on its own;
the previous user question says what "it" is. `search_query` is the older rule: when a follow-up
is short or starts with a pronoun, the earlier question's key terms are prepended. It missed
follow-ups that are long but still lean on the thread ("Which models are available, and which one
should I pick?") and dragged old context into new questions.

The context-aware retrieval (the pipeline's default) searches three ways and fuses them by
weighted reciprocal rank (`fuse_results`): the message alone, the message with the thread's
earlier questions (`contextual_query`), and the message within the pages the bot's previous
answer cited (the thread's strong prior). How much the last two count is `dependence`: 0 for a
declared new topic ("unrelated:", "different question"), 1 for a clarification or a context-poor
message (few content words, a pronoun up front, "and ..."), otherwise how well the message's best
match inside the cited pages holds up against its best match in the whole knowledge (embedding
similarity): a new question finds much better matches elsewhere, a follow-up does not.

`followup_new_terms` is what a follow-up adds to its thread; the confidence judge checks that the
retrieved sources know those words (an unanswerable follow-up borrows the thread's covered terms).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bot.engine.terms import (
    CONNECTIVE_OPENER,
    FOLLOWUP_FILLER,
    FRAMING,
    PRONOUNS,
    STOPWORDS,
    content_terms,
    content_words,
    term_set,
    tokens,
    words,
)
from bot.engine.types import Turn

HUMAN_REQUEST = re.compile(
    r"\b(?:talk|speak|chat)\s+(?:to|with)\s+(?:a\s+|an\s+|some\s*one\s*|a\s+real\s+|an\s+actual\s+)?"
    r"(?:human|person|agent|someone|somebody|people|support|rep|representative)\b"
    r"|\b(?:real|live|actual)\s+(?:human|person|agent)\b"
    r"|\b(?:human|agent|person|operator)\s*,?\s*(?:please|pls|plz|now)\b"
    r"|\b(?:get|give)\s+me\s+(?:a\s+)?(?:human|person|agent)\b"
    r"|^\s*(?:please\s+)?escalate\b(?!\s+(?:a|an|the|my)\s+\w)"
    r"|\bescalate\s+(?:this|it|me|to\s+(?:a\s+)?(?:human|support|someone))\b"
    r"|^\W*(?:human|agent|operator)\W*$",
    re.IGNORECASE,
)
SHORT_FOLLOWUP_WORDS = 6  # a follow-up this short rarely names its own topic
PRONOUN_REACH = 3  # a pronoun among the first words points back ("does it", "can they", "is that")
CONTEXT_TERMS = 8  # at most this many terms are carried over from the previous question


def wants_human(text: str) -> bool:
    """'talk to a human', 'agent please', 'escalate' and the like: skip the bot, hand over."""
    return bool(HUMAN_REQUEST.search(text))


def previous_user_question(history: Sequence[Turn], current: str) -> str | None:
    """The last earlier user turn (the thread may already contain the current message)."""
    for turn in reversed(history):
        if turn.role == "user" and turn.text.strip() and turn.text.strip() != current.strip():
            return turn.text
    return None


def needs_context(text: str) -> bool:
    """Short, opening with a pronoun ("does it ...", "is this ...") or with a connective ("and for ACH?")."""
    lowered = words(text)
    if not lowered or len(lowered) <= SHORT_FOLLOWUP_WORDS or CONNECTIVE_OPENER.match(text):
        return True
    return bool(PRONOUNS & set(lowered[:PRONOUN_REACH]))


def key_terms(text: str, exclude: str = "", limit: int = CONTEXT_TERMS) -> list[str]:
    """The content words of `text` in order, without repeats or words already in `exclude`."""
    seen = set(words(exclude))
    terms: list[str] = []
    for token in tokens(text):
        lower = token.lower()
        if lower in STOPWORDS or len(lower) < 2 or lower in seen:
            continue
        seen.add(lower)
        terms.append(token)
    return terms[:limit]


def search_query(text: str, history: Sequence[Turn] = ()) -> str:
    """The text to retrieve with: the question itself, or, for a context-poor follow-up in a
    thread, the previous question's key terms followed by the follow-up."""
    previous = previous_user_question(history, text)
    if not previous or not needs_context(text):
        return text
    return with_carried_terms(text, previous)


def with_carried_terms(text: str, previous: str) -> str:
    """The previous question's key terms that `text` lacks, then `text`."""
    carried = key_terms(previous, exclude=text)
    return f"{' '.join(carried)} {text}".strip() if carried else text


def concatenated_query(text: str, history: Sequence[Turn] = ()) -> str:
    """Every earlier user turn of the thread followed by the message: the naive baseline."""
    return " ".join([*earlier_user_turns(history, text), text.strip()])


# ------------------------------------------------------------------ context-aware retrieval (pure parts)

TOPIC_SHIFT = re.compile(
    r"\b(?:unrelated|off[-\s]topic|separate(?:ly)?|different\s+(?:topic|question|subject|thing|issue)"
    r"|another\s+(?:question|topic|thing|issue)|new\s+(?:question|topic)|next\s+(?:thing|question)"
    r"|switching\s+(?:gears|topics?)|on\s+another\s+note|change\s+of\s+topic)\b",
    re.IGNORECASE,
)
CLARIFICATION = re.compile(
    r"\b(?:i\s+mean|i\s+meant|sorry|to\s+be\s+clear|to\s+clarify|specifically|not\s+the)\b", re.IGNORECASE
)
MARKER_REACH = 6  # a new-topic marker counts among the first words ("ok, unrelated: ...")
POOR_TERMS = 3  # a message with this few content words rarely names its own topic
FIT_LOW, FIT_HIGH = 0.5, 0.9  # thread fit (best similarity in the cited pages / best overall) -> 0..1
NO_PRIOR_DEPENDENCE = 0.7  # no cited pages to measure the fit against: lean on the thread, not all the way
CONTEXT_WEIGHT = 1.0  # the message with the thread's questions, times the dependence
THREAD_WEIGHT = 0.5  # the message within the previously cited pages, times the dependence
FUSION_RRF_K = 5  # small: the first places of each list decide (RRF with 60 flattens three short lists)
FUSION_DEPTH = 20  # documents taken from the contextual and thread lists (the message-alone list is the plain search)
CONTEXT_TURNS = 2  # earlier user turns carried into the contextual query


def declares_new_topic(text: str) -> bool:
    """'Unrelated: ...', 'different question - ...', 'ok next thing, ...' near the start."""
    return bool(TOPIC_SHIFT.search(" ".join(text.split()[:MARKER_REACH])))


def is_clarification(text: str) -> bool:
    """'sorry i mean ...', 'to be clear ...', '... specifically', '..., not the api'."""
    return bool(CLARIFICATION.search(text))


def context_poor(text: str) -> bool:
    """Few content words, a pronoun among the first words, or a connective opener ("and for ACH?")."""
    lowered = words(text)
    return (
        len(content_terms(text)) <= POOR_TERMS
        or bool(PRONOUNS & set(lowered[:PRONOUN_REACH]))
        or bool(CONNECTIVE_OPENER.match(text))
    )


def dependence(text: str, *, top_alone: float, top_thread: float | None) -> float:
    """How much the message leans on its thread, 0..1 (see the module docstring).

    `top_alone` is the best cosine similarity of the message to any chunk, `top_thread` its best
    similarity inside the pages the previous answer cited (None when it cited none).
    """
    if declares_new_topic(text):
        return 0.0
    if is_clarification(text) or context_poor(text):
        return 1.0
    if top_thread is None or top_alone <= 0:
        return NO_PRIOR_DEPENDENCE
    fit = top_thread / top_alone
    return max(0.0, min(1.0, (fit - FIT_LOW) / (FIT_HIGH - FIT_LOW)))


def earlier_user_turns(history: Sequence[Turn], current: str) -> list[str]:
    """The thread's earlier user messages, oldest first (the current one left out)."""
    return [
        turn.text.strip()
        for turn in history
        if turn.role == "user" and turn.text.strip() and turn.text.strip() != current.strip()
    ]


def contextual_query(text: str, history: Sequence[Turn] = ()) -> str:
    """The last `CONTEXT_TURNS` user questions of the thread followed by the message."""
    return " ".join([*earlier_user_turns(history, text)[-CONTEXT_TURNS:], text.strip()])


def judged_query(text: str, history: Sequence[Turn], weight: float) -> str:
    """What the confidence judge reads: a dependent message with the previous question's key
    terms it lacks (as retrieval saw it), an independent one as written."""
    previous = previous_user_question(history, text)
    if weight < 0.5 or not previous:
        return text
    return with_carried_terms(text, previous)


def new_terms(text: str, history: Sequence[Turn]) -> list[str]:
    """The message's content words (as written, first occurrence) that none of the thread's earlier
    user turns uses, leaving out chit-chat and question framing ("thanks", "too", "instead", "work").

    Why: the judge reads a follow-up with the thread's terms, and those are covered by the thread's
    sources whatever the follow-up asks; what a follow-up adds is where an unanswerable one shows
    ("connect quickbooks" -> "can we sync with netsuite too?" adds 'sync' and 'netsuite').
    """
    known = term_set(" ".join(earlier_user_turns(history, text)))
    found: dict[str, str] = {}
    for stem, word in content_words(text):
        if stem in known or stem in found or word.lower() in FOLLOWUP_FILLER or word.lower() in FRAMING:
            continue
        found[stem] = word
    return list(found.values())


def followup_new_terms(text: str, history: Sequence[Turn]) -> list[str] | None:
    """`new_terms` for a follow-up; None for a first question or a declared new topic, which are
    judged exactly as before (they carry nothing over from the thread)."""
    if previous_user_question(history, text) is None or declares_new_topic(text):
        return None
    return new_terms(text, history)


def cited_pages(history: Sequence[Turn]) -> list[str]:
    """The pages (urls without the section anchor) the bot's latest answer in the thread cited."""
    for turn in reversed(history):
        if turn.role == "assistant" and turn.sources:
            return list(dict.fromkeys(source.split("#", 1)[0] for source in turn.sources if source.strip()))
    return []


def fuse_results(
    lists: Sequence[tuple[float, Sequence[Any]]], k: int, rrf_k: int = FUSION_RRF_K, prefer: Sequence[int] = ()
) -> list[Any]:
    """Weighted reciprocal-rank fusion of several hit lists at document level.

    Each list is (weight, hits in rank order); a document's rank in a list is the rank of its
    first hit. The k best documents are returned, their `score` replaced by the fused score
    scaled to [0, 1] (1 = first in every list), with the chunks of the first list in `prefer`
    (list positions) that has the document, else of the list that gave it the most. Which part
    of an article answers is best judged by the query that carries the whole question.
    """
    scores: dict[tuple[str, str], float] = {}
    best: dict[tuple[str, str], tuple[float, int]] = {}  # doc -> (contribution, list position)
    chunks: dict[tuple[str, str], dict[int, list[Any]]] = {}
    for position, (weight, hits) in enumerate(lists):
        if weight <= 0:
            continue
        ranks: dict[tuple[str, str], int] = {}
        for hit in hits:
            key = (getattr(hit, "source", ""), hit.doc_id)
            ranks.setdefault(key, len(ranks) + 1)
            chunks.setdefault(key, {}).setdefault(position, []).append(hit)
        for key, rank in ranks.items():
            contribution = weight / (rrf_k + rank)
            scores[key] = scores.get(key, 0.0) + contribution
            if key not in best or contribution > best[key][0]:
                best[key] = (contribution, position)
    top = sum(weight for weight, hits in lists if weight > 0 and hits) / (rrf_k + 1) or 1.0
    fused: list[Any] = []
    for key in sorted(scores, key=lambda key: -scores[key])[:k]:
        chosen = next((position for position in prefer if position in chunks[key]), best[key][1])
        for hit in chunks[key][chosen]:
            fused.append(replace(hit, score=round(min(1.0, scores[key] / top), 6)))
    return fused
