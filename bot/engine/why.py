"""Why the bot did what it did with one question: `supportbot why ID` and `/kb why <message link>`.

An admin wondering why a question was escalated (or answered) should not have to read logs.
Everything needed was written to the interaction log when the question was answered (the query
retrieval saw, each chunk's scores and ranks, every confidence signal, the thresholds in force,
the generator, tokens and latency); the calibration is read from the index version it was made
on. `explain` turns one logged row into an `Explanation` (pure); `render_terminal` prints it, and
`bot/slack/why.py` renders the same data as Block Kit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

if TYPE_CHECKING:
    from knowledge.storage import Sidecar

# signals shown in their own lines, not in the signal table
NOT_SIGNALS = ("answer_threshold", "caveat_threshold", "calibration", "raw_score")


@dataclass(frozen=True)
class ChunkLine:
    rank: int
    doc_id: str
    title: str
    heading: str
    url: str
    score: float
    vector_similarity: float | None
    fts_score: float | None
    vector_rank: int | None
    fts_rank: int | None
    cited: bool


@dataclass(frozen=True)
class Explanation:
    interaction_id: str
    created_at: str
    asker: str | None
    channel: str | None
    question: str
    search_query: str
    rewritten: bool  # retrieval searched something other than the question itself
    history_turns: int
    chunks: list[ChunkLine]
    signals: dict[str, Any]
    raw_score: float | None
    confidence: float
    decision: str
    answer_threshold: float | None
    caveat_threshold: float | None
    calibration_version: int | None
    calibration: dict[str, Any] | None  # the summary of that version's calibration, when it still exists
    reasons: list[str]
    generator: str
    model: str | None
    fallback_reason: str | None
    index_version: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cost_usd: float
    latency_ms: dict[str, float] = field(default_factory=dict)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def explain(row: dict[str, Any], calibration: dict[str, Any] | None = None) -> Explanation:
    """One logged interaction (JSON fields decoded) and the summary of its calibration -> the explanation."""
    signals = dict(row.get("signals") or {})
    cited = {citation.get("chunk_id") for citation in row.get("citations") or []} | {
        citation.get("doc_id") for citation in row.get("citations") or []
    }
    chunks = [
        ChunkLine(
            rank=rank,
            doc_id=chunk.get("doc_id", ""),
            title=chunk.get("title", ""),
            heading=chunk.get("heading", ""),
            url=chunk.get("url", ""),
            score=float(chunk.get("score") or 0.0),
            vector_similarity=_number(chunk.get("vector_similarity")),
            fts_score=_number(chunk.get("fts_score")),
            vector_rank=chunk.get("vector_rank"),
            fts_rank=chunk.get("fts_rank"),
            cited=chunk.get("chunk_id") in cited or chunk.get("doc_id") in cited,
        )
        for rank, chunk in enumerate(row.get("retrieved") or [], start=1)
    ]
    question = row.get("question") or ""
    query = row.get("search_query") or ""
    calibration_version = signals.get("calibration")
    created = row.get("created_at")
    return Explanation(
        interaction_id=row["interaction_id"],
        created_at=created.isoformat(timespec="seconds") if isinstance(created, datetime) else str(created or ""),
        asker=row.get("asker"),
        channel=row.get("channel"),
        question=question,
        search_query=query,
        rewritten=bool(query) and query.strip() != question.strip(),
        history_turns=len(row.get("history") or []),
        chunks=chunks,
        signals={name: value for name, value in sorted(signals.items()) if name not in NOT_SIGNALS},
        raw_score=_number(signals.get("raw_score")),
        confidence=float(row.get("confidence") or 0.0),
        decision=row.get("decision") or "",
        answer_threshold=_number(signals.get("answer_threshold")),
        caveat_threshold=_number(signals.get("caveat_threshold")),
        calibration_version=int(calibration_version) if isinstance(calibration_version, int) else None,
        calibration=calibration if isinstance(calibration_version, int) else None,
        reasons=list(row.get("reasons") or []),
        generator=row.get("generator") or "",
        model=row.get("model"),
        fallback_reason=row.get("fallback_reason"),
        index_version=int(row.get("index_version") or 0),
        input_tokens=int(row.get("input_tokens") or 0),
        output_tokens=int(row.get("output_tokens") or 0),
        cache_read_input_tokens=int(row.get("cache_read_input_tokens") or 0),
        cost_usd=float(row.get("cost_usd") or 0.0),
        latency_ms={name: float(ms) for name, ms in (row.get("latency_ms") or {}).items()},
    )


# ------------------------------------------------------------------------------ shared wording


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def decision_line(why: Explanation) -> str:
    """The decision against the lines it was judged by."""
    lines = []
    if why.caveat_threshold is not None:
        lines.append(f"escalate below {why.caveat_threshold:.2f}")
    if why.answer_threshold is not None:
        lines.append(f"answer plainly from {why.answer_threshold:.2f}")
    raw = f" (raw {why.raw_score:.3f})" if why.raw_score is not None else ""
    return f"{why.decision}: confidence {why.confidence:.3f}{raw}; " + (
        ", ".join(lines) if lines else "thresholds not recorded (logged before they were)"
    )


def calibration_line(why: Explanation) -> str:
    if why.calibration_version is None:
        return "none: fixed thresholds on the raw score"
    summary = why.calibration
    if not summary:
        return f"index v{why.calibration_version} (its calibration file is gone)"
    auroc = summary.get("separation_auroc")
    return (
        f"index v{summary.get('index_version')}: {summary.get('pairs')} probe pairs, separation AUROC "
        f"{format_value(auroc)}, escalates below raw {format_value(summary.get('escalate_below_raw'))}, "
        f"answers from raw {format_value(summary.get('answer_from_raw'))}"
    )


def chunk_scores(chunk: ChunkLine) -> str:
    parts = [f"score {chunk.score:.3f}"]
    if chunk.vector_similarity is not None:
        parts.append(f"cosine {chunk.vector_similarity:.3f} (#{chunk.vector_rank})")
    if chunk.fts_score is not None:
        parts.append(f"bm25 {chunk.fts_score:.2f} (#{chunk.fts_rank})")
    return ", ".join(parts)


def usage_line(why: Explanation) -> str:
    model = f" ({why.model})" if why.model else ""
    fallback = f", fell back: {why.fallback_reason}" if why.fallback_reason else ""
    cached = f", {why.cache_read_input_tokens} cached" if why.cache_read_input_tokens else ""
    return (
        f"{why.generator}{model}{fallback}; tokens {why.input_tokens} in / {why.output_tokens} out{cached}, "
        f"${why.cost_usd:.4f}"
    )


def latency_line(why: Explanation) -> str:
    stages = [f"{name} {ms:.0f}" for name, ms in why.latency_ms.items() if name != "total"]
    return f"{why.latency_ms.get('total', 0.0):.0f} ms" + (f" ({', '.join(stages)})" if stages else "")


def render_terminal(why: Explanation) -> str:
    """The explanation as plain text for `supportbot why`."""
    lines = [
        f"interaction {why.interaction_id}  {why.created_at}  asker {why.asker or '-'}  channel {why.channel or '-'}",
        f"question:  {why.question}",
        f"query:     {why.search_query or '(none: not searched)'}{'  (rewritten)' if why.rewritten else ''}"
        + (f"  [{why.history_turns} earlier turns]" if why.history_turns else ""),
        f"index:     v{why.index_version}",
        "",
        "retrieved:",
    ]
    for chunk in why.chunks:
        where = f" > {chunk.heading}" if chunk.heading else ""
        lines.append(f"  {chunk.rank}. {'*' if chunk.cited else ' '} {chunk.title}{where}  [{chunk.doc_id}]")
        lines.append(f"       {chunk_scores(chunk)}")
    if not why.chunks:
        lines.append("  (nothing)")
    lines += ["", "signals:"]
    lines += [f"  {name:<24} {format_value(value)}" for name, value in why.signals.items()]
    lines += [
        "",
        f"calibration: {calibration_line(why)}",
        f"decision:    {decision_line(why)}",
    ]
    lines += [f"  - {reason}" for reason in why.reasons]
    lines += ["", f"generator:   {usage_line(why)}", f"latency:     {latency_line(why)}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ finding the interaction

PERMALINK = re.compile(r"/archives/(?P<channel>[A-Z0-9]+)/p(?P<digits>\d{7,})")


def parse_message_link(link: str) -> tuple[str, str, str | None]:
    """A Slack message link -> (channel, message ts, thread ts or None); ValueError for anything else.
    `https://x.slack.com/archives/C123/p1700000000123456?thread_ts=1700000000.000100&cid=C123`."""
    text = link.strip().strip("<>").split("|", 1)[0]
    found = PERMALINK.search(urlparse(text).path or "")
    if not found:
        raise ValueError(f"not a Slack message link: {link!r}")
    digits = found["digits"]
    thread = parse_qs(urlparse(text).query).get("thread_ts", [None])[0]
    return found["channel"], f"{digits[:-6]}.{digits[-6:]}", thread


def match_link(rows: list[dict[str, Any]], message_ts: str, thread_ts: str | None) -> dict[str, Any] | None:
    """The interaction a link points at: the question message itself, or (a link to a reply in a
    thread) the last question asked in that thread at or before the reply."""
    for row in rows:
        if (row.get("slack") or {}).get("message_ts") == message_ts:
            return row
    thread = thread_ts or message_ts
    earlier = [
        row
        for row in rows
        if row.get("thread_ts") == thread
        and float((row.get("slack") or {}).get("message_ts") or 0) <= float(message_ts)
    ]
    return max(earlier, key=lambda row: float((row.get("slack") or {}).get("message_ts") or 0)) if earlier else None


def calibration_of(sidecar: Sidecar, row: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of the calibration an interaction was judged with (the I/O edge of `explain`)."""
    from bot.engine import calibration

    version = (row.get("signals") or {}).get("calibration")
    if not isinstance(version, int):
        return None
    found = calibration.load(sidecar, version)
    return found.summary() if found is not None else None
