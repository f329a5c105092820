"""Heading-aware, token-aware chunking.

A document is cut at its headings first; a section that is still longer than the embedding
model reads is packed paragraph by paragraph (then sentence by sentence) with a small overlap.
Every chunk carries the document title and heading path, because a chunk that says "Click Save"
means nothing to the embedding model or to a reader without "Invoices > Recurring invoices".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from knowledge.sources import Document
from knowledge.text import FENCE, split_sentences

CHUNKER_VERSION = "3"  # bump to force re-embedding everything after a chunking change
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
MIN_SECTION_TOKENS = 24  # smaller sections are merged into the next one

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    source: str
    title: str
    url: str  # the document url, with the section's anchor where the page has one
    doc_url: str
    heading: str  # "Heading > Sub-heading"
    text: str
    position: int
    doc_hash: str
    metadata: str = "{}"  # JSON of the document facts answers show (updated_at, labels)

    @property
    def embed_text(self) -> str:
        """What the embedding model and the full-text index read: context first, then the body."""
        context = " > ".join(part for part in (self.title, self.heading) if part)
        return f"{context}\n{self.text}" if context else self.text


@dataclass
class Section:
    path: list[str]
    lines: list[str]


def slugify(heading: str) -> str:
    """GitHub-style anchor: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", heading.lower()).strip()
    return slug.replace(" ", "-")


def split_sections(text: str) -> list[Section]:
    """Sections by Markdown heading, ignoring '#' lines inside code fences."""
    sections = [Section(path=[], lines=[])]
    stack: list[tuple[int, str]] = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else HEADING.match(line)
        if match:
            level, title = len(match.group(1)), match.group(2).strip()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            sections.append(Section(path=[name for _, name in stack], lines=[]))
        else:
            sections[-1].lines.append(line)
    return sections


