"""Run an eval dataset through the real answer pipeline and score it (`supportbot evals run`).

Every case goes through `Pipeline.answer`, exactly as a Slack question would, so the scores
describe the bot users get: retrieval from `answer.retrieved`, faithfulness from its citations,
correctness against the reference, escalation against `answerable`, latency and cost from the
answer's own accounting. Scoring is pure (`score_case`, `summarise`); the pipeline, the index
and the embedder are the I/O edge (`run_eval`, `prepare_kb`).

The report shape is the contract in ARCHITECTURE.md; metric keys are literal ("hit@k") and
the actual k sits beside them, so reports with different k stay comparable key by key.

A case with a `history` is a follow-up: the pipeline gets the thread as Slack would give it
(`replay_thread`: a user turn the case gives no assistant reply for is answered by the bot
first, so the follow-up sees the bot's real earlier answer and the sources it cited). The
`followups` section scores single-turn and follow-up cases side by side, and per kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evals.cases import EvalCase, HistoryTurn
from evals.metrics import (
    auroc,
    citation_supported,
    cosine,
    escalation_scores,
    expected_calibration_error,
    faithfulness,
    gold_match,
    mean_scores,
    normalise_source,
    percentile,
    reliability_bins,
    retrieval_scores,
    source_keys,
    strip_markers,
    threshold_advice,
    token_f1,
    unique_documents,
)
from evals.topics import topic_of_document
from knowledge.learned import is_learned

REPORT_VERSION = 1
if TYPE_CHECKING:
    from bot.settings import Settings
    from evals.judge import Grade

Judge = Callable[[str, str, str], Awaitable["Grade"]]  # (question, reference, answer) -> evals.judge.Grade


# ------------------------------------------------------------------------------ scoring (pure)


def contract_keys(scores: dict[str, float], k: int) -> dict[str, float]:
    """`hit@5` -> `hit@k`: the contract's literal keys."""
    return {name.replace(f"@{k}", "@k"): value for name, value in scores.items()}


def document_ranking(answer) -> list[dict[str, Any]]:
    """The answer's retrieved chunks collapsed to documents, best first, with their match keys."""
    chunks = {chunk.doc_id: chunk for chunk in reversed(answer.retrieved)}  # first chunk of each doc wins
    ranking = unique_documents(
        [[chunk.doc_id, *source_keys(chunk.url, getattr(chunk, "doc_url", ""))] for chunk in answer.retrieved]
    )
    return [
        {
            "doc_id": keys[0],
            "url": chunks[keys[0]].url,
            "title": chunks[keys[0]].title,
            "score": round(float(chunks[keys[0]].score), 4),
            "keys": list(keys),
        }
        for keys in ranking
    ]


def verify_citations(answer) -> list[bool]:
    """Per citation: does its cited text occur in the chunk (or, without a chunk id, the document) it cites?"""
    by_chunk = {chunk.chunk_id: chunk.text for chunk in answer.retrieved}
    by_doc: dict[str, list[str]] = {}
    for chunk in answer.retrieved:
        by_doc.setdefault(chunk.doc_id, []).append(chunk.text)
    return [
        any(
            citation_supported(citation.cited_text, text)
            for text in (
                [by_chunk[citation.chunk_id]] if citation.chunk_id in by_chunk else by_doc.get(citation.doc_id, [])
            )
        )
        for citation in answer.citations
    ]


