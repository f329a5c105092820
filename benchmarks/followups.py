"""Follow-ups in a thread: how each way of searching a follow-up retrieves and escalates, offline.

    python benchmarks/followups.py /work/shared/datasets/anthropic-docs [--data-dir /tmp/supportbot-bench-followups]

Two domains: the sample knowledge (`examples/knowledge/` with `evals/datasets/followups-sample.jsonl`)
and anthropic-docs (its kb.jsonl with `benchmarks/conversations/followups-anthropic-docs.jsonl`). Every
conversation goes through the real `Pipeline` at default settings (offline answerer), the thread
replayed as Slack would hold it (`evals.runner.replay_thread`), once per follow-up mode:

- alone: the follow-up searched by itself;
- heuristic: the earlier rule-based rewrite (previous question's terms prepended when short/pronoun);
- concat: the earlier user turns concatenated with the follow-up;
- context: the context-aware retrieval (the pipeline's default).

Printed: hit@5 / MRR@5 of answerable follow-ups per mode, per domain, per kind, per half of the
set (ids with an odd number were the design half, even the report half), the share of answerable
follow-ups escalated and of unanswerable ones escalated (also as counts per domain and half), and the
domain's single-turn set through the same pipeline (which must not move: a question without a thread is
searched and judged as before).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_bench import offline_settings  # noqa: E402

from bot.engine.pipeline import Pipeline  # noqa: E402
from bot.engine.types import Question  # noqa: E402
from bot.settings import Settings  # noqa: E402
from evals.cases import EvalCase, load_cases  # noqa: E402
from evals.runner import replay_thread, score_case  # noqa: E402
from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from knowledge.search import Searcher  # noqa: E402

MODES = ("alone", "heuristic", "concat", "context")
K = 5


def half(case_id: str) -> str:
    """The design half (odd id numbers) or the report half (even)."""
    digits = re.sub(r"\D", "", case_id)
    return "design" if digits and int(digits) % 2 else "report"


async def build_index(settings: Settings, source: str, embedder: Embedder) -> KnowledgeIndex:
    """Indexed and self-calibrated like a user's refresh, so escalation is judged as in production."""
    from bot.engine.calibration import refresh_calibrated

    index = KnowledgeIndex.from_settings(settings, embedder)
    report = await refresh_calibrated(index, [source], settings)
    print(f"refresh {source}: {report.summary}; calibration {report.calibration}", file=sys.stderr)
    return index


async def run_mode(settings, index, mode: str, cases: list[EvalCase]) -> list[dict]:
    """One row per case (the runner's own scoring) with the case's kind and half."""
    pipeline = Pipeline(settings, Searcher.from_settings(settings, index), followup_mode=mode)
    await pipeline.warm_up()
    replies: dict = {}
    rows = []
    for case in cases:
        history = await replay_thread(pipeline, case.history, replies)
        started = time.perf_counter()
        answer = await pipeline.answer(Question(text=case.question, history=history))
        row = score_case(case, answer, K)
        row.update(
            mode=mode,
            half=half(case.id),
            retrieve_ms=answer.latency_ms.get("retrieve", 0.0),
            ms=(time.perf_counter() - started) * 1000,
            search_query=answer.search_query,
        )
        rows.append(row)
    return rows


