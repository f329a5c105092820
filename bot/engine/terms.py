"""Words that carry meaning: tokenising, a stop list and a tiny stemmer, shared by the engine.

The query rewrite, the extractive answerer and the confidence judge all ask the same question
("which words of this text matter, and does that other text contain them?"), so they share one
definition of a term. Deliberately crude and deterministic: no model, no corpus statistics.
"""

from __future__ import annotations

import re
from functools import lru_cache

WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")

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
    """.split()
)

PRONOUN_LEADS = frozenset("it its this that these those they them there he she what about and also how".split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens; possessives and contractions are cut at the apostrophe."""
    return [re.split(r"['’]", token)[0] for token in WORD.findall(text.lower())]


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
