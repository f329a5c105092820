"""Cited answer text: pieces of text with the source spans that support them -> markers + Citations.

Both generators (Claude and the extractive answerer) produce the same thing, text segments each
backed by spans of retrieved chunks, so numbering and marker placement live here once:
a source (chunk) gets the next number the first time it is cited and keeps it, and its marker
goes right after the text it supports. Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.engine.types import Citation, RetrievedChunk


@dataclass(frozen=True)
class Span:
    """`cited_text` of retrieved chunk number `chunk` (an index into the retrieved list); a span
    that runs on into the next text blocks of the same search result ends in chunk `last`."""

    chunk: int
    cited_text: str
    last: int | None = None  # None: the span lies within `chunk`


@dataclass
class Segment:
    text: str
    spans: list[Span] = field(default_factory=list)


def markers(numbers: Sequence[int]) -> str:
    return "".join(f"[{n}]" for n in numbers)


def with_marker(text: str, numbers: Sequence[int]) -> str:
    """Put the markers after the text but before its trailing whitespace."""
    if not numbers:
        return text
    body = text.rstrip()
    return body + markers(numbers) + text[len(body) :]


def assemble(segments: Sequence[Segment], chunks: Sequence[RetrievedChunk]) -> tuple[str, list[Citation]]:
    """Join segments into Markdown with [n] markers; one Citation per distinct (source, span)."""
    numbers: dict[int, int] = {}
    citations: list[Citation] = []
    seen: set[tuple[int, str]] = set()
    parts: list[str] = []
    for segment in segments:
        cited: list[int] = []
        for span in segment.spans:
            if not 0 <= span.chunk < len(chunks):
                continue  # a citation of something we did not send: drop it rather than invent a source
            number = numbers.setdefault(span.chunk, len(numbers) + 1)
            if number not in cited:
                cited.append(number)
            if (number, span.cited_text) not in seen:
                seen.add((number, span.cited_text))
                chunk = chunks[span.chunk]
                citations.append(
                    Citation(
                        number=number,
                        doc_id=chunk.doc_id,
                        chunk_id=chunk.chunk_id,
                        url=chunk.url,
                        title=chunk.title,
                        cited_text=span.cited_text,
                        doc_url=chunk.doc_url,
                        updated_at=chunk.updated_at,
                    )
                )
        parts.append(with_marker(segment.text, cited))
    return "".join(parts).strip(), citations


def numbered_sources(citations: Sequence[Citation]) -> list[Citation]:
    """One citation per marker number, in number order: the 'Sources' list under an answer."""
    first: dict[int, Citation] = {}
    for citation in citations:
        first.setdefault(citation.number, citation)
    return [first[number] for number in sorted(first)]


def cited_share(segments: Sequence[Segment], sources: int) -> float:
    """Share of the answer's characters (whitespace aside) in segments that cite one of the
    `sources` chunks sent (a citation of anything else backs nothing)."""
    sizes = [
        (len("".join(segment.text.split())), any(0 <= span.chunk < sources for span in segment.spans))
        for segment in segments
    ]
    total = sum(size for size, _ in sizes)
    return sum(size for size, cited in sizes if cited) / total if total else 0.0
