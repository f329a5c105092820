"""`python -m bot.demo --data-dir data` (= `make demo`): the whole engine in one minute, no API key needed.

Indexes the sample help center (examples/knowledge), answers three real questions with their
sources, then asks one the knowledge cannot answer and shows the escalation and why. With
ANTHROPIC_API_KEY set, Claude writes the answers; without it, the extractive answerer quotes the
sources. Nothing leaves the machine unless a key is set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_KNOWLEDGE = ROOT / "examples" / "knowledge"

QUESTIONS = [
    "customer cant see ACH option??",
    "How long after a payment can we still refund it to the customer's card?",
    "how many times will tallybook retry a webhook if our server is down?",
]
UNANSWERABLE = "Is there a native HubSpot integration that syncs deals to invoices?"


def heading(title: str) -> str:
    rule = "─" * min(100, max(40, len(title) + 4))
    return f"\n{rule}\n  {title}\n{rule}"


async def run(data_dir: Path, source: Path) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from bot.engine.pipeline import Pipeline
    from bot.engine.terminal import render_answer
    from bot.engine.types import Question
    from bot.settings import Settings
    from knowledge.index import KnowledgeIndex

    settings = Settings().model_copy(update={"data_dir": data_dir, "sources": [str(source)], "index_uri": ""})
    print(heading(f"1. Indexing {source.relative_to(ROOT) if source.is_relative_to(ROOT) else source}"))
    index = KnowledgeIndex.from_settings(settings)
    from bot.engine.calibration import describe, refresh_calibrated

    report = await refresh_calibrated(index, [str(source)], settings)
    for counts in report.sources:
        print(
            f"  added {counts.added}, updated {counts.updated}, unchanged {counts.unchanged}, "
            f"deleted {counts.deleted}, failed {counts.failed}"
        )
    print(f"  {index.count_rows()} chunks, index version {index.version}, {report.seconds:.1f} s")
    if report.calibration:
        print(f"  {describe(report.calibration)}")

    pipeline = Pipeline.from_settings(settings, index=index)
    mode = f"Claude ({settings.anthropic_model})" if settings.has_anthropic_key else "offline extractive answerer"
    try:
        await pipeline.warm_up()
        for number, text in enumerate(QUESTIONS, start=2):
            print(heading(f"{number}. Q: {text}"))
            print(render_answer(await pipeline.answer(Question(text=text, asker="demo"))))
        print(heading(f"{len(QUESTIONS) + 2}. Q: {UNANSWERABLE}   (not in the knowledge)"))
        answer = await pipeline.answer(Question(text=UNANSWERABLE, asker="demo"))
        if answer.escalated:
            print("→ Escalated to a human. What the support team sees:\n")
        print(render_answer(answer))
    finally:
        await pipeline.aclose()
    print(f'\nAnswers by: {mode}. Try your own: supportbot ask "..." --data-dir {data_dir}, or supportbot chat.')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument(
        "--source", type=Path, default=SAMPLE_KNOWLEDGE, help="knowledge to index (default: the sample)"
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args.data_dir, args.source))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
