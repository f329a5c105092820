"""Where is "retrieval found essentially nothing"? The floor under Claude's "fully answered" verdict.

    python benchmarks/verdict_floor.py ../shared/datasets/anthropic-docs [--data-dir /tmp/...]

`bot/engine/verdict.py` lets a fully answered, fully cited and verified Claude answer through
whatever the lexical confidence says, unless the best retrieved chunk's vector similarity is below
`RETRIEVAL_FLOOR`. This prints, for candidate floors, the share of questions whose top similarity
falls below it: answerable questions (escalated by the floor although Claude could answer them: the
cost), unanswerable ones (escalated by the floor whatever Claude claims: the protection), and
off-topic questions written for this script (nothing in the knowledge is about them), on the
project's sample set and on the anthropic-docs holdout (26 of 100 questions unanswerable).
The offline pipeline retrieves exactly what the Claude path sends, so no API is needed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_bench import SAMPLE_CASES, SAMPLE_KNOWLEDGE, answer_all, indexed_pipeline, load_jsonl, run  # noqa: E402

from bot.engine.verdict import RETRIEVAL_FLOOR, top_similarity  # noqa: E402

FLOORS = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40)
OFF_TOPIC = [
    "What's a good recipe for banana bread?",
    "Who won the football world cup in 1998?",
    "How do I change the oil in a motorbike?",
    "What is the capital of Mongolia?",
    "Can you recommend a novel for a long flight?",
    "How tall is a giraffe?",
    "Why is the sky blue?",
    "What time does the pharmacy on Main Street close?",
    "How do I repot an orchid?",
    "What's the best way to learn the violin as an adult?",
]


def similarities(pipeline, questions: list[str]) -> list[float]:
    answers = run(answer_all(pipeline, [{"question": q} for q in questions]))
    return [top_similarity(answer.retrieved) for answer in answers]


def below(values: list[float], floor: float) -> str:
    return f"{sum(v < floor for v in values) / len(values):.0%}" if values else "-"


def report(name: str, answerable: list[float], unanswerable: list[float], off_topic: list[float]) -> None:
    print(f"\n### {name}\n")
    print(
        f"answerable n={len(answerable)}, unanswerable n={len(unanswerable)}, off-topic n={len(off_topic)}; "
        f"min top similarity: answerable {min(answerable):.3f}, unanswerable "
        f"{min(unanswerable) if unanswerable else float('nan'):.3f}, off-topic max {max(off_topic):.3f}\n"
    )
    print("| floor | answerable below (cost) | unanswerable below | off-topic below |")
    print("| --- | --- | --- | --- |")
    for floor in sorted({*FLOORS, RETRIEVAL_FLOOR}):
        mark = " (RETRIEVAL_FLOOR)" if floor == RETRIEVAL_FLOOR else ""
        print(
            f"| {floor:.2f}{mark} | {below(answerable, floor)} | {below(unanswerable, floor)} "
            f"| {below(off_topic, floor)} |"
        )


def measure(name: str, data_dir: Path, source: str, cases: list[dict]) -> None:
    pipeline = run(indexed_pipeline(data_dir, source))
    sims = similarities(pipeline, [case["question"] for case in cases])
    answerable = [s for s, case in zip(sims, cases) if case.get("answerable", True)]
    unanswerable = [s for s, case in zip(sims, cases) if not case.get("answerable", True)]
    report(name, answerable, unanswerable, similarities(pipeline, OFF_TOPIC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, nargs="?", help="folder with kb-holdout.jsonl and cases-holdout.jsonl")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="verdict-floor-"))
    measure(
        "sample.jsonl against examples/knowledge", data_dir / "sample", str(SAMPLE_KNOWLEDGE), load_jsonl(SAMPLE_CASES)
    )
    if args.dataset:
        measure(
            "anthropic-docs holdout",
            data_dir / "holdout",
            str(args.dataset / "kb-holdout.jsonl"),
            load_jsonl(args.dataset / "cases-holdout.jsonl"),
        )


if __name__ == "__main__":
    main()
