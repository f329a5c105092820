"""Text helpers shared by every layer: sentences, citation markers, code fences, stop words, SQL literals.

They were written two or three times (chunker, offline answerer, eval metrics, stores) and had
started to drift apart. They live here, at the bottom of the house, because `knowledge/` imports
nothing of `bot/` or `evals/` while both of those may import `knowledge/`.
Pure functions and compiled patterns only.
"""

from __future__ import annotations

import re

# A fenced code block's opening or closing line (``` or ~~~), which sentence and unit splitters skip.
FENCE = re.compile(r"^\s*(```|~~~)")

# A sentence ends at . ! ? followed by white space and a capital, digit, quote, bracket or Markdown
# emphasis, so "e.g. missing", "vs. speed" and "3.5 days" do not split.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'“‘(\[*_])")

# Numbered citation markers as the bot writes them: [1], and [1, 2] in answers from the eval set.
MARKERS = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# In answers, a sentence also ends after its markers ("days.[1] Next") and at every line break.
ANSWER_SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?])|(?<=\d\]))\s+(?=[A-Z0-9*_`\"'“‘(\[])|\n+")
_LEADING_MARKERS = re.compile(r"^((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)\s*")
_HAS_WORD = re.compile(r"[A-Za-z0-9]")

# Words that carry no subject: retrieval terms, query rewriting and the confidence judge drop them.
STOPWORDS = frozenset(
    """
    a about above after again all also am an and any are as at be because been before being below between both
    but by can cannot could did do does doing done down during each either else ever every few for from further
    get gets getting got had has have having he her here hers him his how however i if in into is it its itself
    just let like ll may me might mine more most much must my need needs no nor not now of off on once only or
    other our ours out over own please re same shall she should so some such than that the their theirs them
    then there these they this those through to too under until up upon us use used using very via want wants
    was we were what whatever when where whether which while who whom whose why will with within without would
    yes yet you your yours ve d s t m thing things way ways anyone someone something anything everything
    hi hello hey thanks thank help know tell explain question
    one two three key main certain specific according documentation docs doc
    """.split()
)
# The narrower list token F1 ignores (articles, pronouns, auxiliaries: the SQuAD convention). A subset
# of STOPWORDS kept apart on purpose: tuning the engine's list must not move the correctness metric.
FUNCTION_WORDS = frozenset(
    "a an the and or of to in on for with by is are was were be been it its this that as at from "
    "you your can do does how what which who when where why i we our they their".split()
)


def split_sentences(text: str) -> list[str]:
    """Sentences of plain prose (no markers, no line structure): stripped, empty pieces dropped."""
    return [part.strip() for part in SENTENCE_END.split(text) if part.strip()]


def split_answer_sentences(text: str | None) -> list[str]:
    """Answer sentences, each with the citation markers that follow it (`days.[1]`, `days. [1]`)."""
    sentences: list[str] = []
    for piece in ANSWER_SENTENCE_BREAK.split(text or ""):
        piece = piece.strip()
        leading = _LEADING_MARKERS.match(piece)
        if leading and sentences:  # "... days. [1] Next": the marker belongs to the previous sentence
            sentences[-1] += " " + leading.group(1).strip()
            piece = piece[leading.end() :]
        if _HAS_WORD.search(MARKERS.sub("", piece)):
            sentences.append(piece)
    return sentences


def strip_markers(text: str | None, *, tidy: bool = False) -> str:
    """Text without its citation markers; `tidy` also folds white space and closes "days ." to "days."."""
    stripped = MARKERS.sub("", text or "")
    return " ".join(stripped.replace(" .", ".").split()) if tidy else stripped


def truncate(text: str, limit: int, *, ellipsis: str = "…", at_word: bool = False) -> str:
    """At most `limit` characters, `ellipsis` included when cut; `at_word` cuts at a space in the last tenth."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ellipsis)]
    if at_word:
        space = cut.rfind(" ", int(limit * 0.9))
        cut = cut[:space] if space > 0 else cut
    return cut.rstrip() + ellipsis


def sql_string(value: str) -> str:
    """A SQL string literal for LanceDB filters: single quotes doubled, so a value cannot end the string."""
    return "'" + value.replace("'", "''") + "'"
