"""Words that carry meaning: tokenising, a stop list and a tiny stemmer, shared by the engine.

The query rewrite, the extractive answerer and the confidence judge all ask the same question
("which words of this text matter, and does that other text contain them?"), so they share one
definition of a term. Deliberately crude and deterministic: no model, no corpus statistics.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

from knowledge.text import STOPWORDS as STOPWORDS  # re-exported: the query rewrite reads it here

WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?", re.IGNORECASE)


# Words that frame a question rather than name its subject. They stay in the signals (their
# pairs, like "refund" near "differ", do help tell sources apart) but are never reported as
# "the sources don't mention 'differences'".
FRAMING = frozenset(
    """
    differ difference differences different compare compared comparison versus vs relate related relationship
    benefit benefits advantage advantages disadvantages important happen happens mean means possible able
    work works working tip tips mention mentioned describe described provide provided offer offers
    become becomes ensure improve affect impact consider considering deciding decide next final typical
    long many cant wrong say says said take instead little big quick quickly still already anymore step steps
    """.split()
)

# Chit-chat of a thread ("thanks, also ...", "ok and again ..."), how often, and who in general
# ("what do people usually use?"): words a follow-up adds that name nothing new, so never count as
# a new subject (`bot.engine.query.new_terms`). Some are stop words already; listed here anyway so
# the follow-up check reads as one list. Docs rarely use these words, so rarity cannot tell.
FOLLOWUP_FILLER = frozenset(
    """
    thanks thank thx ty cheers also too again ok okay cool great nice awesome perfect sure right btw anyway
    actually really instead else otherwise maybe perhaps pls plz sorry yeah yep
    usually typically generally normally commonly often sometimes always people folks ppl
    """.split()
)

PRONOUNS = frozenset("it its this that these those they them their there he she".split())
CONNECTIVE_OPENER = re.compile(r"^\W*(?:and|also|but|or|so|then|what about|how about)\b", re.IGNORECASE)


def tokens(text: str) -> list[str]:
    """Word tokens as written; possessives and contractions are cut at the apostrophe."""
    return [re.split(r"['’]", token)[0] for token in WORD.findall(text)]


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return [token.lower() for token in tokens(text)]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Crude suffix stripping so 'refunds', 'refunded' and 'refunding' meet 'refund'."""
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) >= 6:
        word = word[:-3]
    elif word.endswith("ed") and len(word) >= 5:
        word = word[:-2]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def content_terms(text: str) -> list[str]:
    """Stemmed words that are not stop words, in order, repeats kept."""
    return [stem(token) for token in words(text) if token not in STOPWORDS and len(token) > 1]


def term_set(text: str) -> set[str]:
    return set(content_terms(text))


def content_words(text: str) -> list[tuple[str, str]]:
    """(stem, word as written) for each content word, in order; the word is for human-readable reasons."""
    pairs = [(token.lower(), token) for token in tokens(text)]
    return [(stem(lower), token) for lower, token in pairs if lower not in STOPWORDS and len(lower) > 1]


class TermStats:
    """How many knowledge chunks contain each term: rarity in the whole knowledge, not just the
    handful of retrieved chunks. Built once per index version from the chunk texts."""

    def __init__(self, document_frequency: dict[str, int], documents: int) -> None:
        self.df = document_frequency
        self.documents = documents

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> TermStats:
        df: Counter[str] = Counter()
        count = 0
        for text in texts:
            df.update(term_set(text))
            count += 1
        return cls(dict(df), count)

    def idf(self, term: str) -> float:
        """Smoothed inverse document frequency; a term the knowledge never uses weighs the most."""
        return math.log((self.documents + 1) / (self.df.get(term, 0) + 0.5))

    def rare(self, term: str, share: float = 0.05) -> bool:
        """In at most `share` of the chunks: specific enough that its absence means something."""
        return self.df.get(term, 0) <= share * self.documents
