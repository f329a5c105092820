"""What Claude costs per answer, today's request layout against the caching layout.

    nice python benchmarks/claude_cost.py [--questions 200] [--json]

The real pipeline (sample knowledge `examples/knowledge`, calibrated index, the real `anthropic`
SDK) answers a workload against the Anthropic emulator, which caches like the API (per-model
minimum, 5-minute TTL refreshed on read, exact prefixes, block lookback) and reports usage the
way the API does. The emulator's clock is simulated, so the workload's pacing is exact:
a follow-up comes 90 s after the answer it follows, threads start 20 s apart.

Workload (200 questions by default): 60% first questions, 40% follow-ups in the same threads.
Follow-up threads come from `evals/datasets/followups-sample.jsonl` (its thread opener, then its
follow-up); a third of them go one turn deeper with another follow-up on the same article (the
cases whose history has two user turns give natural ones). The other threads are single first
questions from `evals/datasets/sample.jsonl`, all shuffled (seed 15). Both models run the same workload: a Haiku-class
model (4,096-token minimum) and a Sonnet-class one (1,024).

Prices come from settings (`SUPPORTBOT_PRICES`, defaults from Anthropic's pricing page).
Correct, plainly: an answerable case whose answer cites at least one of its gold sources (the
emulator cites the two search results anywhere in the request that share most words with the
question, whichever turn of the layout they sit in, so correctness measures whether the layout
still hands Claude the right sources and their citations still map back); an
unanswerable case is correct when the bot does not answer it (escalates or says it cannot).

`--latency` also measures time to first visible text with the emulator's time to first token at
1 s and 80 output tokens/s: when the first text delta reaches the Slack stream, and when Slack
shows it (the Slack SDK's stream buffers 600 characters before its first call, see
`bot/slack/answering.py`), over 40 streamed first questions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine_bench import offline_settings  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bot.engine.claude import ClaudeAnswerer  # noqa: E402
from bot.engine.pipeline import Pipeline  # noqa: E402
from bot.engine.pricing import cost_usd, price_for  # noqa: E402
from bot.engine.types import Answer, Decision, Question, Turn  # noqa: E402
from bot.settings import Settings  # noqa: E402
from evals.cases import EvalCase, load_cases  # noqa: E402
from knowledge.index import KnowledgeIndex  # noqa: E402
from knowledge.search import Searcher  # noqa: E402
from tests.emulators.anthropic_api import AnthropicEmulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = str(ROOT / "examples" / "knowledge")
MODELS = {"haiku-class": "claude-haiku-4-5", "sonnet-class": "claude-sonnet-4-6"}
FOLLOWUP_GAP = 90.0  # simulated seconds between an answer and its follow-up
THREAD_GAP = 20.0
STREAM_BUFFER = 600  # characters the Slack SDK's chat stream buffers before its first call


@dataclass
class Ask:
    text: str
    gold: list[str]
    answerable: bool


@dataclass
class Thread:
    asks: list[Ask] = field(default_factory=list)


def workload(total: int) -> list[Thread]:
    """`total` questions: 60% first questions, 40% follow-ups, as described in the docstring."""
    firsts, followups_total = round(total * 0.6), total - round(total * 0.6)
    singles = load_cases(ROOT / "evals/datasets/sample.jsonl")
    pairs = load_cases(ROOT / "evals/datasets/followups-sample.jsonl")
    deep = followups_total // 4  # threads with two follow-ups: a third of the follow-up threads
    followup_threads = followups_total - deep
    by_gold: dict[str, list[EvalCase]] = defaultdict(list)
    for case in pairs:
        by_gold[case.gold_sources[0] if case.gold_sources else ""].append(case)
    threads: list[Thread] = []
    for i in range(followup_threads):
        case = pairs[i % len(pairs)]
        users = [t.text for t in case.history if t.role == "user"]
        thread = Thread([Ask(users[0], [], True)])
        if len(users) > 1:  # a natural deeper thread: the history's own follow-up first
            thread.asks.append(Ask(users[1], case.gold_sources, case.answerable))
        thread.asks.append(Ask(case.question, case.gold_sources, case.answerable))
        if i < deep and len(thread.asks) < 3:
            same = [c for c in by_gold[case.gold_sources[0] if case.gold_sources else ""] if c.id != case.id]
            other = same[0] if same else pairs[(i + 7) % len(pairs)]
            thread.asks.append(Ask(other.question, other.gold_sources, other.answerable))
        if i >= deep:
            thread.asks = thread.asks[:2]
        threads.append(thread)
    for i in range(firsts - followup_threads):
        case = singles[i % len(singles)]
        threads.append(Thread([Ask(case.question, case.gold_sources, case.answerable)]))
    random.Random(15).shuffle(threads)  # threads of every kind interleave, as in a channel
    return threads


def opener_gold(threads: list[Thread]) -> None:
    """A follow-up thread's opener is scored on its follow-up's gold (same topic), else unscored."""
    for thread in threads:
        if not thread.asks[0].gold and len(thread.asks) > 1:
            thread.asks[0].gold = thread.asks[1].gold


def correct(ask: Ask, answer: Answer) -> bool:
    if not ask.answerable:
        return answer.decision is Decision.ESCALATE or answer.generator == "claude" and "couldn't find" in answer.text
    cited = {c.doc_url or c.url.split("#")[0] for c in answer.citations} | {c.url for c in answer.citations}
    return any(g in cited for g in ask.gold)


class SimClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


LAYOUTS = {"legacy": {}, "cached": {}, "cached+first": {"cache_first_questions": True}}


async def run(
    settings: Settings, searcher: Searcher, model: str, layout: str, threads: list[Thread]
) -> tuple[list[dict], int]:
    clock = SimClock()
    async with AnthropicEmulator(clock=clock) as emu:
        emu.cite_relevant = True  # what it cites must not depend on where a layout put each source
        claude = settings.model_copy(
            update={
                "anthropic_api_key": SecretStr("bench"),
                "anthropic_base_url": emu.base_url,
                "anthropic_model": model,
                **LAYOUTS[layout],
            }
        )
        generator = ClaudeAnswerer(claude, legacy_layout=layout == "legacy", clock=clock)
        pipeline = Pipeline(claude, searcher, generator=generator)
        price = price_for(model, claude.prices)
        rows: list[dict] = []
        for n, thread in enumerate(threads):
            clock.now = 1_000_000.0 + n * THREAD_GAP
            history: list[Turn] = []
            for depth, ask in enumerate(thread.asks):
                question = Question(text=ask.text, history=list(history), channel="C0BENCH", thread_ts=f"{n}.0")
                answer = await pipeline.answer(question)
                usage = answer.usage
                rows.append(
                    {
                        "kind": "first" if depth == 0 else "follow-up",
                        "input": usage.input_tokens,
                        "write": usage.cache_creation_input_tokens,
                        "read": usage.cache_read_input_tokens,
                        "output": usage.output_tokens,
                        "cost": cost_usd(usage, price),
                        "correct": correct(ask, answer),
                    }
                )
                history += [Turn(role="user", text=ask.text), Turn(role="assistant", text=answer.text)]
                clock.now += FOLLOWUP_GAP
        await pipeline.aclose()
        return rows, emu.cache.dead_breakpoints


def summarise(rows: list[dict]) -> dict:
    cost = sum(r["cost"] for r in rows)
    right = sum(r["correct"] for r in rows)
    prompt = sum(r["input"] + r["write"] + r["read"] for r in rows)
    return {
        "n": len(rows),
        "cost_per_answer": cost / len(rows) if rows else 0.0,
        "cost_per_correct": cost / right if right else float("inf"),
        "correct": right,
        "cache_read_share": sum(r["read"] for r in rows) / prompt if prompt else 0.0,
        "prompt_tokens": prompt / len(rows) if rows else 0.0,
    }


async def latency(settings: Settings, searcher: Searcher, threads: list[Thread], count: int = 40) -> dict:
    """Seconds from the question to the first streamed text (engine) and to Slack showing it."""
    async with AnthropicEmulator(ttft=1.0, tokens_per_second=80.0) as emu:
        claude = settings.model_copy(
            update={"anthropic_api_key": SecretStr("bench"), "anthropic_base_url": emu.base_url}
        )
        pipeline = Pipeline(claude, searcher, generator=ClaudeAnswerer(claude))
        first_text, visible = [], []
        for thread in threads[:count]:
            began = time.perf_counter()
            marks: dict[str, float] = {}
            sent = [0]

            async def on_delta(piece: str, marks=marks, sent=sent, began=began) -> None:
                marks.setdefault("first", time.perf_counter() - began)
                sent[0] += len(piece)
                if sent[0] >= STREAM_BUFFER:
                    marks.setdefault("visible", time.perf_counter() - began)

            await pipeline.answer(Question(text=thread.asks[0].text), on_delta=on_delta)
            done = time.perf_counter() - began
            if "first" in marks:
                first_text.append(marks["first"])
                visible.append(marks.get("visible", done))  # a short answer shows when the stream stops
        await pipeline.aclose()
    return {
        "n": len(first_text),
        "first_delta_p50": statistics.median(first_text),
        "first_delta_p90": statistics.quantiles(first_text, n=10)[-1],
        "slack_visible_p50": statistics.median(visible),
        "slack_visible_p90": statistics.quantiles(visible, n=10)[-1],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    threads = workload(args.questions)
    opener_gold(threads)
    with tempfile.TemporaryDirectory() as tmp:
        from bot.engine.calibration import refresh_calibrated

        settings = offline_settings(Path(tmp), SOURCE)
        index = KnowledgeIndex.from_settings(settings)
        await refresh_calibrated(index, [SOURCE], settings)
        searcher = Searcher.from_settings(settings, index)
        report: dict = {"questions": sum(len(t.asks) for t in threads), "threads": len(threads), "models": {}}
        for label, model in MODELS.items():
            for layout in LAYOUTS:
                rows, dead = await run(settings, searcher, model, layout, threads)
                kinds = {kind: summarise([r for r in rows if r["kind"] == kind]) for kind in ("first", "follow-up")}
                report["models"].setdefault(label, {})[layout] = {
                    "all": summarise(rows),
                    **kinds,
                    "dead_breakpoints": dead,
                }
        if args.latency:
            report["latency"] = await latency(settings, searcher, threads)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['questions']} questions in {report['threads']} threads (model, layout, request type)")
    print(
        f"{'model':13} {'layout':12} {'type':9} {'n':>4} {'$/answer':>10} {'$/correct':>10} {'correct':>7} "
        f"{'cache-read':>10} {'tokens':>7} {'vs legacy':>9}"
    )
    for label, layouts in report["models"].items():
        for layout, parts in layouts.items():
            for kind in ("first", "follow-up", "all"):
                s = parts[kind]
                base = layouts["legacy"][kind]
                ratio = s["cost_per_correct"] / base["cost_per_correct"] if base["cost_per_correct"] else 0
                print(
                    f"{label:13} {layout:12} {kind:9} {s['n']:>4} {s['cost_per_answer'] * 1000:>9.4f}m "
                    f"{s['cost_per_correct'] * 1000:>9.4f}m {s['correct']:>7} {s['cache_read_share']:>10.1%} "
                    f"{s['prompt_tokens']:>7.0f} {ratio:>9.3f}"
                )
            print(
                f"{label:13} {layout:12} dead breakpoints (prefix below the model's minimum): {parts['dead_breakpoints']}"
            )
    print("($ in thousandths of a dollar: m = $0.001; 'vs legacy' = cost per correct answer / legacy's)")
    if "latency" in report:
        lat = report["latency"]
        print(
            f"time to first text, TTFT 1 s, 80 tok/s, {lat['n']} streamed answers: first delta p50 "
            f"{lat['first_delta_p50']:.2f} s (p90 {lat['first_delta_p90']:.2f}); visible in Slack p50 "
            f"{lat['slack_visible_p50']:.2f} s (p90 {lat['slack_visible_p90']:.2f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
