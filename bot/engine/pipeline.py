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
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

from bot.engine import calibration as calibrations
from bot.engine import confidence
from bot.engine import verdict as claude_verdict
from bot.engine.budget import BUDGET_GENERATOR, DailyBudget
from bot.engine.channels import ChannelPolicies, policies_from_file
from bot.engine.draft import Draft, GenerationError, Generator, OnDelta
from bot.engine.extractive import ExtractiveAnswerer
from bot.engine.freshness import mark_stale
from bot.engine.normalise import has_question
from bot.engine.query import (
    CONTEXT_WEIGHT,
    FUSION_DEPTH,
    THREAD_WEIGHT,
    cited_pages,
    concatenated_query,
    contextual_query,
    declares_new_topic,
    dependence,
    followup_new_terms,
    fuse_results,
    judged_query,
    previous_user_question,
    search_query,
    wants_human,
)
from bot.engine.terms import TermStats
from bot.engine.types import Answer, Decision, Question, RetrievedChunk, Turn, Usage, utc_now
from knowledge.text import truncate

if TYPE_CHECKING:
    from bot.engine.rewrite import QueryRewriter
    from bot.settings import Settings
    from knowledge.embeddings import Embedder
    from knowledge.index import KnowledgeIndex
    from knowledge.search import Searcher, SearchHit, SearchResult

log = logging.getLogger(__name__)

CALIBRATION_RETRY_SECONDS = 30.0  # how long a version found without its calibration is served raw before a re-look

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
        chunk_id=hit.chunk_id,
        doc_id=hit.doc_id,
        title=hit.title,
        url=hit.url,
        doc_url=hit.doc_url,
        heading=hit.heading,
        text=hit.text,
        score=hit.score,
        vector_similarity=hit.vector_similarity,
        fts_score=hit.fts_score,
        vector_rank=hit.vector_rank,
        fts_rank=hit.fts_rank,
        source=hit.source,
        updated_at=hit.updated_at,
    )


FOLLOWUP_MODES = ("context", "heuristic", "alone", "concat")
REWRITE_ALONE_WEIGHT = 0.5  # with Claude's rewrite leading, the message alone still counts for a half


def first_set(value: float | None, default: float) -> float:
    return default if value is None else value