def score_case(case: EvalCase, answer, k: int) -> dict[str, Any]:
    """One case's row: what was asked, what the bot did, and its per-case scores."""
    documents = document_ranking(answer)
    retrieval = retrieval_scores([doc["keys"] for doc in documents], case.gold_sources, k) if case.gold_sources else {}
    gold = {normalise_source(source) for source in case.gold_sources}
    checks = verify_citations(answer)
    verified: dict[int, list[str]] = {}
    for citation, ok in zip(answer.citations, checks):
        if ok:
            verified.setdefault(citation.number, []).append(citation.cited_text)
    escalated = answer.decision.value == "escalate"
    answered = not escalated
    top = documents[0] if documents else None
    similarities = [c.vector_similarity for c in answer.retrieved if c.vector_similarity is not None]
    return {
        "id": case.id,
        "question": case.question,
        "history": [turn.model_dump(exclude_defaults=True) for turn in case.history],
        "followup_kind": case.followup_kind if case.is_followup else None,
        "answerable": case.answerable,
        "topic": case.topic or (topic_of_document(top["doc_id"], top["url"], top["title"]) if top else "other"),
        "reference_answer": case.reference_answer,
        "gold_sources": case.gold_sources,
        "answer": answer.text,
        "decision": answer.decision.value,
        "escalated": escalated,
        "confidence": round(float(answer.confidence), 4),
        "reasons": list(answer.reasons),
        "generator": answer.generator,
        "citations": [
            {"number": c.number, "doc_id": c.doc_id, "url": c.url, "title": c.title, "supported": ok}
            for c, ok in zip(answer.citations, checks)
        ],
        "retrieved": [
            {key: doc[key] for key in ("doc_id", "url", "title", "score")}
            | {"gold": gold_match(doc["keys"], gold) is not None}
            for doc in documents[:k]
        ],
        "top_similarity": round(max(similarities), 4) if similarities else None,
        "from_learned": answered and any(is_learned(citation.doc_id) for citation in answer.citations),
        "retrieval": contract_keys(retrieval, k),
        "faithfulness": faithfulness(answer.text, verified) if answered else None,
        "token_f1": round(token_f1(strip_markers(answer.text), case.reference_answer), 4)
        if case.answerable and case.reference_answer and answered
        else None,
        "latency_ms": {name: round(float(ms), 2) for name, ms in answer.latency_ms.items()},
        "usage": answer.usage.model_dump(),
    }


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def mean(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return round(sum(present) / len(present), 4) if present else None


def learned_share(rows: Sequence[dict[str, Any]]) -> float | None:
    """Of the answered cases, the share that cited a learned answer (`knowledge.learned`)."""
    answered = [row for row in rows if not row["escalated"]]
    return round(sum(1 for row in answered if row.get("from_learned")) / len(answered), 4) if answered else None


def summarise(rows: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """The headline metrics of a run (contract keys plus extras) from its per-case rows."""
    retrieval = mean_scores(row["retrieval"] for row in rows if row["retrieval"])
    confidences = [row["confidence"] for row in rows]
    answerable = [row["answerable"] for row in rows]
    escalated = [row["escalated"] for row in rows]
    escalation = escalation_scores(escalated, answerable) if rows else {}
    bins = reliability_bins(confidences, answerable)
    totals = [row["latency_ms"].get("total", 0.0) for row in rows]
    stages = sorted({stage for row in rows for stage in row["latency_ms"] if stage != "total"})
    usage = {
        name: sum(row["usage"].get(name, 0) for row in rows)
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }
    cost = sum(row["usage"].get("cost_usd", 0.0) for row in rows)
    graded = [row for row in rows if "judge_usage" in row]
    judge = {name: sum(row["judge_usage"].get(name, 0) for row in graded) for name in ("input_tokens", "output_tokens")}
    judge.update(
        cost_usd=round(sum(row["judge_usage"].get("cost_usd", 0.0) for row in graded), 6),
        calls=len(graded),
        failed=sum(1 for row in graded if row.get("judge_error")),
    )
    return {
        "retrieval": {name: retrieval.get(name) for name in ("hit@k", "mrr@k", "recall@k", "ndcg@k")},
        "escalation": {
            "auroc": rounded(auroc(confidences, answerable)),
            "precision": escalation.get("precision"),
            "recall": escalation.get("recall"),
            "escalation_rate": escalation.get("escalation_rate"),
            "answered_when_answerable": escalation.get("answered_when_answerable"),
            "calibration_error": expected_calibration_error(bins),
            "unanswerable_cases": sum(1 for a in answerable if not a),
        },
        "answer": {
            "faithfulness": mean([row["faithfulness"] for row in rows]),
            "correctness": mean([row["token_f1"] for row in rows]),
            "correctness_metric": "token_f1",
            "correctness_cosine": mean([row.get("cosine") for row in rows]),
            "correctness_judge": mean([row.get("judge") for row in rows]),
            "answered": sum(1 for e in escalated if not e),
            "learned_share": learned_share(rows),
        },
        "latency_ms": {
            "p50": round(percentile(totals, 50), 1),
            "p95": round(percentile(totals, 95), 1),
            "mean": round(sum(totals) / len(totals), 1) if totals else 0.0,
            "stages_p50": {
                stage: round(percentile([row["latency_ms"].get(stage, 0.0) for row in rows], 50), 1) for stage in stages
            },
        },
        "usage": {
            **usage,
            "cost_usd": round(cost, 6),
            "cost_per_case_usd": round(cost / len(rows), 6) if rows else 0.0,
            "judge": judge,
        },
        "calibration": {"bins": bins},
        "followups": followup_summary(rows),
        "cases": len(rows),
        "k": k,
    }


def group_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Retrieval and escalation of a group of rows (the follow-up comparison's one column)."""
    retrieval = mean_scores(row["retrieval"] for row in rows if row["retrieval"])
    escalation = (
        escalation_scores([row["escalated"] for row in rows], [row["answerable"] for row in rows]) if rows else {}
    )
    return {
        "cases": len(rows),
        "hit@k": retrieval.get("hit@k"),
        "mrr@k": retrieval.get("mrr@k"),
        "recall@k": retrieval.get("recall@k"),
        "escalation_rate": escalation.get("escalation_rate"),
        "answered_when_answerable": escalation.get("answered_when_answerable")
        if any(row["answerable"] for row in rows)
        else None,
        "escalated_when_unanswerable": escalation.get("recall"),
        "correctness": mean([row["token_f1"] for row in rows]),
    }


def followup_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Single-turn and follow-up cases side by side, and follow-ups per kind; None without follow-ups."""
    followups = [row for row in rows if row.get("history") and any(t.get("role") == "user" for t in row["history"])]
    if not followups:
        return None
    single = [row for row in rows if row not in followups]
    kinds = sorted({row.get("followup_kind") or "unlabelled" for row in followups})
    return {
        "single_turn": group_summary(single),
        "followup": group_summary(followups),
        "by_kind": {
            kind: group_summary([row for row in followups if (row.get("followup_kind") or "unlabelled") == kind])
            for kind in kinds
        },
    }


# ------------------------------------------------------------------------------ I/O edge


def git_commit(root: Path) -> str | None:
    """HEAD of the checkout (with `-dirty` when it has changes), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def kb_data_dir(settings: Settings, kb: str) -> Path:
    """A cached data dir per knowledge source (and embedding/chunking setup) under the data dir.

    Keyed by the source's stable name, not its content: a changed file reuses the same index
    and only its changed documents are re-embedded by the incremental refresh.
    """
    from knowledge.sources import source_key

    parts = [
        source_key(kb),
        settings.embedding_model,
        str(settings.chunk_max_tokens),
        str(settings.chunk_overlap_tokens),
    ]
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:16]
    return Path(settings.data_dir) / "eval-kb" / digest


async def prepare_kb(settings: Settings, kb: str, embedder, *, progress: bool | None = None):
    """Settings whose data dir holds an up-to-date index of `kb` (built once, refreshed after)."""
    from bot.engine.calibration import refresh_calibrated
    from knowledge.index import KnowledgeIndex

    # a scratch index on local disk, even when the served one is on object storage
    kb_settings = settings.model_copy(update={"data_dir": kb_data_dir(settings, kb), "sources": [kb], "index_uri": ""})
    index = KnowledgeIndex.from_settings(kb_settings, embedder)
    report = await refresh_calibrated(index, [kb], kb_settings, show_progress=progress)
    if report.failures and not index.exists():
        raise RuntimeError(f"cannot index {kb}: {'; '.join(report.failures[:5])}")
    print(f"knowledge {kb}: {report.summary}", file=sys.stderr)
    return kb_settings, index


def fixed_mode_searcher(settings: Settings, index, mode: str):
    """The project's Searcher, pinned to one retrieval mode (the pipeline asks for its default)."""
    from knowledge.search import Searcher

    class FixedModeSearcher(Searcher):
        def search(self, query, k=5, **options):
            return super().search(query, k, **{**options, "mode": mode})

    return FixedModeSearcher.from_settings(settings, index)


async def run_eval(
    settings: Settings,
    cases: Sequence[EvalCase],
    *,
    k: int = 5,
    mode: str = "hybrid",
    kb: str | None = None,
    embedder=None,
    pipeline=None,
    judge: Judge | None = None,
    progress: bool = True,
    dataset: str | Path | None = None,
    cosine_correctness: bool = True,
    concurrency: int = 1,
) -> dict[str, Any]:
    """Answer every case with the real pipeline and return the full report (contract + rows).
    `cosine_correctness=False` skips embedding answers and references (the refresh gate's choice:
    it is half the run's time, and token F1 still guards correctness). `concurrency` answers that
    many cases at once: faster, but each case's latency then includes waiting for the others."""
    from tqdm import tqdm

    from bot.engine.pipeline import Pipeline
    from bot.engine.types import Question, Turn
    from knowledge.embeddings import Embedder
    from knowledge.index import IndexNotReady, KnowledgeIndex

    embedder = embedder or Embedder.from_settings(settings)
    if kb:
        settings, index = await prepare_kb(settings, kb, embedder)
    else:
        index = KnowledgeIndex.from_settings(settings, embedder)
        if not index.exists():  # the pipeline would escalate every question instead of failing
            raise IndexNotReady(f"no knowledge index in {index.uri}: run `supportbot refresh` first")
    settings = settings.model_copy(update={"answer_k": k, "search_k": k})
    owned = pipeline is None  # a pipeline passed in (the bot's own) stays open
    if owned:
        searcher = fixed_mode_searcher(settings, index, mode)
        pipeline = Pipeline.from_settings(settings, index=index, searcher=searcher, embedder=embedder)

    if hasattr(pipeline, "warm_up"):
        await pipeline.warm_up()  # load models and statistics outside the timings
    started = time.perf_counter()
    replies: dict[tuple, Turn] = {}
    slots = asyncio.Semaphore(max(1, concurrency))

    async def run_case(case: EvalCase, bar) -> dict[str, Any]:
        async with slots:
            history = await replay_thread(pipeline, case.history, replies)
            answer = await pipeline.answer(Question(text=case.question, history=history))
            row = score_case(case, answer, k)
            if judge and case.answerable and case.reference_answer and not row["escalated"]:
                grade = await judge(case.question, case.reference_answer, answer.text)
                row["judge"], row["judge_usage"] = grade.score, grade.usage.model_dump()
                if grade.error:
                    row["judge_error"] = grade.error
            bar.update(1)
            return row

    with tqdm(total=len(cases), desc="eval", unit="case", disable=not progress, file=sys.stderr) as bar:
        rows: list[dict[str, Any]] = list(await asyncio.gather(*(run_case(case, bar) for case in cases)))
    if owned and hasattr(pipeline, "aclose"):
        await pipeline.aclose()
    if cosine_correctness:
        await add_cosine_correctness(rows, embedder)

    report = summarise(rows, k)
    report["threshold_advice"] = threshold_advice(
        [row["confidence"] for row in rows], [row["answerable"] for row in rows], settings.caveat_threshold
    )
    generators = Counter(row["generator"] for row in rows if row["generator"] != "none")
    generator = generators.most_common(1)[0][0] if generators else None
    report["config"] = {
        "dataset": str(dataset) if dataset else None,
        "dataset_sha256": file_sha256(Path(dataset)) if dataset and Path(dataset).is_file() else None,
        "kb": kb,
        "k": k,
        "mode": mode,
        "generator": generator,
        "model": settings.anthropic_model if generator == "claude" else None,
        "judge": bool(judge),
        "answer_threshold": settings.answer_threshold,
        "caveat_threshold": settings.caveat_threshold,
        "data_dir": str(settings.data_dir),
    }
    report["self_calibration"] = await calibration_in_force(pipeline, index)
    report["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["git_commit"] = git_commit(Path(__file__).resolve().parents[1])
    report["seconds"] = round(time.perf_counter() - started, 2)
    report["version"] = REPORT_VERSION
    report["per_case"] = rows
    return report


async def calibration_in_force(pipeline, index) -> dict[str, Any] | None:
    """The summary of the self-calibration the answers were judged with (None: raw score, fixed thresholds)."""
    if not hasattr(pipeline, "calibration"):
        return None
    found = await pipeline.calibration(index.version)
    return found.summary() if found is not None else None


def assistant_turn(answer):
    """The bot's reply as the thread holds it: its text, and the pages it cited when it answered."""
    from bot.engine.types import Turn

    answered = answer.decision.value in ("answer", "answer_with_caveat")
    sources = list(dict.fromkeys(citation.url for citation in answer.citations if citation.url)) if answered else []
    return Turn(role="assistant", text=answer.text, sources=sources)


async def replay_thread(pipeline, history: Sequence[HistoryTurn], replies: dict[tuple, Any]) -> list:
    """The case's thread as Slack would hold it when the follow-up arrives.

    A user turn with no assistant turn after it is answered by the pipeline (with the thread so
    far), so the follow-up sees the bot's real earlier answer and its cited sources. `replies`
    caches those answers per thread prefix: conversations sharing an opening are answered once.
    """
    from bot.engine.types import Question, Turn

    thread: list[Turn] = []
    for position, turn in enumerate(history):
        thread.append(Turn(role=turn.role, text=turn.text, sources=list(turn.sources)))
        replied = position + 1 < len(history) and history[position + 1].role == "assistant"
        if turn.role != "user" or replied:
            continue
        key = tuple((t.role, t.text) for t in thread)
        if key not in replies:
            replies[key] = assistant_turn(await pipeline.answer(Question(text=turn.text, history=thread[:-1])))
        thread.append(replies[key])
    return thread


async def add_cosine_correctness(rows: list[dict[str, Any]], embedder) -> None:
    """Embedding cosine similarity of answer and reference, for the rows that have a token F1."""
    scored = [row for row in rows if row["token_f1"] is not None]
    if not scored:
        return
    texts = [strip_markers(row["answer"]) for row in scored] + [row["reference_answer"] for row in scored]
    vectors = await embedder.aencode(texts)
    for position, row in enumerate(scored):
        row["cosine"] = round(cosine(vectors[position], vectors[len(scored) + position]), 4)
