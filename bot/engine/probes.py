"""Pseudo-questions made from the knowledge itself, for self-calibration. Pure and deterministic.

A deployment has no labelled questions on day one, but its index knows what it can answer: every
section answers *some* question. A probe is such a question, written offline from one section in
the ways staff actually ask (a heading turned into a question, a few words lifted from a sentence
mixed with words the section never uses, a long message that pastes a line from the section), and
its unanswerable twin is the same probe searched with that section masked out, its sibling
sections left in: the hard case the escalation decision exists for.

The probes deliberately do not reuse the section's wording whole: a staff member writes "money
back" where the page says "refund", so a probe keeps only part of the section's terms and adds
words from elsewhere in the knowledge.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.engine.terms import STOPWORDS, TermStats, content_words, term_set, words
from knowledge.text import split_sentences

CODE_LINE = re.compile(
    r"[A-Za-z_]+(?:Exception|Error)\b|\b[A-Z]{2,}-?\d{3,}[A-Z]?\b|\berror\b|\bfailed\b", re.IGNORECASE
)
GENERIC_HEADINGS = frozenset(
    "overview introduction summary notes note related information see also next steps prerequisites "
    "before you begin faq examples example resources more details background contents".split()
)
OPENERS = ("", "", "how do i ", "question: ", "anyone know ", "customer asks ", "quick one, ")
KINDS = ("heading", "sentence", "long")
PROBES_VERSION = "2"  # bump when the probes change: `ensure_calibrated` then writes them anew


@dataclass(frozen=True)
class Section:
    """The unit a probe is written from and masked by: one heading of one document."""

    doc_id: str
    title: str
    heading: str
    text: str  # the section's chunks joined
    chunk_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.doc_id}\0{self.heading}\0{self.text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Probe:
    question: str
    kind: str
    section_key: str
    doc_id: str
    heading: str


def sections_from_chunks(rows: Iterable[dict[str, Any]]) -> list[Section]:
    """Group chunk rows (doc_id, title, heading, text, chunk_id, position) into sections."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["doc_id"], row.get("heading") or ""), []).append(row)
    sections = []
    for (doc_id, heading), members in sorted(grouped.items()):
        members.sort(key=lambda r: int(r.get("position") or 0))
        sections.append(
            Section(
                doc_id=doc_id,
                title=members[0].get("title") or "",
                heading=heading,
                text="\n".join(r.get("text") or "" for r in members),
                chunk_ids=tuple(r["chunk_id"] for r in members),
            )
        )
    return sections


def _sentences(text: str) -> list[str]:
    prose = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    found: list[str] = []
    for line in prose.splitlines():
        line = line.strip(" #>*-|")
        found.extend(split_sentences(line))
    return found


def _code_lines(text: str) -> list[str]:
    """Lines a customer would paste: error messages, exceptions, codes (inside fences first)."""
    fenced = [
        line.strip()
        for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL)
        for line in block.splitlines()
        if len(line.strip()) > 15
    ]
    return [line for line in fenced if CODE_LINE.search(line)] or fenced


def _last_heading(heading: str) -> str:
    return heading.split(" > ")[-1].strip()


def _lift(rng: random.Random, text: str, keep: float) -> list[str]:
    """Some of the content words of `text`, in order: the rarest half always, the rest by chance."""
    written = [word for _, word in content_words(text)]
    unique: list[str] = []
    for word in written:
        if word.lower() not in (w.lower() for w in unique):
            unique.append(word)
    return [w for w in unique if rng.random() < keep]


def _foreign(rng: random.Random, section_terms: set[str], vocabulary: Sequence[str], count: int) -> list[str]:
    """Words from elsewhere in the knowledge that this section never uses: the asker's own words."""
    picked: list[str] = []
    for _ in range(count * 4):
        if len(picked) == count or not vocabulary:
            break
        word = vocabulary[rng.randrange(len(vocabulary))]
        if not (term_set(word) & section_terms):
            picked.append(word)
    return picked


def probe_for(section: Section, kind: str, rng: random.Random, vocabulary: Sequence[str]) -> Probe | None:
    section_terms = term_set(f"{section.title} {section.heading} {section.text}")
    opener = OPENERS[rng.randrange(len(OPENERS))]
    if kind == "heading":
        heading = _last_heading(section.heading) or section.title
        if not heading or heading.lower() in GENERIC_HEADINGS or len(term_set(heading)) < 2:
            return None
        lifted = _lift(rng, heading, 0.8) or [heading]
        extra = _foreign(rng, section_terms, vocabulary, 1)
        question = f"{opener}{' '.join(lifted + extra).lower()}?"
    else:
        candidates = [s for s in _sentences(section.text) if len(term_set(s)) >= 5]
        if not candidates:
            return None
        sentence = candidates[rng.randrange(len(candidates))]
        lifted = _lift(rng, sentence, 0.5)
        if len(lifted) < 3:
            return None
        extra = _foreign(rng, section_terms, vocabulary, 2)
        words_ = lifted + extra
        rng.shuffle(words_)
        question = f"{opener}{' '.join(words_)}?"
        if kind == "long":
            pasted = _code_lines(section.text)
            paste = pasted[rng.randrange(len(pasted))] if pasted else sentence
            context = " ".join(_foreign(rng, section_terms, vocabulary, 6))
            question = f"{question} Customer says they see this: {paste} ... {context}. Any idea?"
    return Probe(question=question, kind=kind, section_key=section.key, doc_id=section.doc_id, heading=section.heading)


def vocabulary_of(stats: TermStats | None, sections: Sequence[Section]) -> list[str]:
    """Mid-frequency words of the knowledge (not its rarest names, not its commonest words)."""
    seen: dict[str, str] = {}
    for section in sections:
        for stem_, word in content_words(section.text):
            seen.setdefault(stem_, word.lower())
    if stats is None:
        return sorted(set(seen.values()))
    low, high = 2, max(3, int(0.2 * stats.documents))
    return sorted(
        {
            word
            for stem_, word in seen.items()
            if low <= stats.df.get(stem_, 0) <= high and word not in STOPWORDS and not word.isdigit()
        }
    )


def make_probes(
    sections: Sequence[Section], *, limit: int, stats: TermStats | None = None, seed: int = 0
) -> list[Probe]:
    """Up to `limit` probes from as many different sections as possible, kinds in turn.
    The choice depends only on the sections and the seed, so a refresh that changes nothing
    makes the same probes (and the cache of scored probes stays valid)."""
    usable = [s for s in sections if len(words(s.text)) >= 12]
    if len(usable) < 2:
        return []
    vocabulary = vocabulary_of(stats, usable)
    order = sorted(usable, key=lambda s: hashlib.sha256(f"{seed}\0{s.key}".encode()).hexdigest())
    probes: list[Probe] = []
    for n, section in enumerate(order):
        if len(probes) >= limit:
            break
        rng = random.Random(f"{seed}\0{section.key}")
        kind = KINDS[n % len(KINDS)]
        probe = probe_for(section, kind, rng, vocabulary) or probe_for(section, "sentence", rng, vocabulary)
        if probe is not None:
            probes.append(probe)
    return probes
