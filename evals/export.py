"""Feedback and escalation resolutions -> candidate eval cases (the weekly export).

Rules (issue 5):
- thumbs-up: the bot's answer is the reference, the cited documents are the gold sources;
- an escalation resolved by a human: the human's answer is the reference; when no document
  supported the interaction (the bot escalated, cited nothing, or retrieval was weak) the case
  is a knowledge gap: `answerable: false` for the current index, with its topic noted;
- thumbs-down without a resolution (or votes that disagree): to the review file, not a candidate.
Then near-duplicate questions are merged (embedding cosine >= threshold), PII is scrubbed, and
anything already exported, frozen or rejected is skipped, so exporting twice adds nothing.
A vote in a thread becomes a follow-up case: it carries the thread's earlier turns (`history`,
scrubbed, the bot's turns without markers but with the pages they cited), and it is compared for
near-duplicates together with its thread, so two "and for ACH?" in different threads stay apart.

`plan_export` is pure (rows in, cases out); `export_feedback` does the store and file I/O.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evals.cases import EvalCase, append_cases, case_id_for_interaction, read_cases
from evals.metrics import strip_markers
from evals.pii import scrub
from evals.topics import topic_of_retrieved

if TYPE_CHECKING:
    from bot.settings import Settings

DUPLICATE_THRESHOLD = 0.9
INTERACTION_LOOKBACK = timedelta(days=2)
LOW_SIMILARITY = 0.35  # best chunk's cosine similarity to the question below this: no good source
LEADING_MENTION = re.compile(r"^\s*(?:<@[UW][A-Z0-9]+(?:\|[^>]*)?>[\s,:]*)+")
DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`7d`, `12h`, `2w` or an ISO date/time -> a UTC moment; None or '' -> no limit."""
    if not text:
        return None
    now = now or datetime.now(timezone.utc)
    match = DURATION.match(text)
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# ------------------------------------------------------------------------------ pure planning


def clean_question(text: str) -> str:
    """The question without the bot's @-mention in front, PII scrubbed."""
    return scrub(LEADING_MENTION.sub("", text or "").strip()) or ""


def clean_answer(text: str) -> str:
    """A reference answer: citation markers dropped (gold sources carry them), PII scrubbed."""
    return scrub(strip_markers(text)) or ""


def page_url(url: str) -> str:
    """Gold sources are pages: a chunk's section anchor is dropped (the metrics match on the page)."""
    return url.split("#", 1)[0]


def cited_sources(interaction: dict[str, Any]) -> list[str]:
    sources: list[str] = []
    for citation in interaction.get("citations") or []:
        source = page_url(citation.get("url") or "") or citation.get("doc_id") or ""
        if source and source not in sources:
            sources.append(source)
    return sources


def thread_turns(interaction: dict[str, Any]) -> list[dict[str, Any]]:
    """The logged thread history as case history: PII scrubbed, the bot's markers removed, the
    pages it cited kept; blank turns and unknown roles dropped."""
    turns: list[dict[str, Any]] = []
    for turn in interaction.get("history") or []:
        role = turn.get("role")
        text = clean_question(turn.get("text", "")) if role == "user" else clean_answer(turn.get("text", ""))
        if role not in ("user", "assistant") or not text.strip():
            continue
        entry: dict[str, Any] = {"role": role, "text": text}
        sources = list(dict.fromkeys(page_url(source) for source in turn.get("sources") or [] if source))
        if role == "assistant" and sources:
            entry["sources"] = sources
        turns.append(entry)
    return turns


def dedupe_text(case: EvalCase) -> str:
    """What near-duplicates are compared on: a follow-up together with its thread's questions."""
    earlier = [turn.text for turn in case.history if turn.role == "user"]
    return " ".join([*earlier, case.question])


def is_knowledge_gap(interaction: dict[str, Any], low_similarity: float = LOW_SIMILARITY) -> bool:
    """No document supported the answer: the bot escalated, cited nothing, or retrieval was weak."""
    if interaction.get("decision") == "escalate" or not interaction.get("citations"):
        return True
    similarities = [c.get("vector_similarity") for c in interaction.get("retrieved") or []]
    similarities = [s for s in similarities if s is not None]
    return bool(similarities) and max(similarities) < low_similarity


@dataclass
class ExportPlan:
    """What the export decided, before writing anything."""

    candidates: list[EvalCase] = field(default_factory=list)
    review: list[EvalCase] = field(default_factory=list)  # thumbs-down: needs a human's answer first
    skipped: list[str] = field(default_factory=list)  # interaction ids already exported, frozen or rejected
    merged: dict[str, str] = field(default_factory=dict)  # interaction id -> id of the case it merged into
    missing: list[str] = field(default_factory=list)  # feedback whose interaction is not in the log


