"""What the answer engine adds on top of retrieval, measured in one run on the sample knowledge.

    python benchmarks/pipeline_overhead.py [--rounds 5] [--data-dir /tmp/...]

"search" is `Searcher.asearch` exactly as the pipeline calls it (k documents, chunks per document);
"pipeline" is `Pipeline.answer` with the offline answerer: normalise, rewrite, the same search,
extractive answer, confidence judge: everything but an LLM call. Each round asks every question
of evals/datasets/sample.jsonl both ways, alternating which goes first; the target is pipeline
p95 within 1.5x of search p95.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import SAMPLE_CASES, SAMPLE_KNOWLEDGE, indexed_pipeline, load_jsonl  # noqa: E402

from bot.engine.types import Question  # noqa: E402
from evals.metrics import percentile  # noqa: E402

TARGET_RATIO = 1.5


async def measure(data_dir: Path, rounds: int) -> dict[str, list[float]]:
    pipeline = await indexed_pipeline(data_dir, str(SAMPLE_KNOWLEDGE))
    settings, searcher = pipeline.settings, pipeline.searcher
    questions = [case["question"] for case in load_jsonl(SAMPLE_CASES)]
    timings: dict[str, list[float]] = {"search": [], "pipeline": []}

    async def search(text: str) -> None:
        await searcher.asearch(text, settings.answer_k, per_doc=settings.answer_chunks_per_doc)

    async def answer(text: str) -> None:
        await pipeline.answer(Question(text=text))

    for round_number in range(rounds):
        for i, text in enumerate(questions):
            pair = [("search", search), ("pipeline", answer)]
            for name, call in pair if (i + round_number) % 2 == 0 else reversed(pair):
                started = time.perf_counter()
                await call(text)
                timings[name].append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/supportbot-bench-overhead"))
    args = parser.parse_args()

    timings = asyncio.run(measure(args.data_dir, args.rounds))
    search_p95 = percentile(timings["search"], 95)
    print(f"\n{len(timings['search'])} questions per path ({args.rounds} rounds of sample.jsonl), offline answerer\n")
    print("| path | p50 ms | p95 ms | p95 / search p95 |")
    print("| --- | --- | --- | --- |")
    for name, values in timings.items():
        p95 = percentile(values, 95)
        print(f"| {name} | {percentile(values, 50):.1f} | {p95:.1f} | {p95 / search_p95:.2f} |")
    ratio = percentile(timings["pipeline"], 95) / search_p95
    print(
        f"\npipeline p95 is {ratio:.2f}x search p95 (target <= {TARGET_RATIO}x): {'OK' if ratio <= TARGET_RATIO else 'OVER'}"
    )


if __name__ == "__main__":
    main()
