"""The engine's vocabulary: a Question in, an Answer out. Pydantic so every log line round-trips.

Nothing here knows about Slack; `bot/slack` renders these, `bot/store.py` writes them down and
`evals` scores them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Turn(BaseModel):
    """One earlier message of the conversation (thread history)."""

    role: str  # "user" or "assistant"
    text: str
    sources: list[str] = Field(default_factory=list)  # urls an assistant turn cited: a prior for follow-ups

    @model_serializer(mode="wrap")
    def _without_empty_sources(self, handler: SerializerFunctionWrapHandler) -> Any:
        """A turn that cited nothing dumps as before ({role, text}): logs and tests keep their shape."""
        data = handler(self)
        if isinstance(data, dict) and not data.get("sources"):
            data.pop("sources", None)
        return data


class Question(BaseModel):
    text: str
    history: list[Turn] = Field(default_factory=list)
    asker: str | None = None  # Slack user id, or a CLI user name
    channel: str | None = None
    thread_ts: str | None = None
    team_id: str | None = None
    interaction_id: str = Field(default_factory=new_id)
    received_at: datetime = Field(default_factory=utc_now)


class RetrievedChunk(BaseModel):
    """A chunk the retriever returned, with the raw signals the confidence judge reads."""

    chunk_id: str
    doc_id: str
    title: str
    url: str
    doc_url: str = ""  # the document's url without the section anchor
    heading: str = ""
    text: str
    score: float  # fused retrieval score in [0, 1]
    vector_similarity: float | None = None
    fts_score: float | None = None
    vector_rank: int | None = None
    fts_rank: int | None = None
    source: str = ""  # the index source the chunk came from (per-channel knowledge checks it)
    updated_at: str | None = None  # the document's last-updated time, when its source says


class Citation(BaseModel):
    """A span of a source that supports part of the answer; `number` is the marker shown ([1])."""

    number: int
    doc_id: str
    chunk_id: str | None = None
    url: str
    title: str
    cited_text: str
    doc_url: str = ""  # the document's url without the section anchor
    updated_at: str | None = None  # the source's last-updated time: shown, and flagged when old
    stale: bool = False  # older than SUPPORTBOT_STALE_AFTER_DAYS when the answer was made


class Decision(str, Enum):
    ANSWER = "answer"
    ANSWER_WITH_CAVEAT = "answer_with_caveat"
    ESCALATE = "escalate"
    CLARIFY = "clarify"  # no question in the message (empty, emoji only): not an answer, not escalated


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields})


class Answer(BaseModel):
    interaction_id: str
    question: str
    text: str  # Markdown with inline markers [1], [2] that point into `citations`
    citations: list[Citation] = Field(default_factory=list)
    retrieved: list[RetrievedChunk] = Field(default_factory=list)
    confidence: float = 0.0
    decision: Decision = Decision.ESCALATE
    reasons: list[str] = Field(default_factory=list)  # human-readable, shown to the escalation team
    generator: str = "extractive"  # "claude", "extractive", "extractive-fallback", "none"
    model: str | None = None
    fallback_reason: str | None = None  # why the LLM answer was replaced, when it was
    index_version: int = 0
    search_query: str = ""  # the (possibly rewritten) query used for retrieval
    latency_ms: dict[str, float] = Field(default_factory=dict)  # per stage and "total"
    usage: Usage = Field(default_factory=Usage)
    signals: dict[str, Any] = Field(default_factory=dict)  # confidence inputs, for evals and calibration
    created_at: datetime = Field(default_factory=utc_now)

    @property
    def escalated(self) -> bool:
        return self.decision is Decision.ESCALATE