def group_feedback(feedback: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Interaction id -> {"votes": [...], "escalation": row or None}."""
    grouped: dict[str, dict[str, Any]] = {}
    for row in feedback:
        entry = grouped.setdefault(row["interaction_id"], {"votes": [], "escalation": None})
        if row.get("kind") == "escalation":
            entry["escalation"] = row
        elif row.get("rating") in ("up", "down"):
            entry["votes"].append(row)
    return grouped


def case_from_interaction(
    interaction: dict[str, Any],
    votes: Sequence[dict[str, Any]],
    escalation: dict[str, Any] | None,
    low_similarity: float = LOW_SIMILARITY,
) -> tuple[str, EvalCase] | None:
    """("candidate" | "review", case) for one interaction's feedback, or None when nothing to learn."""
    interaction_id = interaction["interaction_id"]
    base = {
        "id": case_id_for_interaction(interaction_id),
        "question": clean_question(interaction.get("question", "")) or "(empty question)",
        "history": thread_turns(interaction),
        "interaction_id": interaction_id,
        "bot_answer": clean_answer(interaction.get("answer", "")),
        "confidence": interaction.get("confidence"),
        "decision": interaction.get("decision"),
    }
    ratings = {vote["rating"] for vote in votes}
    when = max((row["updated_at"] for row in [*votes, *([escalation] if escalation else [])]), default=None)
    if escalation and escalation.get("status") == "resolved" and (escalation.get("human_answer") or "").strip():
        gap = is_knowledge_gap(interaction, low_similarity)
        return "candidate", EvalCase(
            **base,
            reference_answer=scrub(escalation["human_answer"].strip()),
            gold_sources=[] if gap else cited_sources(interaction),
            answerable=not gap,
            origin="human-resolution",
            created_at=when,
            topic=topic_of_retrieved(interaction.get("retrieved") or []) if gap else None,
        )
    if "down" in ratings:
        comments = [scrub(vote["comment"]) for vote in votes if vote.get("comment")]
        return "review", EvalCase(
            **base,
            reference_answer=None,
            gold_sources=cited_sources(interaction),
            answerable=True,
            origin="thumbs-down",
            created_at=when,
            comments=comments,
            disagreement="up" in ratings,
        )
    if ratings == {"up"}:
        sources = cited_sources(interaction)
        return "candidate", EvalCase(
            **base,
            reference_answer=clean_answer(interaction.get("answer", "")),
            gold_sources=sources,
            answerable=True,
            origin="thumbs-up",
            created_at=when,
        )
    return None  # an escalation still open or claimed: wait for its resolution


def merge_near_duplicates(
    cases: list[EvalCase],
    vectors: np.ndarray,
    known_ids: Sequence[str],
    known_vectors: np.ndarray,
    threshold: float = DUPLICATE_THRESHOLD,
) -> tuple[list[EvalCase], dict[str, str]]:
    """Drop cases whose question is a near-duplicate of a known case or an earlier kept one.

    Vectors are L2-normalised (the Embedder's), so a dot product is the cosine similarity.
    Kept cases come first in `cases` order (put human resolutions before thumbs-up); a merged
    case's interaction id is recorded on the case it merged into (`merged_from`) and returned.
    """
    to_known = vectors @ known_vectors.T if len(known_ids) else np.zeros((len(cases), 0))
    among = vectors @ vectors.T
    kept: list[int] = []
    merged: dict[str, str] = {}
    for position, case in enumerate(cases):
        twin_id = next((known_ids[j] for j in np.flatnonzero(to_known[position] >= threshold)[:1]), None)
        if twin_id is None:
            twin = next((cases[j] for j in kept if among[position, j] >= threshold), None)
            if twin is not None:
                twin_id = twin.id
                extra = twin.model_extra  # EvalCase allows extra fields: this is the model's own dict of them
                assert extra is not None
                extra["merged_from"] = [*extra.get("merged_from", []), case.interaction_id]
                if twin.answerable and case.answerable:
                    twin.gold_sources = list(dict.fromkeys([*twin.gold_sources, *case.gold_sources]))
        if twin_id is None:
            kept.append(position)
        else:
            merged[case.interaction_id or case.id] = twin_id
    return [cases[j] for j in kept], merged


ORIGIN_PRIORITY = {"human-resolution": 0, "thumbs-up": 1, "thumbs-down": 2}


def plan_export(
    interactions: Iterable[dict[str, Any]],
    feedback: Iterable[dict[str, Any]],
    seen_ids: set[str],
    seen_review_ids: Collection[str] = frozenset(),
    low_similarity: float = LOW_SIMILARITY,
) -> ExportPlan:
    """Candidates and review items from the logs (before dedupe).

    Interactions in `seen_ids` (exported, frozen or rejected) are skipped; one already in the
    review file is skipped only while it still needs review, so a later human resolution of a
    thumbs-down answer still becomes a candidate.
    """
    by_id = {row["interaction_id"]: row for row in interactions}
    plan = ExportPlan()
    for interaction_id, entry in group_feedback(feedback).items():
        if interaction_id in seen_ids or case_id_for_interaction(interaction_id) in seen_ids:
            plan.skipped.append(interaction_id)
            continue
        if interaction_id not in by_id:
            plan.missing.append(interaction_id)
            continue
        outcome = case_from_interaction(by_id[interaction_id], entry["votes"], entry["escalation"], low_similarity)
        if outcome is None:
            continue
        kind, case = outcome
        if kind == "review" and interaction_id in seen_review_ids:
            plan.skipped.append(interaction_id)
        else:
            (plan.candidates if kind == "candidate" else plan.review).append(case)
    plan.candidates.sort(
        key=lambda case: (
            ORIGIN_PRIORITY.get(case.origin or "", 9),
            case.created_at or datetime.min.replace(tzinfo=timezone.utc),
        )
    )
    return plan


def ids_in(cases: Iterable[EvalCase]) -> set[str]:
    """Case ids and every interaction id a case stands for (its own and the ones merged into it)."""
    ids: set[str] = set()
    for case in cases:
        ids.add(case.id)
        if case.interaction_id:
            ids.add(case.interaction_id)
        ids.update((case.model_extra or {}).get("merged_from", []))
    return ids


# ------------------------------------------------------------------------------ I/O edge


@dataclass
class ExportResult:
    candidates_path: Path
    review_path: Path
    added: list[EvalCase]
    review_added: list[EvalCase]
    skipped: int
    merged: dict[str, str]
    missing: int

    def summary(self) -> str:
        gaps = sum(1 for case in self.added if not case.answerable)
        return (
            f"{len(self.added)} new candidate(s) ({gaps} knowledge gap(s)) -> {self.candidates_path}; "
            f"{len(self.review_added)} thumbs-down to review -> {self.review_path}; "
            f"{self.skipped} already exported, {len(self.merged)} merged as near-duplicates"
            + (f", {self.missing} without a logged interaction" if self.missing else "")
        )


def rejected_path_for(candidates_path: Path) -> Path:
    """Where `evals review` records rejected ids, so the export does not offer them again."""
    return candidates_path.with_name(candidates_path.stem + ".rejected.jsonl")


async def load_interactions(store, feedback: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The interactions the feedback is about, without reading the whole log.

    Feedback follows its answer closely, so one scan from shortly before the earliest feedback
    finds nearly all of them; stragglers (a vote on an old answer) are fetched one by one.
    """
    if not feedback:
        return []
    earliest = min(row["created_at"] for row in feedback) - INTERACTION_LOOKBACK
    wanted = {row["interaction_id"] for row in feedback}
    found = [row for row in await asyncio.to_thread(store.interactions, earliest) if row["interaction_id"] in wanted]
    for interaction_id in wanted - {row["interaction_id"] for row in found}:
        row = await store.get_interaction(interaction_id)
        if row is not None:
            found.append(row)
    return found


async def export_feedback(
    store,
    embedder,
    *,
    since: datetime | None,
    candidates_path: Path,
    review_path: Path,
    frozen_paths: Sequence[Path] = (),
    threshold: float = DUPLICATE_THRESHOLD,
    low_similarity: float = LOW_SIMILARITY,
) -> ExportResult:
    """Append the new candidates and review items of the feedback since `since`; idempotent."""
    feedback = await asyncio.to_thread(store.feedback, since)
    interactions = await load_interactions(store, feedback)
    existing: list[EvalCase] = []
    for path in [candidates_path, rejected_path_for(candidates_path), rejected_path_for(review_path), *frozen_paths]:
        existing.extend(read_cases(path)[0])  # invalid lines are the reviewer's to fix
    in_review = read_cases(review_path)[0]
    plan = plan_export(interactions, feedback, ids_in(existing), ids_in(in_review), low_similarity)

    added: list[EvalCase] = []
    merged: dict[str, str] = {}
    if plan.candidates:
        known = [case for case in existing if (case.model_extra or {}).get("review") != "rejected"]
        vectors = await embedder.aencode([dedupe_text(case) for case in [*plan.candidates, *known]])
        count = len(plan.candidates)
        added, merged = merge_near_duplicates(
            plan.candidates, vectors[:count], [case.id for case in known], vectors[count:], threshold
        )
    append_cases(candidates_path, added)
    append_cases(review_path, plan.review)
    return ExportResult(
        candidates_path=candidates_path,
        review_path=review_path,
        added=added,
        review_added=plan.review,
        skipped=len(plan.skipped),
        merged=merged,
        missing=len(plan.missing),
    )


def default_candidates_path(settings: Settings) -> Path:
    """Candidates hold real (scrubbed) questions: they live in the data dir until reviewed."""
    return Path(settings.data_dir) / "evals" / "candidates.jsonl"


def default_review_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "evals" / "review.jsonl"
