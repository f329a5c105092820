"""A Question (plain text, decoded at the edge) in, an Answer out: check -> retrieve -> generate -> judge -> decide.

The one place that sequences the engine and owns its edges (the index, the Claude client).
Every Answer carries its timings per stage, tokens, cost, index version and the query used.
`answer` never raises for LLM, network or index trouble: the user gets an honest Answer
(the extractive fallback, marked as such, or an escalation), never a stack trace or nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from bot.engine import calibration as calibrations
from bot.engine import confidence
from bot.engine import verdict as claude_verdict
from bot.engine.draft import Draft, GenerationError, Generator, OnDelta
from bot.engine.extractive import ExtractiveAnswerer
from bot.engine.normalise import has_question
from bot.engine.query import search_query, wants_human
from bot.engine.terms import TermStats
from bot.engine.types import Answer, Decision, Question, RetrievedChunk
from knowledge.text import truncate

if TYPE_CHECKING:
    from bot.settings import Settings
    from knowledge.embeddings import Embedder
    from knowledge.index import KnowledgeIndex
    from knowledge.search import Searcher, SearchHit

log = logging.getLogger(__name__)

EMPTY_REPLY = (
    "Hi! I didn't find a question in your message. Ask me anything about the product, "
    "for example _How do I refund a payment?_, and I'll look it up in the docs."
)
HUMAN_REPLY = "Sure, I'm handing this over to a person on the support team. They'll reply in this thread."
FALLBACK_NOTE = "_(AI answer unavailable — showing the most relevant passages)_"
UNAVAILABLE_REPLY = "Sorry, I can't search the knowledge base right now, so I've asked a person to help."


class Stopwatch:
    """Milliseconds per named stage, plus the total since creation."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round((time.perf_counter() - began) * 1000, 2)

    def done(self) -> dict[str, float]:
        return {**self.stages, "total": round((time.perf_counter() - self.started) * 1000, 2)}


def to_retrieved(hit: SearchHit) -> RetrievedChunk:
    """knowledge.search.SearchHit -> the engine's RetrievedChunk (same signals, engine vocabulary)."""
    return RetrievedChunk(
        chunk_id=hit.chunk_id, doc_id=hit.doc_id, title=hit.title, url=hit.url, doc_url=hit.doc_url,
        heading=hit.heading, text=hit.text, score=hit.score, vector_similarity=hit.vector_similarity,
        fts_score=hit.fts_score, vector_rank=hit.vector_rank, fts_rank=hit.fts_rank,
    )


