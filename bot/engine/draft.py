"""What a generator hands back to the pipeline, and how it says it could not.

A Draft is an answer before judgement: text with markers, citations, usage and whether the
generator itself said the sources do not answer the question. A generator that gives its own
verdict (Claude) also fills `verdict` and `citation_check`; `verdict=None` (the extractive
answerer) leaves the decision to the retrieval confidence alone. Generators raise
`GenerationError` (never an SDK exception) so the pipeline can fall back without knowing
which generator failed or why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.engine.types import Citation, Question, RetrievedChunk, Usage
from bot.engine.verdict import CitationCheck, Verdict

OnDelta = Callable[[str], Awaitable[None]]


@dataclass
class Draft:
    text: str
    citations: list[Citation] = field(default_factory=list)
    generator: str = "extractive"
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    cannot_answer: bool = False  # the generator itself found no answer in the sources
    citation_coverage: float = 1.0  # share of the answer text backed by a citation
    fallback_reason: str | None = None
    verdict: Verdict | None = None  # the generator's own verdict; None: it gives none
    citation_check: CitationCheck = field(default_factory=CitationCheck)  # its citations against their sources


class GenerationError(RuntimeError):
    """The generator could not produce an answer (API error, timeout, malformed reply)."""


class Generator(Protocol):
    async def generate(
        self, question: Question, text: str, chunks: Sequence[RetrievedChunk], *, on_delta: OnDelta | None = None
    ) -> Draft: ...
