"""What the refresh gate adds to a refresh of the sample knowledge (target: under 50%).

    python benchmarks/refresh_gate.py [examples/knowledge] [--dataset evals/datasets/sample.jsonl]

Two data dirs side by side in one run: one refreshed with `refresh_calibrated` (no gate), one with
`evals.gate.refresh_gated` (the same refresh, then the frozen eval set on the new version). Each is
built from scratch (the gated side also evaluates the first version: the next refresh's baseline),
then refreshed again after three documents changed (the gated side compares against the stored
baseline, no second baseline run). The overhead column is (gated - ungated) / ungated.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bot.engine.calibration import refresh_calibrated  # noqa: E402
from bot.settings import Settings  # noqa: E402
from evals.gate import refresh_gated  # noqa: E402
from knowledge.embeddings import Embedder  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402

CHANGED = ("payments/refund-a-payment.md", "invoices/credit-notes.md", "api/webhooks.md")


def change_documents(kb: Path) -> None:
    for name in CHANGED:
        path = kb / name
        path.write_text(path.read_text(encoding="utf-8") + "\n\nUpdated: this page was reviewed.\n", encoding="utf-8")


async def timed(coro) -> tuple[float, object]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


async def run(source: Path, dataset: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="supportbot-gate-"))
    embedder = Embedder()
    embedder.encode(["warm up the model"])
    rows = []
    sides = {}
    for side in ("ungated", "gated"):
        kb = work / side / "kb"
        shutil.copytree(source, kb)
        settings = Settings(data_dir=work / side / "data", sources=[str(kb)], eval_dataset=dataset, _env_file=None)
        sides[side] = (kb, settings, KnowledgeIndex.from_settings(settings, embedder))

    async def refresh(side: str):
        kb, settings, index = sides[side]
        if side == "ungated":
            return await refresh_calibrated(index, [str(kb)], settings)
        return await refresh_gated(index, [str(kb)], settings)

    for label, prepare in (
        ("full refresh (from scratch)", None),
        (f"{len(CHANGED)} documents changed", change_documents),
    ):
        seconds = {}
        for side in ("ungated", "gated"):
            if prepare is not None:
                prepare(sides[side][0])
            seconds[side], result = await timed(refresh(side))
            if side == "gated":
                gate = result.gate
        overhead = (seconds["gated"] - seconds["ungated"]) / seconds["ungated"]
        rows.append((label, seconds["ungated"], seconds["gated"], gate.seconds, overhead, gate.status))
    print(f"sample knowledge: {source}, eval set: {dataset}")
    print("| refresh | ungated s | gated s | gate s | overhead | gate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, ungated, gated, gate_seconds, overhead, status in rows:
        print(f"| {label} | {ungated:.1f} | {gated:.1f} | {gate_seconds:.1f} | {overhead:+.0%} | {status} |")
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?", default=Path("examples/knowledge"))
    parser.add_argument("--dataset", type=Path, default=Path("evals/datasets/sample.jsonl"))
    args = parser.parse_args()
    asyncio.run(run(args.source, args.dataset))


if __name__ == "__main__":
    main()