class Pipeline:
    def __init__(self, settings: Settings, searcher: Searcher, *, generator: Generator | None = None) -> None:
        self.settings = settings
        self.searcher = searcher
        self.generator = generator  # None: the extractive answerer is the generator
        self.extractive = ExtractiveAnswerer()
        self._term_stats: tuple[int, TermStats] | None = None
        self._calibration: tuple[int, calibrations.Calibration | None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, index: KnowledgeIndex | None = None, searcher: Searcher | None = None,
        embedder: Embedder | None = None,
    ) -> Pipeline:
        """Claude when an API key is configured, else the extractive answerer."""
        if searcher is None:
            from knowledge.index import KnowledgeIndex
            from knowledge.search import Searcher

            index = index or KnowledgeIndex.from_settings(settings, embedder)
            searcher = Searcher.from_settings(settings, index)
        generator: Generator | None = None
        if settings.has_anthropic_key:
            from bot.engine.claude import ClaudeAnswerer

            generator = ClaudeAnswerer(settings)
        return cls(settings, searcher, generator=generator)

    async def aclose(self) -> None:
        aclose = getattr(self.generator, "aclose", None)  # the Claude client holds connections; extractive holds none
        if aclose is not None:
            await aclose()

    async def warm_up(self) -> None:
        """Load the embedding model, open the index and count terms before the first question."""
        await self.searcher.asearch("warm up", 1)
        await self.term_stats(self.searcher.index.version)
        await self.calibration(self.searcher.index.version)

    # ------------------------------------------------------------------------------ the flow

    async def answer(self, question: Question, *, on_delta: OnDelta | None = None) -> Answer:
        watch = Stopwatch()
        try:
            return await self._answer(question, on_delta, watch)
        except Exception as exc:  # the last line of defence: a bug must not leave the user with nothing
            log.exception("answer failed for interaction %s", question.interaction_id)
            return self._reply(question, UNAVAILABLE_REPLY, Decision.ESCALATE,
                               [f"internal error ({type(exc).__name__}), handed to a human"], watch)

    async def _answer(self, question: Question, on_delta: OnDelta | None, watch: Stopwatch) -> Answer:
        text = question.text  # plain text: Slack markup is decoded once, at the Slack edge
        if not has_question(text):
            return self._reply(question, EMPTY_REPLY, Decision.CLARIFY, ["empty question"], watch)
        notes: list[str] = []
        original, text = text, truncate(text, self.settings.max_question_chars, ellipsis="", at_word=True)
        if text != original:
            notes.append(f"question truncated from {len(question.text):,} to {len(text):,} characters")
        if wants_human(text):
            return self._reply(question, HUMAN_REPLY, Decision.ESCALATE, ["asked for a human", *notes], watch)

        query = search_query(text, question.history)
        try:
            with watch.stage("retrieve"):
                result = await self.searcher.asearch(
                    query, self.settings.answer_k, per_doc=self.settings.answer_chunks_per_doc
                )
        except Exception as exc:  # index missing, being rebuilt, disk trouble: say so and hand over
            log.warning("retrieval failed: %s", exc)
            return self._reply(question, UNAVAILABLE_REPLY, Decision.ESCALATE,
                               [f"knowledge search unavailable: {exc}", *notes], watch, search_query=query)
        chunks = [to_retrieved(hit) for hit in result.hits]

        with watch.stage("generate"):
            draft = await self._generate(question, text, query, chunks, on_delta)
        with watch.stage("judge"):
            stats = await self.term_stats(result.index_version)
            values = await asyncio.to_thread(  # ~5 ms of pure Python: keep it off the event loop
                confidence.signals,  # judged on the self-contained query, as retrieval saw it
                query, chunks, stats=stats, citation_coverage=draft.citation_coverage,
                cannot_answer=draft.cannot_answer,
            )
            scale = await self.calibration(result.index_version)
            values["calibration"] = scale.index_version if scale else None
            verdict = confidence.judge(
                values, answer_threshold=self.settings.answer_threshold,
                caveat_threshold=self.settings.caveat_threshold, calibration=scale,
            )
            # Claude's own verdict and its checked citations can overrule the lexical judgement
            verdict, extra = claude_verdict.review(verdict, draft.verdict, draft.citation_check, chunks)
            values = {**values, **extra}
        if draft.fallback_reason:
            notes.append(f"AI answer unavailable: {draft.fallback_reason}")
        body = f"{FALLBACK_NOTE}\n\n{draft.text}" if draft.fallback_reason else draft.text
        return Answer(
            interaction_id=question.interaction_id, question=question.text, text=body, citations=draft.citations,
            retrieved=chunks, confidence=verdict.confidence, decision=verdict.decision,
            reasons=[*verdict.reasons, *notes], generator=draft.generator, model=draft.model,
            fallback_reason=draft.fallback_reason, index_version=result.index_version, search_query=query,
            latency_ms=watch.done(), usage=draft.usage, signals=values,
        )

    async def _generate(
        self, question: Question, text: str, query: str, chunks: list[RetrievedChunk],
        on_delta: OnDelta | None,
    ) -> Draft:
        """Claude if configured (it reads the thread itself); on any failure the extractive answer,
        marked as a fallback. The extractive answerer picks sentences for the self-contained query."""
        if self.generator is None or not chunks:
            return await self.extractive.generate(question, query, chunks)
        try:
            return await self.generator.generate(question, text, chunks, on_delta=on_delta)
        except GenerationError as exc:
            reason = str(exc)
        except Exception as exc:  # an SDK or parsing surprise costs the user the AI answer, not the answer
            log.exception("generator failed")
            reason = f"unexpected {type(exc).__name__}"
        log.warning("falling back to the extractive answer: %s", reason)
        draft = await self.extractive.generate(question, query, chunks)
        draft.generator, draft.fallback_reason = "extractive-fallback", reason
        return draft

    async def term_stats(self, version: int) -> TermStats | None:
        """Term rarity over the whole knowledge, rebuilt when the index version changes."""
        if self._term_stats is None or self._term_stats[0] != version:
            try:
                stats = await asyncio.to_thread(load_term_stats, self.searcher.index)
            except Exception as exc:  # rarity from the retrieved chunks alone is the fallback
                log.warning("term statistics unavailable: %s", exc)
                return None
            self._term_stats = (version, stats)
        return self._term_stats[1]

    async def calibration(self, version: int) -> calibrations.Calibration | None:
        """The self-calibration of the refresh being served (reloaded when the index version
        changes, so a rollback brings back its own); None when off, missing or unreadable."""
        if not getattr(self.settings, "self_calibration", True):
            return None
        if self._calibration is None or self._calibration[0] != version:
            index = self.searcher.index
            try:
                serving = await asyncio.to_thread(index.serving_version)
                found = await asyncio.to_thread(calibrations.load, index.index_dir, serving)
            except Exception as exc:  # the raw score with fixed thresholds is the fallback
                log.warning("calibration unavailable: %s", exc)
                found = None
            self._calibration = (version, found)
        return self._calibration[1]

    def _reply(self, question: Question, text: str, decision: Decision, reasons: list[str], watch: Stopwatch,
               *, search_query: str = "") -> Answer:
        """An answer that did not go through retrieval and generation (empty, human, unavailable)."""
        return Answer(
            interaction_id=question.interaction_id, question=question.text, text=text, decision=decision,
            reasons=reasons, generator="none", search_query=search_query, latency_ms=watch.done(),
        )


def load_term_stats(index: KnowledgeIndex) -> TermStats:
    """Read every chunk's title, heading and text once (column scan, no vectors)."""
    table = index.table.to_lance().to_table(columns=["title", "heading", "text"])
    columns = [table.column(name).to_pylist() for name in ("title", "heading", "text")]
    return TermStats.from_texts(f"{t}\n{h}\n{x}" for t, h, x in zip(*columns))