def figures(rows: list[dict]) -> dict:
    scored = [row for row in rows if row["retrieval"]]
    answerable = [row for row in rows if row["answerable"]]
    unanswerable = [row for row in rows if not row["answerable"]]

    def avg(values):
        return sum(values) / len(values) if values else float("nan")

    return {
        "n": len(scored),
        "hit": avg([row["retrieval"]["hit@k"] for row in scored]),
        "mrr": avg([row["retrieval"]["mrr@k"] for row in scored]),
        "esc_answerable": avg([row["escalated"] for row in answerable]),
        "esc_unanswerable": avg([row["escalated"] for row in unanswerable]),
        "escalated": escalated_counts(rows),
        "retrieve_ms": avg(sorted(row["retrieve_ms"] for row in rows)[len(rows) // 2 : len(rows) // 2 + 1]),
    }


def escalated_counts(rows: list[dict]) -> str:
    """'escalated/n' of the answerable rows and of the unanswerable ones, as two table cells."""
    answerable = [row["escalated"] for row in rows if row["answerable"]]
    unanswerable = [row["escalated"] for row in rows if not row["answerable"]]
    return f"{sum(answerable)}/{len(answerable)} | {sum(unanswerable)}/{len(unanswerable)}"


def fmt(value: float) -> str:
    return "–" if value != value else f"{value:.3f}"


def table(title: str, groups: dict[str, dict[str, list[dict]]]) -> None:
    """One row per group, hit@5 and MRR@5 per mode."""
    MODES = [mode for mode in globals()["MODES"] if any(by_mode.get(mode) for by_mode in groups.values())]
    print(f"\n### {title}\n")
    print("| group | n | " + " | ".join(f"{m} hit@5 | {m} MRR@5" for m in MODES) + " |")
    print("| --- | --- | " + " | ".join("--- | ---" for _ in MODES) + " |")
    for name, by_mode in groups.items():
        stats = {mode: figures(by_mode[mode]) for mode in MODES}
        print(
            f"| {name} | {stats[MODES[0]]['n']} | "
            + " | ".join(f"{fmt(stats[m]['hit'])} | {fmt(stats[m]['mrr'])}" for m in MODES)
            + " |"
        )


async def main_async(args) -> None:
    embedder = Embedder()
    domains = {
        "sample": (
            str(ROOT / "examples" / "knowledge"),
            ROOT / "evals" / "datasets" / "followups-sample.jsonl",
            ROOT / "evals" / "datasets" / "sample.jsonl",
        ),
    }
    if args.dataset:
        domains["anthropic-docs"] = (
            str(args.dataset / "kb.jsonl"),
            ROOT / "benchmarks" / "conversations" / "followups-anthropic-docs.jsonl",
            args.dataset / "cases.jsonl",
        )
    all_rows: list[dict] = []
    single: dict[str, dict[str, dict]] = {}
    single_rows: list[dict] = []
    for domain, (source, followups, singles) in domains.items():
        settings = offline_settings(args.data_dir / domain, source)
        index = await build_index(settings, source, embedder)
        cases = load_cases(followups)
        for mode in args.modes:
            for row in await run_mode(settings, index, mode, cases):
                all_rows.append({**row, "domain": domain})
        single_cases = [
            EvalCase.model_validate(json.loads(line)) for line in Path(singles).read_text().splitlines() if line.strip()
        ]
        single[domain] = {}
        for mode in ("alone", "context") if not args.skip_single else ():
            rows = await run_mode(settings, index, mode, single_cases)
            single[domain][mode] = figures(rows)
            single_rows.extend({**row, "domain": domain, "set": "single-turn"} for row in rows)

    def grouped(select) -> dict[str, list[dict]]:
        return {mode: [row for row in all_rows if row["mode"] == mode and select(row)] for mode in MODES}

    followup = lambda row: True  # noqa: E731
    not_shift = lambda row: row["followup_kind"] != "topic_shift"  # noqa: E731
    table(
        "Answerable follow-ups, all domains",
        {
            "all follow-ups": grouped(followup),
            "all but topic shifts": grouped(not_shift),
            **{f"domain {d}": grouped(lambda row, d=d: row["domain"] == d) for d in domains},
            **{f"half {h}": grouped(lambda row, h=h: row["half"] == h) for h in ("design", "report")},
        },
    )
    kinds = sorted({row["followup_kind"] for row in all_rows if row["retrieval"]})
    table("Per kind", {kind: grouped(lambda row, kind=kind: row["followup_kind"] == kind) for kind in kinds})
    table(
        "Per domain and kind",
        {
            f"{d} / {kind}": grouped(lambda row, d=d, kind=kind: row["domain"] == d and row["followup_kind"] == kind)
            for d in domains
            for kind in kinds
        },
    )

    print("\n### Escalation (offline answerer, default thresholds)\n")
    print("| mode | answerable follow-ups escalated | unanswerable follow-ups escalated | retrieve p50 ms |")
    print("| --- | --- | --- | --- |")
    for mode in args.modes:
        stats = figures([row for row in all_rows if row["mode"] == mode])
        print(
            f"| {mode} | {fmt(stats['esc_answerable'])} | {fmt(stats['esc_unanswerable'])} | {stats['retrieve_ms']:.1f} |"
        )

    print("\n### Escalation counts per domain and half (answerable escalated/n | unanswerable escalated/n)\n")
    print("| group | " + " | ".join(f"{m} answerable | {m} unanswerable" for m in args.modes) + " |")
    print("| --- | " + " | ".join("--- | ---" for _ in args.modes) + " |")
    groups = {
        "all": lambda row: True,
        **{f"domain {d}": lambda row, d=d: row["domain"] == d for d in domains},
        **{f"half {h}": lambda row, h=h: row["half"] == h for h in ("design", "report")},
    }
    for name, select in groups.items():
        counts = [escalated_counts([r for r in all_rows if r["mode"] == m and select(r)]) for m in args.modes]
        print(f"| {name} | " + " | ".join(counts) + " |")

    print("\n### Single-turn sets through the same pipeline (no thread: must not move)\n")
    print(
        "| domain | n | alone hit@5 | alone MRR@5 | context hit@5 | context MRR@5 "
        "| alone escalated: answerable | unanswerable | context escalated: answerable | unanswerable |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for domain, stats in single.items() if not args.skip_single else ():
        print(
            f"| {domain} | {stats['alone']['n']} | {fmt(stats['alone']['hit'])} | {fmt(stats['alone']['mrr'])} | "
            f"{fmt(stats['context']['hit'])} | {fmt(stats['context']['mrr'])} | "
            f"{stats['alone']['escalated']} | {stats['context']['escalated']} |"
        )
    if args.rows:
        args.rows.write_text("".join(json.dumps(row, default=str) + "\n" for row in [*all_rows, *single_rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, nargs="?", help="anthropic-docs folder (kb.jsonl, cases.jsonl)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-followups"))
    parser.add_argument("--rows", type=Path, help="write every per-case row (JSONL, single-turn ones marked) here")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--skip-single", action="store_true", help="leave out the single-turn sets")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