def split_paragraphs(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def split_by_words(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Last resort for a run-on 'sentence' (a table, a log line): cut between words."""
    pieces: list[str] = []
    current: list[str] = []
    words = [piece for word in text.split() for piece in split_long_word(word, max_tokens, count)]
    current_tokens = 0
    for word in words:
        word_tokens = count(word)  # word pieces never cross whitespace, so counts add up
        if current and current_tokens + word_tokens > max_tokens:
            pieces.append(" ".join(current))
            current, current_tokens = [], 0
        current.append(word)
        current_tokens += word_tokens
    if current:
        pieces.append(" ".join(current))
    return pieces


def split_long_word(word: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """A 'word' longer than the budget (a URL, a hash, ':::::'): cut it by characters."""
    if count(word) <= max_tokens:
        return [word]
    pieces: list[str] = []
    start = 0
    while start < len(word):
        end = len(word)
        while end - start > 1 and count(word[start:end]) > max_tokens:
            end = start + max(1, (end - start) // 2)
        pieces.append(word[start:end])
        start = end
    return pieces


def units_within(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Paragraphs, or sentences of long paragraphs, or word runs of long sentences."""
    units: list[str] = []
    for paragraph in split_paragraphs(text):
        if count(paragraph) <= max_tokens:
            units.append(paragraph)
            continue
        for sentence in split_sentences(paragraph):
            if count(sentence) <= max_tokens:
                units.append(sentence)
            else:
                units.extend(split_by_words(sentence, max_tokens, count))
    return units


def pack(units: Sequence[str], max_tokens: int, overlap_tokens: int, count: TokenCounter) -> list[str]:
    """Greedy packing of units into chunks; each new chunk repeats the tail of the last one."""
    chunks: list[list[str]] = []
    current: list[str] = []
    current_tokens = 0
    for unit in units:
        unit_tokens = count(unit)
        if current and current_tokens + unit_tokens > max_tokens:
            chunks.append(current)
            tail: list[str] = []
            tail_tokens = 0
            for previous in reversed(current):
                previous_tokens = count(previous)
                if tail_tokens + previous_tokens > overlap_tokens:
                    break
                tail.insert(0, previous)
                tail_tokens += previous_tokens
            if tail_tokens + unit_tokens > max_tokens:
                tail, tail_tokens = [], 0  # no room for overlap before this unit
            current, current_tokens = tail, tail_tokens
        current.append(unit)
        current_tokens += unit_tokens
    if current:
        chunks.append(current)
    return ["\n\n".join(chunk) for chunk in chunks]


def chunk_document(doc: Document, count: TokenCounter, max_tokens: int = 200, overlap_tokens: int = 32) -> list[Chunk]:
    """All chunks of one document, in reading order."""
    sections = split_sections(doc.text)
    merged: list[Section] = []
    carry: list[str] = []
    for section in sections:
        body = "\n".join(section.lines).strip()
        if not body and not carry:
            # A heading with nothing under it: its title joins the next section's text.
            if section.path:
                carry.append(section.path[-1])
            continue
        lines = carry + ([body] if body else [])
        carry = []
        heading_line = section.path[-1] if section.path else ""
        joined = [heading_line, *lines] if heading_line else lines
        if (
            merged
            and count("\n".join(merged[-1].lines)) < MIN_SECTION_TOKENS
            and count("\n".join(merged[-1].lines + joined)) <= max_tokens
        ):
            merged[-1].lines.extend(joined)  # a stub section and its short neighbour read better as one
            continue
        merged.append(Section(path=section.path, lines=lines))
    if carry:
        merged.append(Section(path=[], lines=carry))

    doc_hash = doc.content_hash
    id_prefix = hashlib.sha1(f"{doc.source}\0{doc.doc_id}".encode()).hexdigest()[:16]
    chunks: list[Chunk] = []
    for section in merged:
        path = [part for part in section.path if part.strip() != doc.title.strip()]
        heading = " > ".join(path)
        context_tokens = count(" > ".join(filter(None, (doc.title, heading)))) + 2
        budget = max(32, max_tokens - context_tokens)
        body = "\n".join(section.lines).strip()
        if not body:
            continue
        anchor = section_anchor(doc, section.path)
        for text in pack(units_within(body, budget, count), budget, overlap_tokens, count):
            chunks.append(
                Chunk(
                    chunk_id=f"{id_prefix}-{len(chunks)}",
                    doc_id=doc.doc_id,
                    source=doc.source,
                    title=doc.title,
                    url=with_anchor(doc.url, anchor),
                    doc_url=doc.url,
                    heading=heading,
                    text=text,
                    position=len(chunks),
                    doc_hash=doc_hash,
                    metadata=stored_metadata(doc),
                )
            )
    return chunks


STORED_METADATA_KEYS = ("updated_at", "labels")


def stored_metadata(doc: Document) -> str:
    """The document facts kept with every chunk, for freshness notes and filters at answer time."""
    kept = {key: doc.metadata[key] for key in STORED_METADATA_KEYS if doc.metadata.get(key) not in (None, "", [])}
    return json.dumps(kept, sort_keys=True, default=str)


def section_anchor(doc: Document, path: list[str]) -> str | None:
    """The anchor of the section's own heading: the page's id where known, a slug for Markdown."""
    if not path:
        return None
    heading = path[-1]
    if doc.anchors:
        return doc.anchors.get(heading)
    if "#" in doc.url or not doc.url.startswith(("http://", "https://")):
        return None  # the url already points into a page, or there is no page to anchor into
    if heading.strip() == doc.title.strip():
        return None
    return slugify(heading) or None


def with_anchor(url: str, anchor: str | None) -> str:
    if not anchor or "#" in url:
        return url
    return f"{url}#{anchor}"


@lru_cache(maxsize=4)
def wordpiece_counter(model_dir: str) -> TokenCounter:
    """Counts the embedding model's word pieces with the `tokenizers` library (no torch needed)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()

    @lru_cache(maxsize=65536)  # packing asks for the same units' counts again and again
    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count