def thread_key(question: Question) -> str:
    """What the rewrite cache is keyed by: the Slack thread, or (CLI, evals) the thread's own text."""
    if question.channel and question.thread_ts:
        return f"{question.team_id or ''}:{question.channel}:{question.thread_ts}"
    return "\0".join(f"{turn.role}:{turn.text}" for turn in question.history)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        searcher: Searcher,
        *,
        generator: Generator | None = None,
        followup_mode: str = "context",
        rewriter: QueryRewriter | None = None,
        channels: ChannelPolicies | None = None,
    ) -> None:
        """`followup_mode` says how a follow-up in a thread is searched: "context" (context-aware
        fusion, the default), or the baselines it is measured against: "heuristic" (the earlier
        rule-based rewrite), "alone" (the message by itself), "concat" (earlier user turns + message)."""
        if followup_mode not in FOLLOWUP_MODES:
            raise ValueError(f"followup_mode must be one of {FOLLOWUP_MODES}, not {followup_mode!r}")
        self.followup_mode = followup_mode
        self.rewriter = rewriter  # bot.engine.rewrite.QueryRewriter with an API key: Claude's self-contained query
        self.settings = settings
        self.searcher = searcher
        self.channels = channels or ChannelPolicies()  # per-channel sources and thresholds
        self.generator = generator  # None: the extractive answerer is the generator
        self.extractive = ExtractiveAnswerer()
        self.budget = DailyBudget(settings.daily_budget_usd)
        self._term_stats: tuple[int, TermStats] | None = None
        self._calibration: tuple[int, calibrations.Calibration | None, float] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        index: KnowledgeIndex | None = None,
        searcher: Searcher | None = None,
        embedder: Embedder | None = None,
    ) -> Pipeline:
        """Claude when an API key is configured, else the extractive answerer."""
        if searcher is None:
            from knowledge.index import KnowledgeIndex
            from knowledge.search import Searcher

            index = index or KnowledgeIndex.from_settings(settings, embedder)
            searcher = Searcher.from_settings(settings, index)
        generator: Generator | None = None
        rewriter: QueryRewriter | None = None
        if settings.has_anthropic_key:
            from bot.engine.claude import ClaudeAnswerer
            from bot.engine.rewrite import QueryRewriter

            generator, rewriter = ClaudeAnswerer(settings), QueryRewriter(settings)
        channels = policies_from_file(settings.sources_file)
        return cls(settings, searcher, generator=generator, rewriter=rewriter, channels=channels)

    async def aclose(self) -> None:
        for part in (self.generator, self.rewriter):
            aclose = getattr(part, "aclose", None)  # the Claude clients hold connections; extractive holds none
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
            return self._reply(
                question,
                UNAVAILABLE_REPLY,
                Decision.ESCALATE,
                [f"internal error ({type(exc).__name__}), handed to a human"],
                watch,
            )

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

        query = text
        policy = self.channels.for_channel(question.channel)
        try:
            with watch.stage("retrieve"):
                query, result, rewrite_usage = await self.retrieve(
                    text, question.history, thread=thread_key(question), sources=policy.sources
                )
        except Exception as exc:  # index missing, being rebuilt, disk trouble: say so and hand over
            log.warning("retrieval failed: %s", exc)
            return self._reply(
                question,
                UNAVAILABLE_REPLY,
                Decision.ESCALATE,
                [f"knowledge search unavailable: {exc}", *notes],
                watch,
                search_query=query,
            )
        chunks = [to_retrieved(hit) for hit in result.hits]

        with watch.stage("generate"):
            draft = await self._generate(question, text, query, chunks, on_delta)
        with watch.stage("judge"):
            stats = await self.term_stats(result.index_version)
            values = await asyncio.to_thread(  # ~5 ms of pure Python: keep it off the event loop
                confidence.signals,  # judged on the self-contained query, as retrieval saw it
                query,
                chunks,
                stats=stats,
                citation_coverage=draft.citation_coverage,
                cannot_answer=draft.cannot_answer,
                new_terms=followup_new_terms(text, question.history),  # None outside a thread
            )
            scale = await self.calibration(result.index_version)
            values["calibration"] = scale.index_version if scale else None
            verdict = confidence.judge(
                values,
                answer_threshold=first_set(policy.answer_threshold, self.settings.answer_threshold),
                caveat_threshold=first_set(policy.caveat_threshold, self.settings.caveat_threshold),
                calibration=scale,
            )
            # Claude's own verdict and its checked citations can overrule the lexical judgement
            verdict, extra = claude_verdict.review(verdict, draft.verdict, draft.citation_check, chunks)
            # the lines in force when this was decided: `supportbot why` shows them even after the settings change
            lines = {
                "answer_threshold": self.settings.answer_threshold,
                "caveat_threshold": self.settings.caveat_threshold,
            }
            values = {**values, **extra, **lines}
            if draft.generator == BUDGET_GENERATOR:
                values["budget_exhausted"] = True
        self.budget.charge(draft.usage.cost_usd + rewrite_usage.cost_usd)
        if draft.fallback_reason:
            notes.append(f"AI answer unavailable: {draft.fallback_reason}")
        body = f"{FALLBACK_NOTE}\n\n{draft.text}" if draft.fallback_reason else draft.text
        return Answer(
            interaction_id=question.interaction_id,
            question=question.text,
            text=body,
            citations=mark_stale(draft.citations, utc_now(), self.settings.stale_after_days),
            retrieved=chunks,
            confidence=verdict.confidence,
            decision=verdict.decision,
            reasons=[*verdict.reasons, *notes],
            generator=draft.generator,
            model=draft.model,
            fallback_reason=draft.fallback_reason,
            index_version=result.index_version,
            search_query=query,
            latency_ms=watch.done(),
            usage=draft.usage + rewrite_usage,
            signals=values,
        )

    async def retrieve(
        self, text: str, history: Sequence[Turn], *, thread: str = "", sources: Collection[str] | None = None
    ) -> tuple[str, SearchResult, Usage]:
        """(the query the judge reads, the search result, tokens spent) for a message and its thread.

        Outside a thread, or in a baseline mode, one search as always. A follow-up in "context"
        mode: the message alone, with the thread's questions, and within the pages the previous
        answer cited, fused by `bot.engine.query.dependence` (see that module's docstring); with
        an API key Claude's self-contained rewrite is searched too and leads the fusion.
        """
        k, per_doc = self.settings.answer_k, self.settings.answer_chunks_per_doc
        # per-channel knowledge: every search below sees only the channel's sources
        search = partial(self.searcher.asearch, sources=sources) if sources is not None else self.searcher.asearch
        if self.followup_mode != "context" or previous_user_question(history, text) is None:
            query = self.followup_query(text, history)
            return query, await search(query, k, per_doc=per_doc), Usage()
        from knowledge.search import page_filter

        depth = max(k, FUSION_DEPTH)
        pages = cited_pages(history)
        where = page_filter(pages) if pages else None
        if declares_new_topic(text):  # a declared new question is searched exactly as a first one
            return text, await search(text, k, per_doc=per_doc), Usage()
        rewriter = None if self.budget.exhausted() else self.rewriter
        rewriting = asyncio.create_task(rewriter.rewrite(text, history, thread=thread)) if rewriter else None
        searches = [
            search(text, depth, per_doc=per_doc),
            search(contextual_query(text, history), depth, per_doc=per_doc),
        ]
        if where:
            searches.append(search(text, depth, per_doc=per_doc, where=where))
        try:
            alone, context, *within = await asyncio.gather(*searches)
        except BaseException:
            if rewriting is not None:
                rewriting.cancel()
            raise
        rewritten, usage = await rewriting if rewriting is not None else (None, Usage())
        weight = dependence(
            text, top_alone=alone.top_vector_similarity, top_thread=within[0].top_vector_similarity if within else None
        )
        if rewritten and rewritten.strip() != text.strip():  # Claude read the thread: its query leads
            lead = await search(rewritten, depth, per_doc=per_doc)
            lists = [
                (1.0, lead.hits),
                (REWRITE_ALONE_WEIGHT, alone.hits),
                (weight * THREAD_WEIGHT, within[0].hits if within else []),
            ]
            return rewritten, replace(alone, query=rewritten, hits=fuse_results(lists, k, prefer=(0, 2, 1))), usage
        if weight <= 0:  # the thread does not fit the message: the plain search, as for a first question
            return text, await search(text, k, per_doc=per_doc), usage
        lists = [(1.0, alone.hits), (weight * CONTEXT_WEIGHT, context.hits)]
        if within:
            lists.append((weight * THREAD_WEIGHT, within[0].hits))
        hits = fuse_results(lists, k, prefer=(1, 2, 0) if weight >= 0.5 else (0, 2, 1))
        query = judged_query(text, history, weight)
        log.debug("follow-up dependence %.2f over %d cited pages", weight, len(pages))
        return query, replace(alone, query=query, hits=hits), usage

    def followup_query(self, text: str, history: Sequence[Turn]) -> str:
        """The query of a baseline follow-up mode (the message itself outside a thread)."""
        if self.followup_mode == "alone" or previous_user_question(history, text) is None:
            return text
        if self.followup_mode == "concat":
            return concatenated_query(text, history)
        return search_query(text, history)

    async def _generate(
        self,
        question: Question,
        text: str,
        query: str,
        chunks: list[RetrievedChunk],
        on_delta: OnDelta | None,
    ) -> Draft:
        """Claude if configured (it reads the thread itself); on any failure the extractive answer,
        marked as a fallback. The extractive answerer picks sentences for the self-contained query."""
        if self.generator is None or not chunks:
            return await self.extractive.generate(question, query, chunks)
        if self.budget.exhausted():  # the day's Claude budget is spent: quote the sources instead
            draft = await self.extractive.generate(question, query, chunks)
            draft.generator, draft.fallback_reason = BUDGET_GENERATOR, self.budget.reason()
            return draft
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
        if not self.settings.self_calibration:
            return None
        cached = self._calibration
        stale_miss = (
            cached is not None and cached[1] is None and time.monotonic() - cached[2] > CALIBRATION_RETRY_SECONDS
        )
        if cached is None or cached[0] != version or stale_miss:
            # A miss is looked at again later: a refresh commits its version before it calibrates it.
            index = self.searcher.index
            try:
                serving = await asyncio.to_thread(index.serving_version)
                found = await asyncio.to_thread(calibrations.load, index.sidecar, serving)
            except Exception as exc:  # the raw score with fixed thresholds is the fallback
                log.warning("calibration unavailable: %s", exc)
                found = None
            cached = self._calibration = (version, found, time.monotonic())
        return cached[1]

    def _reply(
        self,
        question: Question,
        text: str,
        decision: Decision,
        reasons: list[str],
        watch: Stopwatch,
        *,
        search_query: str = "",
    ) -> Answer:
        """An answer that did not go through retrieval and generation (empty, human, unavailable)."""
        return Answer(
            interaction_id=question.interaction_id,
            question=question.text,
            text=text,
            decision=decision,
            reasons=reasons,
            generator="none",
            search_query=search_query,
            latency_ms=watch.done(),
        )


def load_term_stats(index: KnowledgeIndex) -> TermStats:
    """The term statistics of the index as it is now: saved per version and carried forward by
    what changed (bot/engine/corpus_terms.py), so a large index is not read whole on every start."""
    from bot.engine.corpus_terms import term_stats

    return term_stats(index)
