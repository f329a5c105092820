"""What the user's message asks for: a human, or a search query (made self-contained). Pure.

In a thread, "and for ACH?" or "how long does it take?" retrieves nothing useful on its own;
the previous user question says what "it" is. The rewrite is cheap and deterministic: when a
follow-up is short or starts with a pronoun, the earlier question's key terms are prepended.
"""

from __future__ import annotations

import re
from typing import Sequence

from bot.engine.terms import CONNECTIVE_OPENER, PRONOUNS, STOPWORDS, tokens, words
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
    carried = key_terms(previous, exclude=text)
    return f"{' '.join(carried)} {text}".strip() if carried else text


def concatenated_query(text: str, history: Sequence[Turn] = ()) -> str:
    """Every earlier user turn of the thread followed by the message: the naive baseline."""
    earlier = [turn.text.strip() for turn in history if turn.role == "user" and turn.text.strip() != text.strip()]
    return " ".join([*earlier, text.strip()])
